"""The action boundary: argument validation, output checks, one error translation, cancellation."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from pydantic import Field

from opsgate.actions import (
    Action,
    ActionArguments,
    StepContext,
    classify_error,
    run_action,
)
from opsgate.errors import StepError
from opsgate.expressions import ExpressionError
from opsgate.spec.model import Duration
from tests.actions.contexts import START, Recorder

pytestmark = pytest.mark.anyio


class NoArguments(ActionArguments):
    pass


class EchoArguments(ActionArguments):
    text: str = Field(description="what to echo")
    pause: Duration | None = Field(default=None, description="how long to pause first")


class EchoAction(Action[EchoArguments]):
    name = "echo"
    arguments = EchoArguments
    changes_things = False
    description = "echo a text"

    def __init__(self) -> None:
        self.received: list[EchoArguments] = []

    async def run(self, args: EchoArguments, ctx: StepContext) -> dict[str, Any]:
        self.received.append(args)
        if args.pause is not None:
            await ctx.sleep(args.pause.total_seconds())
        return {"text": args.text, "tuple": (1, 2)}


class RaisingAction(Action[NoArguments]):
    name = "raising"
    arguments = NoArguments
    changes_things = False
    description = "raise what it was given"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def run(self, args: NoArguments, ctx: StepContext) -> dict[str, Any]:
        raise self.error


class ReturningAction(Action[NoArguments]):
    name = "returning"
    arguments = NoArguments
    changes_things = False
    description = "return what it was given"

    def __init__(self, outputs: Any) -> None:
        self.outputs = outputs

    async def run(self, args: NoArguments, ctx: StepContext) -> Any:
        return self.outputs


class BlockingAction(Action[NoArguments]):
    name = "blocking"
    arguments = NoArguments
    changes_things = False
    description = "wait for an event that never comes"

    def __init__(self) -> None:
        self.started = anyio.Event()

    async def run(self, args: NoArguments, ctx: StepContext) -> dict[str, Any]:
        self.started.set()
        await anyio.Event().wait()
        return {}


class SleepingAction(Action[NoArguments]):
    name = "sleeping"
    arguments = NoArguments
    changes_things = False
    description = "sleep for an hour through the context"

    def __init__(self) -> None:
        self.started = False

    async def run(self, args: NoArguments, ctx: StepContext) -> dict[str, Any]:
        self.started = True
        await ctx.sleep(3600)
        return {}


async def _failure(action: Action[Any], arguments: dict[str, Any]) -> StepError:
    with pytest.raises(StepError) as raised:
        await run_action(action, arguments, Recorder().context())
    return raised.value


async def test_run_action_gives_the_action_validated_arguments_and_returns_its_outputs() -> None:
    action, recorder = EchoAction(), Recorder()
    outputs = await run_action(action, {"text": "hi", "pause": "2m"}, recorder.context())
    assert action.received == [EchoArguments(text="hi", pause=timedelta(minutes=2))]
    assert recorder.sleeps == [120.0]
    assert outputs == {"text": "hi", "tuple": [1, 2]}  # as JSON reads it back


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"text": "hi", "pause": "soon"},
            "'pause' is not a duration: the text 'soon' (at with.pause; hint: write a number "
            "and a unit: 500ms, 30s, 2m, 4h or 1d)",
        ),
        ({"txt": "hi"}, "unknown field 'txt' (at with.txt; hint: did you mean 'text'?)"),
        ({}, "missing required field 'text' (at with.text; hint: add 'text': what to echo)"),
        ({"text": 3}, "'text' must be text, not the integer 3"),
    ],
)
async def test_invalid_arguments_are_a_non_retryable_error_naming_the_field_and_the_fix(
    arguments: dict[str, Any], expected: str
) -> None:
    action = EchoAction()
    error = await _failure(action, arguments)
    assert error.error_type == "InvalidArguments" and not error.retryable
    assert str(error).startswith("action 'echo' got invalid arguments: ")
    assert expected in str(error)
    assert str(error).endswith(
        "Fix the step's with: in the blueprint, or the parameters its templates read."
    )
    assert action.received == []


async def test_every_invalid_argument_is_named_at_once() -> None:
    error = await _failure(EchoAction(), {"text": 3, "pause": "soon"})
    assert "'text' must be text" in str(error) and "'pause' is not a duration" in str(error)


@pytest.mark.parametrize(
    ("error", "error_type", "retryable", "message"),
    [
        (TimeoutError("read timed out"), "Timeout", True, "TimeoutError: read timed out"),
        (TimeoutError(), "Timeout", True, "TimeoutError"),
        (
            ConnectionRefusedError("refused"),
            "ConnectionError",
            True,
            "ConnectionRefusedError: refused",
        ),
        (
            OSError(113, "No route to host"),
            "ConnectionError",
            True,
            "OSError: [Errno 113] No route to host",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/etc/x"),
            "FileNotFoundError",
            False,
            "FileNotFoundError: [Errno 2] No such file or directory: '/etc/x'",
        ),
        (PermissionError(13, "Permission denied"), "PermissionError", False, "PermissionError: "),
        (
            ExpressionError("expression 'x.y' failed: 'x' is undefined"),
            "ExpressionError",
            False,
            "expression 'x.y' failed: 'x' is undefined",
        ),
        (ValueError("bad value"), "ValueError", False, "ValueError: bad value"),
        (KeyError("key"), "KeyError", False, "KeyError: 'key'"),
        (RuntimeError(), "RuntimeError", False, "RuntimeError"),
        (ExceptionGroup("one", [TimeoutError("slow")]), "Timeout", True, "TimeoutError: slow"),
        (
            ExceptionGroup("two", [TimeoutError("slow"), ValueError("bad")]),
            "ExceptionGroup",
            False,
            "ExceptionGroup: two (2 sub-exceptions)",
        ),
    ],
)
async def test_exceptions_are_translated_once_into_classified_step_errors(
    error: Exception, error_type: str, retryable: bool, message: str
) -> None:
    translated = await _failure(RaisingAction(error), {})
    assert (translated.error_type, translated.retryable) == (error_type, retryable)
    assert str(translated).startswith(message)
    assert translated.__cause__ is error


async def test_a_step_error_passes_through_unchanged() -> None:
    error = StepError("exit code 3", retryable=True, error_type="ExitCode")
    assert await _failure(RaisingAction(error), {}) is error
    assert classify_error(error) is error


@pytest.mark.parametrize(
    ("outputs", "problem"),
    [
        (["a list"], "returned a list, not a mapping of names to values"),
        (None, "returned a NoneType, not a mapping"),
        ({"when": datetime(2026, 1, 1)}, "not JSON: Object of type datetime is not JSON"),
        ({"ratio": math.nan}, "not JSON: Out of range float values are not JSON compliant"),
    ],
)
async def test_outputs_that_are_not_a_json_mapping_are_a_bug_in_the_action(
    outputs: Any, problem: str
) -> None:
    error = await _failure(ReturningAction(outputs), {})
    assert error.error_type == "InvalidOutputs" and not error.retryable
    assert str(error).startswith("action 'returning' ") and problem in str(error)


async def test_cancelling_a_running_action_propagates_untranslated() -> None:
    action, seen = BlockingAction(), []

    async def attempt() -> None:
        try:
            await run_action(action, {}, Recorder().context())
        except anyio.get_cancelled_exc_class():
            seen.append("cancelled")
            raise
        except StepError as exc:  # pragma: no cover - the failure this test looks for
            seen.append(f"translated: {exc}")

    async with anyio.create_task_group() as group:
        group.start_soon(attempt)
        await action.started.wait()
        group.cancel_scope.cancel()
    assert seen == ["cancelled"]


async def test_a_deadline_around_a_sleeping_action_cancels_it_without_a_step_error() -> None:
    action = SleepingAction()
    context = StepContext(execution_id="e", step_id="s", attempt=1)  # the real anyio.sleep
    with anyio.move_on_after(0) as scope:
        await run_action(action, {}, context)
    assert action.started and scope.cancelled_caught


async def test_the_context_evaluates_conditions_with_its_variables_and_the_current_time() -> None:
    recorder = Recorder()
    context = recorder.context(variables={"params": {"n": 3}, "now": "stale"})
    assert context.evaluate("params.n * 2") == 6
    assert context.evaluate("now") == START
    recorder.clock.advance(timedelta(seconds=5))
    assert context.evaluate("now") == START + timedelta(seconds=5)
    with pytest.raises(ExpressionError, match="'nope' is undefined"):
        context.evaluate("nope.x")


async def test_the_context_passes_reported_sub_tasks_to_its_reporter() -> None:
    recorder = Recorder()
    await recorder.context().report("Exporting BIOS settings…")
    assert recorder.sub_tasks == ["Exporting BIOS settings…"]


async def test_a_context_has_working_defaults_for_everything_but_its_identity() -> None:
    context = StepContext(execution_id="e", step_id="s", attempt=2)
    assert (context.item_key, context.target, context.item, context.variables) == (
        "",
        None,
        None,
        {},
    )
    await context.report("ignored")
    await context.sleep(0)
    assert context.clock().tzinfo is UTC
    assert abs(context.clock() - datetime.now(UTC)) < timedelta(minutes=1)
    assert context.logger is logging.getLogger("opsgate.actions")
