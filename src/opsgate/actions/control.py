"""Control actions that touch no host: ``wait``, ``assert`` and ``log``.

Conditions (``wait.until``, ``assert.condition``) are bare expressions evaluated through
:meth:`StepContext.evaluate <opsgate.actions.base.StepContext.evaluate>`, in the sandboxed
expression language, against the step's variables and the current ``now``. A literal ``true``
or ``false`` is taken as it is. A result that is not a boolean is judged by Python truthiness:
``0``, ``""``, an empty list or mapping and ``null`` are false, everything else is true.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.errors import StepError
from opsgate.spec.durations import format_duration
from opsgate.spec.model import Condition, Duration, Label
from opsgate.spec.structure import invalid

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def holds(condition: str | bool, ctx: StepContext) -> bool:
    """Whether ``condition`` is true now: a literal boolean as it is, an expression evaluated
    with ``ctx`` and judged by truthiness."""
    if isinstance(condition, bool):
        return condition
    return bool(ctx.evaluate(condition))


class WaitArguments(ActionArguments):
    """Pause for a fixed time, or until a condition holds (polled every ``interval``)."""

    duration: Duration | None = Field(default=None, description="how long to wait, e.g. 30s")
    until: Condition | None = Field(
        default=None,
        description="a condition polled until it is true, e.g. "
        "\"steps.probe.outputs.status == 'ok'\"; the step's timeout bounds the wait",
    )
    interval: Duration = Field(
        default=timedelta(seconds=10), description="time between two checks of until"
    )

    @model_validator(mode="after")
    def _one_way_to_wait(self) -> WaitArguments:
        if (self.duration is None) == (self.until is None):
            raise invalid(
                "needs exactly one of 'duration' and 'until'",
                "wait a fixed time with duration: 30s, or for a condition with until: <expression>",
            )
        if self.duration is not None and "interval" in self.model_fields_set:
            raise invalid(
                "takes 'interval' only with 'until'",
                "remove interval: a fixed duration is not polled",
            )
        return self


class AssertArguments(ActionArguments):
    """Fail the step unless a condition holds."""

    condition: Condition = Field(
        description='the expression that must be true, e.g. "steps.check.outputs.free_gb > 5"; '
        "a result that is not a boolean counts by truthiness (0, empty text or list, null "
        "are false)"
    )
    message: Label | None = Field(
        default=None, description="why the step failed, shown when the condition is false"
    )


class LogArguments(ActionArguments):
    """Write a message to the execution's event log."""

    message: Label = Field(description="the text to record (a template)")
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error"
    )


class WaitAction(Action[WaitArguments]):
    """``wait``: sleep for ``duration``, or poll ``until`` every ``interval`` until it holds.

    The condition is checked first, so a condition that already holds waits for nothing. There
    is no limit of its own: the step's ``timeout`` (or the execution's) ends a wait for a
    condition that never comes true. Outputs ``waited_seconds``, measured with the context's
    clock.
    """

    name = "wait"
    arguments = WaitArguments
    changes_things = False
    description = "wait a fixed time or until a condition holds"

    async def run(self, args: WaitArguments, ctx: StepContext) -> dict[str, Any]:
        started = ctx.clock()
        if args.duration is not None:
            await ctx.report(f"waiting {format_duration(args.duration)}")
            await ctx.sleep(args.duration.total_seconds())
        elif args.until is not None:
            await ctx.report(f"waiting until {args.until}")
            while not holds(args.until, ctx):
                await ctx.sleep(args.interval.total_seconds())
        return {"waited_seconds": (ctx.clock() - started).total_seconds()}


class AssertAction(Action[AssertArguments]):
    """``assert``: fail the step, without retry, unless ``condition`` holds.

    The failure is a non-retryable ``AssertionFailed`` step error whose message is ``message``
    or ``assertion failed: <condition>``. Outputs the condition and ``result: true``.
    """

    name = "assert"
    arguments = AssertArguments
    changes_things = False
    description = "fail unless a condition holds"

    async def run(self, args: AssertArguments, ctx: StepContext) -> dict[str, Any]:
        if not holds(args.condition, ctx):
            raise StepError(
                args.message or f"assertion failed: {args.condition}",
                retryable=False,
                error_type="AssertionFailed",
            )
        return {"condition": args.condition, "result": True}


class LogAction(Action[LogArguments]):
    """``log``: write the rendered message to the log at ``level``.

    Its outputs, ``message`` and ``level``, are what the worker records in the step's event, so
    the message reaches the execution's event log.
    """

    name = "log"
    arguments = LogArguments
    changes_things = False
    description = "write a message to the execution's event log"

    async def run(self, args: LogArguments, ctx: StepContext) -> dict[str, Any]:
        ids = {"execution_id": ctx.execution_id, "step_id": ctx.step_id, "item_key": ctx.item_key}
        ctx.logger.log(_LEVELS[args.level], "%s", args.message, extra=ids)
        return {"message": args.message, "level": args.level}
