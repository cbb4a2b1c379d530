"""The inventory tool: get_workflow_targets, which hosts a run would act on and why."""

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from opsgate.server.state import AppState, state_of
from opsgate.server.tools.common import READ_ONLY, Parameters, WorkflowName, add_tool
from opsgate.views import WorkflowTargetsView


async def get_workflow_targets(
    ctx: Context[AppState],
    workflow_name: WorkflowName,
    parameters: Parameters = {},  # noqa: B006 (never mutated)
) -> WorkflowTargetsView:
    """Which inventory targets (hosts) a run of a workflow with these parameters would act on, in run order, and for every target in the inventory whether it is selected and which selector terms (names, group:..., label:...) took it in or left it out. Use it before plan_workflow or execute_workflow to check the blast radius; an unknown target, group or label is an error naming close matches."""  # noqa: E501
    return await state_of(ctx).service.get_workflow_targets(workflow_name, parameters)


def register(server: MCPServer[Any]) -> None:
    add_tool(server, get_workflow_targets, title="Workflow targets", annotations=READ_ONLY)
