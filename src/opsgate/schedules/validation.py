"""Checking a schedule request as a whole: every problem at once, so nothing half-valid is saved.

``schedule_workflow`` with an invalid cron, an unknown timezone and bad parameters answers with
one :class:`InvalidScheduleError` listing all three, each with the field it is about and a hint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from opsgate.errors import OpsgateError
from opsgate.models import MisfirePolicy, OverlapPolicy
from opsgate.schedules.cron import CronSchedule, parse_cron, schedule_problems
from opsgate.schedules.fires import first_fire
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.parameters import validate_parameters

E = TypeVar("E", OverlapPolicy, MisfirePolicy)
#: Missed fires older than this are skipped, unless a schedule says otherwise.
DEFAULT_CATCHUP_WINDOW_SECONDS = 3600
#: A fire this late still runs as on time, unless a schedule says otherwise.
DEFAULT_MISFIRE_GRACE_SECONDS = 60
#: The longest catch-up window: missed fires older than a year are never run.
MAX_CATCHUP_WINDOW_SECONDS = 366 * 86400


@dataclass(frozen=True, slots=True)
class ScheduleProblem:
    """One thing wrong with a schedule request: the field, what is wrong, how to fix it."""

    field: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class InvalidScheduleError(OpsgateError):
    """A schedule request has problems; ``problems`` lists every one, and nothing was saved."""

    def __init__(self, subject: str, problems: Sequence[ScheduleProblem]) -> None:
        self.subject = subject
        self.problems = list(problems)
        lines = [f"{subject} has {len(self.problems)} problem(s); nothing was saved:"]
        lines += [f"  {problem}" for problem in self.problems]
        lines.append("Fix them all and call again.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """A checked request: what the store saves, and the first fire time."""

    cron: CronSchedule
    parameters: dict[str, Any]
    overlap_policy: OverlapPolicy
    misfire_policy: MisfirePolicy
    start_at: datetime | None
    end_at: datetime | None
    catchup_window_seconds: int
    misfire_grace_seconds: int
    next_fire_at: datetime | None


def check_schedule(
    *,
    spec: WorkflowSpec | None,
    cron: object,
    timezone: object,
    parameters: Mapping[str, Any],
    overlap_policy: object,
    misfire_policy: object,
    start_at: datetime | None,
    end_at: datetime | None,
    catchup_window_seconds: int,
    misfire_grace_seconds: int,
    now: datetime,
) -> tuple[ScheduleRequest | None, list[ScheduleProblem]]:
    """The checked request, or ``None`` and every problem found (``spec`` is ``None`` for an
    unknown workflow, whose problem the caller reports)."""
    problems = [
        ScheduleProblem("timezone" if "timezone" in exc.problem else "cron", exc.problem, exc.hint)
        for exc in schedule_problems(cron, timezone)
    ]
    values: dict[str, Any] = {}
    if spec is not None:
        values, found = validate_parameters(spec.parameters, parameters)
        problems += [
            ScheduleProblem(f"parameters.{p.path}", p.message, p.hint or "see get_workflow_details")
            for p in found
        ]
    overlap = _choice(OverlapPolicy, "overlap_policy", overlap_policy, problems)
    misfire = _choice(MisfirePolicy, "misfire_policy", misfire_policy, problems)
    problems += _time_problems(start_at, end_at)
    if not 0 <= catchup_window_seconds <= MAX_CATCHUP_WINDOW_SECONDS:
        problems.append(
            ScheduleProblem(
                "catchup_window_seconds",
                f"must be between 0 and {MAX_CATCHUP_WINDOW_SECONDS}, not {catchup_window_seconds}",
                "missed fires older than the window are skipped; 3600 keeps the last hour",
            )
        )
    if misfire_grace_seconds < 1:
        problems.append(
            ScheduleProblem(
                "misfire_grace_seconds",
                f"must be at least 1, not {misfire_grace_seconds}",
                "a fire this late still runs as on time; the default is 60",
            )
        )
    if problems or overlap is None or misfire is None:
        return None, problems
    schedule = parse_cron(str(cron), str(timezone))
    next_fire_at = first_fire(schedule, now, start_at, end_at)
    if next_fire_at is None:
        problems.append(
            ScheduleProblem(
                "end_at",
                f"cron {schedule.expression!r} never fires between now (or start_at) and end_at",
                "move end_at later or change the cron expression",
            )
        )
        return None, problems
    request = ScheduleRequest(
        cron=schedule,
        parameters=values,
        overlap_policy=overlap,
        misfire_policy=misfire,
        start_at=start_at,
        end_at=end_at,
        catchup_window_seconds=catchup_window_seconds,
        misfire_grace_seconds=misfire_grace_seconds,
        next_fire_at=next_fire_at,
    )
    return request, problems


def _choice(enum: type[E], name: str, value: object, problems: list[ScheduleProblem]) -> E | None:
    choices = [member.value for member in enum]
    if isinstance(value, str) and value in choices:
        return enum(value)
    problems.append(
        ScheduleProblem(name, f"unknown policy {value!r}", f"use one of {', '.join(choices)}")
    )
    return None


def _time_problems(start_at: datetime | None, end_at: datetime | None) -> list[ScheduleProblem]:
    problems = [
        ScheduleProblem(name, "must have a timezone", "give it as ISO 8601 with an offset or Z")
        for name, value in (("start_at", start_at), ("end_at", end_at))
        if value is not None and value.utcoffset() is None
    ]
    if not problems and start_at is not None and end_at is not None and end_at <= start_at:
        problems.append(ScheduleProblem("end_at", "must be after start_at"))
    return problems
