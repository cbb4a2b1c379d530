"""Tools that read the catalog of blueprints: list_workflows, get_workflow_details."""

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from opsgate.server.state import AppState, state_of
from opsgate.server.tools.common import READ_ONLY, Cursor, WorkflowName, add_tool
from opsgate.views import WorkflowDetails, WorkflowList


async def list_workflows(
    ctx: Context[AppState],
    category: Annotated[
        str | None, Field(max_length=128, description="only blueprints of this category")
    ] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Field(ge=1, le=100, description="at most this many blueprints")] = 50,
) -> WorkflowList:
    """List the workflows (blueprints) this server can run, by name: version, description, category, risk (low to critical), parameter names (required ones end with '*'), number of steps and which steps wait for an approval. Start here; then call get_workflow_details for the parameters of the one you need. When next_cursor is not null, call again with cursor=next_cursor for the next page."""  # noqa: E501
    try:
        return await state_of(ctx).service.list_workflows(
            category=category, cursor=cursor, limit=limit
        )
    except ValueError as exc:  # a malformed cursor
        raise ToolError(str(exc)) from exc


async def get_workflow_details(
    ctx: Context[AppState], workflow_name: WorkflowName
) -> WorkflowDetails:
    """Everything needed to run one workflow: each parameter (type, required, default, allowed values, pattern; secret ones take a reference such as env:NAME, never the secret itself), the targets it acts on, its steps in order with their dependencies, approval gates (who may approve, quorum, deadline) and rollbacks, and the locks it takes. Call it before plan_workflow or execute_workflow."""  # noqa: E501
    return await state_of(ctx).service.get_workflow_details(workflow_name)


def register(server: MCPServer[Any]) -> None:
    add_tool(server, list_workflows, title="List workflows", annotations=READ_ONLY)
    add_tool(server, get_workflow_details, title="Workflow details", annotations=READ_ONLY)
