"""The control actions ``log``, ``wait`` and ``assert``, run through the action boundary."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from opsgate.actions import run_action
from opsgate.actions.control import AssertAction, LogAction, WaitAction, WaitArguments
from opsgate.errors import StepError
from tests.actions.contexts import START, Recorder

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
async def test_log_writes_the_message_at_its_level_and_outputs_it(
    level: str, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("opsgate.test.log")
    context = Recorder().context(logger=logger, item_key="web-1")
    with caplog.at_level(logging.DEBUG, logger="opsgate.test.log"):
        outputs = await run_action(
            LogAction(), {"message": "restart of nginx rolled back", "level": level}, context
        )
    assert outputs == {"message": "restart of nginx rolled back", "level": level}
    (record,) = caplog.records
    assert record.levelname == level.upper()
    assert record.getMessage() == "restart of nginx rolled back"
    ids = {key: record.__dict__[key] for key in ("execution_id", "step_id", "item_key")}
    assert ids == {"execution_id": "e", "step_id": "s", "item_key": "web-1"}


async def test_log_is_at_info_unless_told_otherwise() -> None:
    outputs = await run_action(LogAction(), {"message": "done"}, Recorder().context())
    assert outputs == {"message": "done", "level": "info"}


async def test_log_refuses_an_unknown_level_with_the_closest_one() -> None:
    with pytest.raises(StepError) as raised:
        await run_action(LogAction(), {"message": "x", "level": "warn"}, Recorder().context())
    assert raised.value.error_type == "InvalidArguments"
    assert "'level' must be one of 'debug', 'info', 'warning' or 'error'" in str(raised.value)
    assert "did you mean 'warning'?" in str(raised.value)


async def test_wait_sleeps_for_its_duration_through_the_context() -> None:
    recorder = Recorder()
    outputs = await run_action(WaitAction(), {"duration": "90s"}, recorder.context())
    assert outputs == {"waited_seconds": 90.0}
    assert recorder.sleeps == [90.0]
    assert recorder.sub_tasks == ["waiting 90s"]


@pytest.mark.parametrize(
    ("ready_after", "sleeps"),
    [
        (timedelta(0), []),  # already true: no wait at all
        (timedelta(seconds=20), [10.0, 10.0]),  # true exactly on the second check
        (timedelta(seconds=20, milliseconds=1), [10.0, 10.0, 10.0]),  # just past it
    ],
)
async def test_wait_until_checks_the_condition_every_interval_until_it_holds(
    ready_after: timedelta, sleeps: list[float]
) -> None:
    recorder = Recorder()
    context = recorder.context(variables={"ready_at": START + ready_after})
    outputs = await run_action(
        WaitAction(), {"until": "now >= ready_at", "interval": "10s"}, context
    )
    assert recorder.sleeps == sleeps
    assert outputs == {"waited_seconds": sum(sleeps)}
    assert recorder.sub_tasks == ["waiting until now >= ready_at"]


async def test_wait_until_reads_step_outputs_and_uses_the_default_interval() -> None:
    recorder = Recorder()
    steps = {"probe": {"outputs": {"status": "starting"}}}

    async def sleep(seconds: float) -> None:
        await recorder.sleep(seconds)
        steps["probe"]["outputs"]["status"] = "ok"

    context = recorder.context(variables={"steps": steps}, sleep=sleep)
    until = "steps.probe.outputs.status == 'ok'"
    outputs = await run_action(WaitAction(), {"until": until}, context)
    assert recorder.sleeps == [10.0] and outputs == {"waited_seconds": 10.0}


async def test_wait_until_a_literal_true_returns_at_once() -> None:
    recorder = Recorder()
    assert await run_action(WaitAction(), {"until": True}, recorder.context()) == {
        "waited_seconds": 0.0
    }
    assert recorder.sleeps == []


async def test_wait_until_a_condition_that_cannot_be_evaluated_fails_without_retry() -> None:
    with pytest.raises(StepError) as raised:
        await run_action(WaitAction(), {"until": "steps.nope.outputs.ok"}, Recorder().context())
    assert raised.value.error_type == "ExpressionError" and not raised.value.retryable
    assert "'steps' is undefined" in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "needs exactly one of 'duration' and 'until'"),
        ({"interval": "5s"}, "needs exactly one of 'duration' and 'until'"),
        ({"duration": "1s", "until": "true"}, "needs exactly one of 'duration' and 'until'"),
        ({"duration": "1s", "interval": "5s"}, "takes 'interval' only with 'until'"),
    ],
)
def test_wait_takes_a_duration_or_a_condition_polled_every_interval(
    arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        WaitArguments.model_validate(arguments)


async def test_assert_outputs_the_condition_when_it_holds() -> None:
    context = Recorder().context(variables={"steps": {"check": {"outputs": {"free_gb": 12}}}})
    condition = "steps.check.outputs.free_gb > 5"
    outputs = await run_action(AssertAction(), {"condition": condition}, context)
    assert outputs == {"condition": condition, "result": True}


async def test_a_false_assertion_fails_the_step_without_retry() -> None:
    context = Recorder().context(variables={"free_gb": 2})
    with pytest.raises(StepError) as raised:
        await run_action(AssertAction(), {"condition": "free_gb > 5"}, context)
    assert (raised.value.error_type, raised.value.retryable) == ("AssertionFailed", False)
    assert str(raised.value) == "assertion failed: free_gb > 5"


async def test_a_false_assertion_fails_with_its_own_message() -> None:
    arguments = {"condition": False, "message": "rack label missing"}
    with pytest.raises(StepError, match=r"^rack label missing$"):
        await run_action(AssertAction(), arguments, Recorder().context())


@pytest.mark.parametrize(
    ("value", "holds"),
    [(0, False), ("", False), ([], False), ({}, False), (None, False), (1, True), ("no", True)],
)
async def test_an_assertion_that_is_not_a_boolean_is_judged_by_truthiness(
    value: Any, holds: bool
) -> None:
    context = Recorder().context(variables={"value": value})
    if holds:
        assert (await run_action(AssertAction(), {"condition": "value"}, context))["result"]
    else:
        with pytest.raises(StepError, match="assertion failed: value"):
            await run_action(AssertAction(), {"condition": "value"}, context)
