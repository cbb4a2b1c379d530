"""What the tool modules share: registration, annotations, argument types, output fencing."""

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from opsgate.server.errors import translated

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
#: Acts on real systems through the blueprint's steps.
DESTRUCTIVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)

ExecutionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="the execution id (exe_...), from execute_workflow or list_executions",
    ),
]
WorkflowName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="the blueprint name, from list_workflows (e.g. 'restart_service')",
    ),
]
Parameters = Annotated[
    dict[str, Any],
    Field(description="parameter values by name, as get_workflow_details lists them"),
]
Cursor = Annotated[
    str | None,
    Field(
        default=None,
        max_length=512,
        description="next_cursor of the previous page; omit for the first page",
    ),
]


def add_tool(
    server: MCPServer[Any],
    tool: Callable[..., Awaitable[Any]],
    *,
    title: str,
    annotations: ToolAnnotations,
) -> None:
    """Register ``tool`` with its docstring as the description and translated errors."""
    server.add_tool(
        translated(tool),
        title=title,
        description=inspect.cleandoc(tool.__doc__ or "").replace("\n", " "),
        annotations=annotations,
    )
