"""Completions: workflow names and execution ids as the user types a prompt or template argument."""

from __future__ import annotations

from typing import Any

from mcp.server.context import ServerRequestContext
from mcp_types import CompleteRequestParams, CompleteResult, Completion

from opsgate.server.state import AppState

#: The most values one completion returns (the protocol's limit).
MAX_VALUES = 100
#: How many recent executions are offered for an execution id.
RECENT_EXECUTIONS = 100


async def complete(ctx: ServerRequestContext[Any], params: CompleteRequestParams) -> CompleteResult:
    """The values of the argument being completed that start with what was typed."""
    state = ctx.lifespan_context
    assert isinstance(state, AppState)
    typed = params.argument.value
    match params.argument.name:
        case "workflow_name" | "name":
            candidates = sorted(state.service.catalog.blueprints)
        case "execution_id":
            page = await state.service.list_executions(limit=RECENT_EXECUTIONS)
            candidates = [e.execution_id for e in page.executions]
        case _:
            candidates = []
    found = [value for value in candidates if value.startswith(typed)]
    return CompleteResult(
        completion=Completion(
            values=found[:MAX_VALUES], total=len(found), has_more=len(found) > MAX_VALUES
        )
    )
