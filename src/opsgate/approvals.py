"""Who may decide an approval, and when a gate is settled. Pure.

Separation of duties is enforced here: the requester of an execution never decides its gates
unless the gate (or the policy rule that added it) says ``allow_self_approval``; an approver
must be listed by name or hold one of the listed roles; a quorum counts distinct principals;
one rejection rejects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opsgate.engine.statuses import ApprovalStatus, Trigger
from opsgate.errors import ApprovalRefusedError
from opsgate.models import Approval, ApprovalDecisionKind
from opsgate.policy import BLUEPRINT_GATE
from opsgate.spec.model import FieldSpec, WorkflowSpec
from opsgate.spec.parameters import validate_parameters


def gate_source(approval: Approval) -> str:
    """The gate in words, naming the policy rule that added it."""
    if approval.gate.startswith("policy:"):
        return f"policy rule {approval.gate.removeprefix('policy:')!r}"
    return f"the blueprint's approval gate on step {approval.step_id!r}"


def decision_refusal(approval: Approval, principal: str, roles: frozenset[str]) -> str | None:
    """Why ``principal`` may not decide ``approval`` now; ``None`` when they may."""
    if approval.status is not ApprovalStatus.PENDING:
        return (
            f"approval {approval.id} is {approval.status} and takes no more decisions; call "
            "list_pending_approvals for the current requests"
        )
    approvers = approval.approvers
    if principal not in approvers.principals and not roles & set(approvers.roles):
        who = []
        if approvers.roles:
            who.append(f"holders of the role(s) {', '.join(approvers.roles)}")
        if approvers.principals:
            who.append(f"the principal(s) {', '.join(approvers.principals)}")
        held = ", ".join(sorted(roles)) or "none"
        return (
            f"{principal} may not decide approval {approval.id}: only {' or '.join(who)} may "
            f"({gate_source(approval)}); {principal} holds the roles: {held}"
        )
    if principal == approval.requested_by and not approval.allow_self_approval:
        return (
            f"{principal} requested execution {approval.execution_id} and may not approve its "
            f"own gate (separation of duties, {gate_source(approval)}); ask another approver"
        )
    return None


def already_decided_alike(approval: Approval, principal: str, kind: ApprovalDecisionKind) -> bool:
    """Whether ``principal`` already made this very decision (a retried call)."""
    return any(d.principal == principal and d.decision == kind for d in approval.decisions)


def checked_response(
    approval: Approval, response: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The approver's answer validated against the gate's response fields."""
    if not approval.response_schema:
        if response:
            raise ApprovalRefusedError(
                f"approval {approval.id} asks for no response; approve without one"
            )
        return None
    declared = {
        name: FieldSpec.model_validate(schema) for name, schema in approval.response_schema.items()
    }
    values, problems = validate_parameters(declared, dict(response or {}))
    if problems:
        listed = "; ".join(str(problem) for problem in problems)
        raise ApprovalRefusedError(f"the response to approval {approval.id} is invalid: {listed}")
    return values


def settled(approval: Approval) -> Trigger | None:
    """The transition that settles a pending approval after its latest decision, if any."""
    if any(d.decision == ApprovalDecisionKind.REJECTED for d in approval.decisions):
        return Trigger.REJECT
    approvers = {
        d.principal for d in approval.decisions if d.decision is ApprovalDecisionKind.GRANTED
    }
    return Trigger.APPROVE if len(approvers) >= approval.quorum else None


def is_confirmation(approval: Approval, spec: WorkflowSpec) -> bool:
    """Whether ``approval`` is a ``confirm: true`` gate: the requester may confirm it in their
    client (by elicitation) instead of an approver approving it."""
    if approval.gate != BLUEPRINT_GATE:
        return False
    step = next((s for s in spec.steps if s.id == approval.step_id), None)
    return step is not None and step.approval is not None and step.approval.confirm


def confirmation_text(approval: Approval, spec: WorkflowSpec, execution_id: str) -> str:
    """The question the requester's client shows; deterministic (no times), as elicitation
    answers are bound to the question's text."""
    step = next(s for s in spec.steps if s.id == approval.step_id)
    return (
        f"Run step '{step.name or step.id}' ({step.action}) of {spec.name} "
        f"(execution {execution_id}) now?"
    )
