"""Step contexts for action tests: no real time passes, reported sub-tasks are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from opsgate.actions import StepContext
from tests.clocks import FakeClock

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Recorder:
    """The injectable parts of a context: a frozen clock that only sleeps advance, the sleeps
    asked for, and the sub-tasks reported."""

    def __init__(self) -> None:
        self.clock = FakeClock(START, step=timedelta(0))
        self.sleeps: list[float] = []
        self.sub_tasks: list[str] = []

    async def report(self, sub_task: str) -> None:
        self.sub_tasks.append(sub_task)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(timedelta(seconds=seconds))
        await anyio.lowlevel.checkpoint()

    def context(self, **overrides: Any) -> StepContext:
        """A context for attempt 1 of step ``s`` in execution ``e``, with ``overrides``."""
        fields: dict[str, Any] = {
            "execution_id": "e",
            "step_id": "s",
            "attempt": 1,
            "reporter": self.report,
            "clock": self.clock,
            "sleep": self.sleep,
        }
        return StepContext(**(fields | overrides))
