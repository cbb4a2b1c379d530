"""The scripted test action: one outcome per attempt, marker lines, and a file that releases it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from opsgate.actions import builtin_actions, run_action
from opsgate.actions.scripted import (
    BLOCK_POLL_SECONDS,
    Marker,
    ScriptedAction,
    ScriptedOutcome,
    read_markers,
)
from opsgate.errors import StepError
from tests.actions.contexts import Recorder

pytestmark = pytest.mark.anyio

SCRIPT = {
    "outcomes": [
        {"fail": "connection refused", "retryable": True, "error_type": "ConnectionError"},
        {"fail": "disk full"},
        {"sleep": 2.5, "succeed": {"version": "1.2", "hosts": ["a", "b"]}},
    ]
}


async def _attempt(arguments: dict[str, Any], attempt: int, recorder: Recorder) -> Any:
    """The outputs of one attempt, or the StepError it raised."""
    try:
        return await run_action(ScriptedAction(), arguments, recorder.context(attempt=attempt))
    except StepError as exc:
        return exc


async def test_each_attempt_takes_its_outcome_from_the_script() -> None:
    recorder = Recorder()
    first, second, third, fourth = [await _attempt(SCRIPT, n, recorder) for n in (1, 2, 3, 4)]
    assert (str(first), first.retryable, first.error_type) == (
        "connection refused",
        True,
        "ConnectionError",
    )
    assert (str(second), second.retryable, second.error_type) == ("disk full", False, "StepError")
    assert third == {"version": "1.2", "hosts": ["a", "b"]}
    assert recorder.sleeps == [2.5]
    assert fourth == {}  # past the script: the default outcome succeeds without outputs


async def test_attempts_past_the_script_take_the_default_outcome() -> None:
    arguments = {"outcomes": [{"succeed": {}}], "default": {"fail": "ran too often"}}
    assert await _attempt(arguments, 1, Recorder()) == {}
    assert str(await _attempt(arguments, 2, Recorder())) == "ran too often"


async def test_a_sleep_alone_succeeds_after_sleeping_and_can_precede_a_failure() -> None:
    recorder = Recorder()
    arguments = {"outcomes": [{"sleep": 1}, {"sleep": 0.5, "fail": "late failure"}]}
    assert await _attempt(arguments, 1, recorder) == {}
    assert str(await _attempt(arguments, 2, recorder)) == "late failure"
    assert recorder.sleeps == [1.0, 0.5]


async def test_a_sleep_longer_than_the_deadline_is_cut_short_by_cancellation() -> None:
    context = Recorder().context(sleep=anyio.sleep)  # the real sleep, under a zero deadline
    with anyio.move_on_after(0) as scope:
        await run_action(ScriptedAction(), {"outcomes": [{"sleep": 3600}]}, context)
    assert scope.cancelled_caught


async def test_every_attempt_start_appends_a_marker_line(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    arguments = {"outcomes": [{"fail": "no"}], "marker_file": str(markers)}
    recorder = Recorder()
    await run_action(ScriptedAction(), arguments, recorder.context(item_key="web-1", attempt=2))
    await _attempt(arguments, 1, recorder)
    assert markers.read_text() == "e s web-1 2\ne s  1\n"
    assert read_markers(markers) == [Marker("e", "s", "web-1", 2), Marker("e", "s", "", 1)]


def test_a_missing_marker_file_has_no_markers(tmp_path: Path) -> None:
    assert read_markers(tmp_path / "never-written") == []


async def test_an_attempt_finishes_only_once_its_block_file_exists(tmp_path: Path) -> None:
    block_file, recorder = tmp_path / "release", Recorder()
    polling, outcome = anyio.Event(), []

    async def sleep(seconds: float) -> None:
        await recorder.sleep(seconds)
        polling.set()

    async def attempt() -> None:
        arguments = {"outcomes": [{"succeed": {"done": True}}], "block_file": str(block_file)}
        outcome.append(await run_action(ScriptedAction(), arguments, recorder.context(sleep=sleep)))

    async with anyio.create_task_group() as group:
        group.start_soon(attempt)
        await polling.wait()
        assert outcome == []
        block_file.touch()
    assert outcome == [{"done": True}]
    assert set(recorder.sleeps) == {BLOCK_POLL_SECONDS}
    assert recorder.sub_tasks == [f"waiting for {block_file}"]


async def test_a_block_file_that_exists_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "release").touch()
    recorder = Recorder()
    arguments = {"block_file": str(tmp_path / "release")}
    assert await run_action(ScriptedAction(), arguments, recorder.context()) == {}
    assert recorder.sleeps == []


def test_the_scripted_action_is_not_a_built_in() -> None:
    assert "scripted" not in builtin_actions()


@pytest.mark.parametrize(
    ("outcome", "problem"),
    [
        ({"succeed": {}, "fail": "x"}, "takes one of 'succeed' and 'fail', not both"),
        ({}, "needs 'succeed', 'fail' or 'sleep'"),
        ({"succeed": {}, "retryable": True}, "takes retryable only with 'fail'"),
        ({"sleep": -1}, "greater than or equal to 0"),
        ({"fail": "x", "retryable": "yes"}, "valid boolean"),
    ],
)
def test_an_outcome_is_a_success_or_a_failure_after_an_optional_sleep(
    outcome: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        ScriptedOutcome.model_validate(outcome)
