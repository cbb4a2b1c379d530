"""Resources: a blueprint, an execution, its events, the pending approvals; updated on every
event (see :mod:`opsgate.server.subscriptions`). JSON documents of the shapes the tools return."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from opsgate.errors import NotFoundError, OpsgateError
from opsgate.server.fence import capped
from opsgate.server.state import principal_of, state_of
from opsgate.server.subscriptions import APPROVALS_URI
from opsgate.views import ApprovalList

_JSON = "application/json"


def register_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "opsgate://blueprints/{name}",
        name="blueprint",
        title="Blueprint",
        description="A workflow's parameters, steps, gates, locks and rollback (JSON).",
        mime_type=_JSON,
    )
    async def blueprint(name: str, ctx: Context) -> str:
        with _reading(f"opsgate://blueprints/{name}"):
            details = await state_of(ctx).service.get_workflow_details(name)
        return details.model_dump_json(indent=2)

    @server.resource(
        "opsgate://executions/{execution_id}",
        name="execution",
        title="Execution status",
        description="Where an execution stands, step by step; updated on every event (JSON).",
        mime_type=_JSON,
    )
    async def execution(execution_id: str, ctx: Context) -> str:
        with _reading(f"opsgate://executions/{execution_id}"):
            view = await state_of(ctx).service.get_workflow_status(execution_id)
        return capped(view, f"opsgate events {execution_id}").model_dump_json(indent=2)

    @server.resource(
        "opsgate://executions/{execution_id}/events",
        name="execution-events",
        title="Execution events",
        description="The first 200 events of an execution's log (get_execution_events pages "
        "through all); updated on every event (JSON).",
        mime_type=_JSON,
    )
    async def execution_events(execution_id: str, ctx: Context) -> str:
        with _reading(f"opsgate://executions/{execution_id}/events"):
            found = await state_of(ctx).service.get_execution_events(execution_id, limit=200)
        return capped(found, f"opsgate events {execution_id}").model_dump_json(indent=2)

    # A template (its optional filter) rather than a static resource: only handlers of
    # templates receive the Context, and the list depends on who reads it.
    @server.resource(
        APPROVALS_URI + "{?workflow_name}",
        name="pending-approvals",
        title="Pending approvals",
        description=f"The approvals the reader may decide, oldest first; read {APPROVALS_URI} "
        "(optionally ?workflow_name=NAME); updated on every approval event (JSON).",
        mime_type=_JSON,
    )
    async def pending_approvals(ctx: Context, workflow_name: str | None = None) -> str:
        with _reading(APPROVALS_URI):
            found = await state_of(ctx).service.list_pending_approvals(principal_of(ctx))
        if workflow_name is not None:
            kept = [a for a in found.approvals if a.workflow_name == workflow_name]
            found = ApprovalList(approvals=kept)
        return found.model_dump_json(indent=2)


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """Translate the opsgate errors of one resource read into the SDK's resource errors."""
    try:
        yield
    except NotFoundError as exc:
        raise ResourceNotFoundError(f"{uri}: {exc}") from exc
    except OpsgateError as exc:
        raise ResourceError(f"{uri}: {exc}") from exc
