"""Every failure of a tool becomes a ToolError whose text the model can act on.

The OpsgateError tree is mapped here, once: each kind keeps its message (they are written
for an LLM reader) and gains what to do next. Anything else is a bug or an outage: it is
logged with a reference id, and the model gets the id, never the internals.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from opsgate.errors import (
    ConfigurationError,
    ConflictError,
    InvalidParametersError,
    InvalidTransitionError,
    NotFoundError,
    OpsgateError,
    StalePlanError,
    StoreError,
)

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: What the model can do next, by kind of error (the first matching class wins).
_NEXT_STEPS: tuple[tuple[type[OpsgateError], str], ...] = (
    (NotFoundError, "List what exists with list_workflows or list_executions."),
    (InvalidParametersError, ""),  # its message already says what to call
    (InvalidTransitionError, "Call get_workflow_status to see what it can do now."),
    (ConflictError, "Read the current state with get_workflow_status and decide again."),
    (StalePlanError, "Call plan_workflow again, review it, and pass its new plan_digest."),
)


#: Where to list what exists, by the kind of a NotFoundError (others: _NEXT_STEPS).
_LISTED_BY = {
    "approval": "List the approvals you may decide with list_pending_approvals.",
    "schedule": "List the schedules with list_scheduled_workflows.",
    "target": "See the inventory's targets with get_workflow_targets.",
    "group": "See the inventory's targets and groups with get_workflow_targets.",
    "label": "See the inventory's targets and labels with get_workflow_targets.",
}


def explain(exc: OpsgateError) -> str:
    """The message of an opsgate error, followed by what to do next."""
    for kind, next_step in _NEXT_STEPS:
        if isinstance(exc, kind) and next_step:
            if isinstance(exc, NotFoundError):
                next_step = _LISTED_BY.get(exc.kind, next_step)
            message = str(exc)
            return f"{message}{'' if message.endswith(('.', '?', '!')) else '.'} {next_step}"
    return str(exc)


def unexpected(exc: BaseException, where: str) -> ToolError:
    """Log ``exc`` with a new reference id and return the error the model sees."""
    reference = uuid.uuid4().hex[:12]
    logger.error("unexpected error in %s (reference %s)", where, reference, exc_info=exc)
    return ToolError(
        f"opsgate failed unexpectedly (reference {reference}); this is not caused by your "
        "arguments. Try again later, or give the reference to an operator, who finds the "
        "details in the server log."
    )


def translated(tool: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap a tool so that every exception reaches the model as an actionable ToolError."""

    @functools.wraps(tool)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await tool(*args, **kwargs)
        except ToolError:
            raise
        except (StoreError, ConfigurationError) as exc:
            raise unexpected(exc, tool.__name__) from exc  # the operator's to fix, not the model's
        except OpsgateError as exc:
            raise ToolError(explain(exc)) from exc
        except Exception as exc:
            raise unexpected(exc, tool.__name__) from exc

    return run
