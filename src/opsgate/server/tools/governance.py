"""Tools of governance: validate_workflow_policies, plan_workflow (read-only reviews) and the
approval decisions list_pending_approvals, approve_step, reject_step. The decider is always the
authenticated caller; separation of duties is enforced by the service."""

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from opsgate.server.state import AppState, principal_of, state_of
from opsgate.server.tools.common import READ_ONLY, Parameters, WorkflowName, add_tool
from opsgate.views import ApprovalList, ApprovalView, PlanView, VerdictView

ApprovalId = Annotated[
    str,
    Field(min_length=1, max_length=64, description="the approval id, from list_pending_approvals"),
]
#: A decision changes opsgate's state only; deciding twice is refused, not repeated.
_DECISION = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)


async def validate_workflow_policies(
    ctx: Context[AppState],
    workflow_name: WorkflowName,
    parameters: Parameters = {},  # noqa: B006 (never mutated)
) -> VerdictView:
    """Check, without running anything, whether the policies allow you to run a workflow with these parameters: allowed or not, each rule that matched with its reason and remedy (a missing role, a maintenance window, what would be allowed instead), and the approvals the run will need. Use plan_workflow for the full plan."""  # noqa: E501
    service = state_of(ctx).service
    return await service.validate_workflow_policies(principal_of(ctx), workflow_name, parameters)


async def plan_workflow(
    ctx: Context[AppState],
    workflow_name: WorkflowName,
    parameters: Parameters = {},  # noqa: B006 (never mutated)
) -> PlanView:
    """Resolve what a run would do, without running it: parameters (secrets masked), targets, steps by DAG level, the policy verdict, the approval gates and who may approve them, locks and the rollback plan, and a plan_digest. Show the plan to the user, then pass plan_digest to execute_workflow so the run is refused if anything changed in between."""  # noqa: E501
    service = state_of(ctx).service
    return await service.plan_workflow(principal_of(ctx), workflow_name, parameters)


async def list_pending_approvals(ctx: Context[AppState]) -> ApprovalList:
    """The approvals waiting for a decision that you may take (your role or name is among the approvers, and you did not request the run), oldest first: the execution, the step and what it will do, who requested it, the quorum and the deadline. Decide with approve_step or reject_step."""  # noqa: E501
    return await state_of(ctx).service.list_pending_approvals(principal_of(ctx))


class Confirmation(BaseModel):
    """What the requester answers in their client for a ``confirm: true`` gate."""

    confirm: bool = Field(description="Run this step now?")
    comment: str = Field(default="", max_length=2000, description="A note for the audit log")


def _can_elicit(ctx: Context[AppState]) -> bool:
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


async def confirmation_for(
    approval_id: str, ctx: Context[AppState]
) -> Confirmation | Elicit[Confirmation]:
    """Resolver: ask the requester of a ``confirm: true`` gate in their client; nothing to
    ask otherwise (then approve_step decides as an approval, without a round trip)."""
    if not _can_elicit(ctx):
        return Confirmation(confirm=False)
    service = state_of(ctx).service
    question = await service.confirmation_question(principal_of(ctx), approval_id)
    if question is None:
        return Confirmation(confirm=False)
    return Elicit(question, Confirmation)


async def approve_step(
    ctx: Context[AppState],
    approval_id: ApprovalId,
    confirmation: Annotated[ElicitationResult[Confirmation], Resolve(confirmation_for)],
    comment: Annotated[
        str | None, Field(max_length=2000, description="why, for the audit log")
    ] = None,
    response: Annotated[
        dict[str, Any] | None,
        Field(description="the fields the gate asks for (its response_schema), if any"),
    ] = None,
) -> ApprovalView:
    """Approve a pending approval as yourself; the gated step runs once its quorum of distinct approvers approved. Only ask this on a human's explicit decision: never approve a run on your own initiative. Refused (with the reason) for the requester of the run, a principal without an approver role, or an approval already decided. A gate marked confirm (a confirmation) asks its requester in the client instead: the human's answer there decides it; clients that cannot ask leave it to an approver."""  # noqa: E501
    service = state_of(ctx).service
    principal = principal_of(ctx)
    if _can_elicit(ctx) and await service.confirmation_question(principal, approval_id):
        if not isinstance(confirmation, AcceptedElicitation):
            raise ToolError(
                f"the confirmation of approval {approval_id} was dismissed in the client; the "
                "step still waits: call approve_step again to be asked, or reject_step"
            )
        answer = confirmation.data
        return await service.confirm_step(
            principal, approval_id, confirmed=answer.confirm, comment=answer.comment or comment
        )
    return await service.approve_step(principal, approval_id, comment=comment, response=response)


async def reject_step(
    ctx: Context[AppState],
    approval_id: ApprovalId,
    comment: Annotated[
        str,
        Field(min_length=1, max_length=2000, description="why it is rejected (required)"),
    ],
) -> ApprovalView:
    """Reject a pending approval as yourself, saying why: the gated step fails and the execution rolls back its completed steps. Only on a human's explicit decision."""  # noqa: E501
    service = state_of(ctx).service
    return await service.reject_step(principal_of(ctx), approval_id, comment=comment)


def register_reviews(server: MCPServer[Any]) -> None:
    add_tool(server, validate_workflow_policies, title="Check policies", annotations=READ_ONLY)
    add_tool(server, plan_workflow, title="Plan a workflow run", annotations=READ_ONLY)


def register_approvals(server: MCPServer[Any]) -> None:
    add_tool(server, list_pending_approvals, title="Pending approvals", annotations=READ_ONLY)
    add_tool(server, approve_step, title="Approve a step", annotations=_DECISION)
    add_tool(server, reject_step, title="Reject a step", annotations=_DECISION)
