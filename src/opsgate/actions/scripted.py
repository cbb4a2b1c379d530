"""A test action whose every attempt does what its arguments script: for engine and crash tests.

It lives in the package, not under ``tests/``, so that worker processes started by crash
tests can load it; it is not a built-in (blueprints in production cannot use it), a test adds
it to a registry::

    registry = ActionRegistry.builtin().with_actions(ScriptedAction())

and a blueprint under test scripts each attempt (attempts count from 1)::

    - id: flaky
      action: scripted
      with:
        outcomes:
          - {fail: "connection refused", retryable: true, error_type: ConnectionError}
          - {sleep: 2, succeed: {version: "1.2"}}
        default: {fail: "ran too often"}            # attempts past the list (default: succeed)
        marker_file: /tmp/t/markers                 # one line per attempt start
        block_file: /tmp/t/release                  # finish only once this file exists

An outcome is ``{succeed: {outputs...}}``, ``{fail: message, retryable: bool, error_type:
name}`` or either of them after ``sleep: seconds`` (``{sleep: seconds}`` alone succeeds with no
outputs after the sleep). Each attempt:

1. appends ``"<execution_id> <step_id> <item_key> <attempt>"`` to ``marker_file`` (one
   ``O_APPEND`` write, so several worker processes may share the file; a killed process leaves
   its line behind), which lets a test count the attempts of a step from outside
   (:func:`read_markers`);
2. sleeps the outcome's ``sleep`` through ``ctx.sleep`` (a step timeout shorter than it times
   the attempt out);
3. waits, polling every 20 ms through ``ctx.sleep``, until ``block_file`` exists, reporting the
   sub-task ``waiting for <block_file>``: a test can kill the process mid-step
   deterministically, or let the step finish by creating the file;
4. returns the outputs, or raises the scripted :class:`~opsgate.errors.StepError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import anyio
from pydantic import Field, StrictBool, model_validator

from opsgate.actions.base import Action, ActionArguments, StepContext
from opsgate.errors import StepError
from opsgate.spec.model import Label, Number
from opsgate.spec.structure import invalid

#: How often an attempt checks for its ``block_file``.
BLOCK_POLL_SECONDS = 0.02


class ScriptedOutcome(ActionArguments):
    """What one attempt does: succeed with outputs or fail, optionally after a sleep."""

    succeed: dict[str, Any] | None = Field(default=None, description="succeed with these outputs")
    fail: Label | None = Field(default=None, description="fail with this message")
    retryable: StrictBool = Field(default=False, description="fail: whether to retry")
    error_type: Label | None = Field(default=None, description="fail: the error's type")
    sleep: Number | None = Field(default=None, ge=0, description="seconds to sleep first")

    @model_validator(mode="after")
    def _one_result(self) -> ScriptedOutcome:
        if self.succeed is not None and self.fail is not None:
            raise invalid("takes one of 'succeed' and 'fail', not both")
        if self.succeed is None and self.fail is None and self.sleep is None:
            raise invalid("needs 'succeed', 'fail' or 'sleep'")
        fail_only = sorted({"retryable", "error_type"} & self.model_fields_set)
        if self.fail is None and fail_only:
            raise invalid(f"takes {', '.join(fail_only)} only with 'fail'")
        return self


class ScriptedArguments(ActionArguments):
    """Arguments of ``scripted``: one outcome per attempt, and files a test watches."""

    outcomes: tuple[ScriptedOutcome, ...] = Field(
        default=(), description="the outcome of attempt 1, 2, ..."
    )
    default: ScriptedOutcome = Field(
        default=ScriptedOutcome(succeed={}),
        description="the outcome of attempts past the list (default: succeed, no outputs)",
    )
    marker_file: Label | None = Field(
        default=None, description="append '<execution_id> <step_id> <item_key> <attempt>'"
    )
    block_file: Label | None = Field(default=None, description="finish only once this file exists")


class Marker(NamedTuple):
    """One attempt start recorded in a marker file."""

    execution_id: str
    step_id: str
    item_key: str
    attempt: int


def read_markers(path: str | os.PathLike[str]) -> list[Marker]:
    """The attempt starts recorded in ``path``, in order; none if it does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    markers = []
    for line in text.splitlines():
        execution_id, step_id, item_key, attempt = line.split(" ")
        markers.append(Marker(execution_id, step_id, item_key, int(attempt)))
    return markers


class ScriptedAction(Action[ScriptedArguments]):
    """A step type whose attempts follow their ``with:`` script (see the module docstring)."""

    arguments = ScriptedArguments
    description = "follow a script of outcomes, one per attempt (tests only)"

    def __init__(
        self, name: str = "scripted", *, changes_things: bool = True, needs_target: bool = False
    ) -> None:
        self.name = name
        self.changes_things = changes_things
        self.needs_target = needs_target

    async def run(self, args: ScriptedArguments, ctx: StepContext) -> dict[str, Any]:
        if args.marker_file is not None:
            line = f"{ctx.execution_id} {ctx.step_id} {ctx.item_key} {ctx.attempt}\n"
            await anyio.to_thread.run_sync(_append, args.marker_file, line)
        index = ctx.attempt - 1
        outcome = args.outcomes[index] if 0 <= index < len(args.outcomes) else args.default
        if outcome.sleep:
            await ctx.sleep(float(outcome.sleep))
        if args.block_file is not None:
            await ctx.report(f"waiting for {args.block_file}")
            while not await anyio.Path(args.block_file).exists():
                await ctx.sleep(BLOCK_POLL_SECONDS)
        if outcome.fail is not None:
            raise StepError(
                outcome.fail, retryable=outcome.retryable, error_type=outcome.error_type
            )
        return dict(outcome.succeed or {})


def _append(path: str, line: str) -> None:
    """Append ``line`` with one ``O_APPEND`` write: whole lines even with several writers."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode("utf-8"))
    finally:
        os.close(descriptor)
