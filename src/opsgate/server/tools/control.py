"""Tools that steer a running execution: cancel_execution, pause_execution,
resume_execution, retry_step. Each acts as the authenticated caller, named in the events."""

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from opsgate.server.fence import capped
from opsgate.server.state import AppState, principal_of, state_of
from opsgate.server.tools.common import DESTRUCTIVE, ExecutionId, add_tool
from opsgate.views import ExecutionStatusView

#: Pausing and resuming change no system outside opsgate.
_STEERING = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)


def _fenced(view: ExecutionStatusView) -> ExecutionStatusView:
    return capped(view, f"get_execution_events(execution_id={view.execution_id!r})")


async def cancel_execution(
    ctx: Context[AppState],
    execution_id: ExecutionId,
    cleanup: Annotated[
        bool,
        Field(description="roll back the steps that completed (true), or just stop (false)"),
    ] = True,
    reason: Annotated[
        str | None, Field(max_length=500, description="why, recorded in the event log")
    ] = None,
) -> ExecutionStatusView:
    """Cancel an execution that has not ended: no new step starts, running steps are stopped, and with cleanup=true (the default) the completed steps are rolled back in reverse order. Returns the status afterwards; follow the rollback with get_workflow_status. Refused for an execution that already ended."""  # noqa: E501
    service = state_of(ctx).service
    view = await service.cancel_execution(
        principal_of(ctx), execution_id, cleanup=cleanup, reason=reason
    )
    return _fenced(view)


async def pause_execution(ctx: Context[AppState], execution_id: ExecutionId) -> ExecutionStatusView:
    """Pause a running execution: steps already running finish, no new step starts until resume_execution. Use it to hold a run while someone looks at it; cancel_execution stops it for good."""  # noqa: E501
    view = await state_of(ctx).service.pause_execution(principal_of(ctx), execution_id)
    return _fenced(view)


async def resume_execution(
    ctx: Context[AppState], execution_id: ExecutionId
) -> ExecutionStatusView:
    """Resume a paused execution: its next steps start again. Refused unless it is paused."""
    view = await state_of(ctx).service.resume_execution(principal_of(ctx), execution_id)
    return _fenced(view)


async def retry_step(
    ctx: Context[AppState],
    execution_id: ExecutionId,
    step_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            description="the failed step, as get_workflow_status lists it",
        ),
    ],
) -> ExecutionStatusView:
    """Run a failed (or timed out, interrupted, cancelled) step of an execution again, from attempt 1, and continue the execution from there. Look at the step's error with get_workflow_status first, and fix its cause; the step acts on real systems again. A failed execution must take its locks back to run again: while another execution holds one, this is refused and nothing changes."""  # noqa: E501
    view = await state_of(ctx).service.retry_step(principal_of(ctx), execution_id, step_id)
    return _fenced(view)


def register(server: MCPServer[Any]) -> None:
    add_tool(server, cancel_execution, title="Cancel an execution", annotations=DESTRUCTIVE)
    add_tool(server, pause_execution, title="Pause an execution", annotations=_STEERING)
    add_tool(server, resume_execution, title="Resume an execution", annotations=_STEERING)
    add_tool(server, retry_step, title="Retry a failed step", annotations=DESTRUCTIVE)
