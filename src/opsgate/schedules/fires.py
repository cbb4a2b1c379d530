"""What a scheduler does with a schedule that is due: the fires to record, in order. Pure.

A fire is *on time* when it is at most ``grace`` late; older ones were *missed* (opsgate was
down, or busy). What happens to missed fires is the misfire policy's choice:

- ``skip``: none runs; one ``misfired`` record covers them all, and the schedule goes on with
  the fires that are on time.
- ``run_once``: one catch-up run, for the first missed fire within the catch-up window; it
  stands for all of them. Fires older than the window are recorded as one ``misfired``.
- ``run_all``: every missed fire within the catch-up window runs, oldest first; older ones are
  recorded as one ``misfired``.

Every step is keyed by the schedule's ``next_fire_at`` at that moment and moves it on to the
next step's key, so any scheduler process can take over from whatever was committed last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from opsgate.models import MisfirePolicy, OverlapPolicy, Schedule
from opsgate.schedules.cron import CronError, CronSchedule

#: At most this many steps are planned per schedule and pass; the scheduler comes back for more.
MAX_STEPS = 100
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FireStep:
    """Record ``fire_at``: run it (``run``) or record it as missed; then go on to ``next_at``."""

    fire_at: datetime
    run: bool
    next_at: datetime | None
    data: Mapping[str, Any] = field(default_factory=dict)


def following(cron: CronSchedule, after: datetime, end_at: datetime | None) -> datetime | None:
    """The fire after ``after``, or ``None`` when there is none before ``end_at``."""
    try:
        fire = cron.next_fire(after).at
    except CronError:
        return None
    return None if end_at is not None and fire > end_at else fire


def first_fire(
    cron: CronSchedule, now: datetime, start_at: datetime | None, end_at: datetime | None
) -> datetime | None:
    """A new (or resumed) schedule's first fire: after ``now``, not before ``start_at``."""
    after = now if start_at is None or start_at <= now else start_at - _TICK
    return following(cron, after, end_at)


def plan_due(
    schedule: Schedule, cron: CronSchedule, now: datetime, *, limit: int = MAX_STEPS
) -> list[FireStep]:
    """The steps for ``schedule`` at ``now``; empty when it is not due."""
    due = schedule.next_fire_at
    if due is None or due > now:
        return []
    end = schedule.end_at
    on_time = now - timedelta(seconds=schedule.misfire_grace_seconds)
    window = now - timedelta(seconds=schedule.catchup_window_seconds)
    steps: list[FireStep] = []
    if due < on_time:
        steps += _missed(schedule, cron, due, on_time, window)
        if not steps:
            return []
        due = steps[-1].next_at
    while due is not None and due <= now and len(steps) < limit:
        next_at = following(cron, due, end)
        steps.append(FireStep(due, True, next_at))
        due = next_at
    return steps[:limit]


def _missed(
    schedule: Schedule, cron: CronSchedule, due: datetime, on_time: datetime, window: datetime
) -> list[FireStep]:
    """Steps for the fires from ``due`` up to ``on_time`` (exclusive), by the misfire policy."""
    end = schedule.end_at
    policy = schedule.misfire_policy
    resume = following(cron, on_time - _TICK, end)
    if policy is MisfirePolicy.SKIP:
        return [FireStep(due, False, resume, _missed_data(policy, due, on_time))]
    first_caught = due if due >= window else following(cron, window - _TICK, end)
    if first_caught is not None and first_caught >= on_time:
        first_caught = None
    steps: list[FireStep] = []
    if first_caught is None or due < first_caught:
        until = first_caught or on_time
        steps.append(FireStep(due, False, first_caught or resume, _missed_data(policy, due, until)))
    if first_caught is None:
        return steps
    if policy is MisfirePolicy.RUN_ONCE:
        stands_for = {"from": first_caught.isoformat(), "until": on_time.isoformat()}
        data = {"catch_up": True, "stands_for": stands_for}
        steps.append(FireStep(first_caught, True, resume, data))
        return steps
    fire_at: datetime | None = first_caught
    while fire_at is not None and fire_at < on_time and len(steps) < MAX_STEPS:
        next_at = following(cron, fire_at, end)
        steps.append(FireStep(fire_at, True, next_at, {"catch_up": True}))
        fire_at = next_at
    return steps


def _missed_data(policy: MisfirePolicy, since: datetime, until: datetime) -> dict[str, Any]:
    return {
        "misfire_policy": str(policy),
        "missed": {"from": since.isoformat(), "until": until.isoformat()},
    }


OVERLAP_WORDS = {
    OverlapPolicy.SKIP: (
        "If the previous execution of this schedule is still active when it fires, this fire "
        "is skipped (recorded as schedule.skipped)."
    ),
    OverlapPolicy.QUEUE: (
        "If the previous execution is still active, the new one is created at once and waits "
        "in line; it starts when the previous one ends."
    ),
    OverlapPolicy.ALLOW: "Executions of this schedule may run at the same time.",
    OverlapPolicy.CANCEL_PREVIOUS: (
        "If the previous execution is still active, it is cancelled (its completed steps "
        "rolled back) and the new one starts when that has finished."
    ),
}


def misfire_words(policy: MisfirePolicy, catchup_window_seconds: int, grace_seconds: int) -> str:
    """The misfire policy of a schedule in one or two sentences."""
    late = f"A fire up to {_duration(grace_seconds)} late still runs as usual. "
    window = _duration(catchup_window_seconds)
    if policy is MisfirePolicy.SKIP:
        return late + "Fires missed while opsgate was down are skipped (schedule.misfired)."
    if policy is MisfirePolicy.RUN_ONCE:
        return late + (
            f"After downtime, one catch-up execution runs for the fires missed in the last "
            f"{window}; older missed fires are skipped."
        )
    return late + (
        f"After downtime, every fire missed in the last {window} runs, oldest first; older "
        "missed fires are skipped."
    )


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
