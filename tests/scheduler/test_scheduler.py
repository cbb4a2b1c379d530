"""The scheduler on both databases with an injected clock: DST, overlap and misfire policies,
denials, exactly-once firing between schedulers, and waking when schedules change."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from opsgate.catalog import Catalog
from opsgate.engine.statuses import ExecutionStatus, Trigger
from opsgate.models import LockStatus
from opsgate.scheduler import Scheduler
from opsgate.worker import Worker
from tests.engine.rehearsal import REGISTRY
from tests.scheduler.conftest import ALICE, FREEZE, Harness, policies

pytestmark = pytest.mark.anyio

MINUTE = timedelta(minutes=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *more: int) -> datetime:
    second, microsecond = (*more, 0, 0)[:2]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def started(harness: Harness, schedule_id: str) -> list[str]:
    return [e for _at, outcome, e in harness.fires(schedule_id) if outcome == "started" and e]


# -- DST, fired through the scheduler -------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "day", "gap_end", "next_day"),
    [
        ("Europe/Berlin", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
        ("America/New_York", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)),
    ],
)
async def test_spring_forward_fires_a_skipped_local_time_once_at_the_end_of_the_gap(
    harness: Harness, timezone: str, day: datetime, gap_end: datetime, next_day: datetime
) -> None:
    harness.clock.now = day
    schedule = await harness.schedule("30 2 * * *", timezone)
    assert schedule.next_fire_at == gap_end
    assert schedule.next_fire_times[0].dst == "shifted"
    await harness.at(gap_end - timedelta(seconds=1))
    assert harness.fires(schedule.schedule_id) == []
    await harness.at(gap_end)
    await harness.at(next_day)
    assert [(at, outcome) for at, outcome, _ in harness.fires(schedule.schedule_id)] == [
        (gap_end, "started"),
        (next_day, "started"),
    ]


@pytest.mark.parametrize(
    ("timezone", "start", "repeated"),
    [
        # 02:00-03:00 local happens twice; 02:30 is 00:30 UTC (CEST), then 01:30 UTC (CET).
        ("Europe/Berlin", utc(2026, 10, 24, 23, 45), [utc(2026, 10, 25, h) for h in (0, 1, 2)]),
        # 01:00-02:00 local happens twice; 01:30 is 05:30 UTC (EDT), then 06:30 UTC (EST).
        ("America/New_York", utc(2026, 11, 1, 4, 45), [utc(2026, 11, 1, h) for h in (5, 6, 7)]),
    ],
)
async def test_fall_back_fires_a_repeated_time_once_and_an_hourly_schedule_every_hour(
    harness: Harness, timezone: str, start: datetime, repeated: list[datetime]
) -> None:
    harness.clock.now = start
    offset = 2 if timezone == "Europe/Berlin" else 1  # the repeated hour's local hour
    daily = await harness.schedule(f"30 {offset} * * *", timezone, misfire_grace_seconds=3600)
    hourly = await harness.schedule("0 * * * *", timezone, misfire_grace_seconds=3600)
    moment = start
    while moment < start + timedelta(hours=3, minutes=30):
        moment += timedelta(minutes=10)
        await harness.at(moment)
    assert [at for at, _, _ in harness.fires(daily.schedule_id)] == [repeated[0] + 30 * MINUTE]
    assert [at for at, _, _ in harness.fires(hourly.schedule_id)][:3] == repeated


# -- misfire policies across a 3-hour downtime ------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "window_hours", "expected"),
    [
        ("skip", 4, [(9, "misfired"), (12, "started")]),
        ("run_once", 4, [(9, "started"), (12, "started")]),
        ("run_all", 4, [(9, "started"), (10, "started"), (11, "started"), (12, "started")]),
        ("run_all", 2, [(9, "misfired"), (11, "started"), (12, "started")]),
        ("run_once", 2, [(9, "misfired"), (11, "started"), (12, "started")]),
    ],
)
async def test_misfire_policies_after_a_three_hour_downtime(
    harness: Harness, policy: str, window_hours: int, expected: list[tuple[int, str]]
) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    schedule = await harness.schedule(
        overlap_policy="allow",
        misfire_policy=policy,
        catchup_window_seconds=window_hours * 3600,
    )
    await harness.at(utc(2026, 3, 1, 12, 0, 30))  # down from before 09:00 until 12:00:30
    fires = harness.fires(schedule.schedule_id)
    assert [(at.hour, outcome) for at, outcome, _ in fires] == expected
    after = await harness.service.get_schedule(schedule.schedule_id)
    assert (after.last_fire_at, after.last_outcome) == (utc(2026, 3, 1, 12), "started")
    assert after.next_fire_at == utc(2026, 3, 1, 13)
    kinds = [kind for kind, _ in harness.events(schedule.schedule_id)]
    assert kinds.count("schedule.fired") == sum(o == "started" for _, o in expected)
    assert kinds.count("schedule.misfired") == sum(o == "misfired" for _, o in expected)
    executions = [harness.store.get_execution(e) for _, _, e in fires if e]
    assert {e.schedule_id for e in executions} == {schedule.schedule_id}
    assert {e.requested_by for e in executions} == {"alice"}


async def test_a_catch_up_fire_says_so_in_its_event(harness: Harness) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    schedule = await harness.schedule(misfire_policy="run_once", catchup_window_seconds=4 * 3600)
    await harness.at(utc(2026, 3, 1, 12, 0, 30))
    fired = [
        data for kind, data in harness.events(schedule.schedule_id) if kind == "schedule.fired"
    ]
    assert fired[0]["catch_up"] is True and fired[0]["fire_at"] == "2026-03-01T09:00:00+00:00"
    assert "catch_up" not in fired[1]


# -- overlap policies -------------------------------------------------------------------------


async def test_overlap_skip_skips_while_the_previous_execution_is_active(harness: Harness) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    schedule = await harness.schedule("* * * * *", overlap_policy="skip")
    await harness.at(utc(2026, 3, 1, 9, 1))
    [first] = started(harness, schedule.schedule_id)
    await harness.at(utc(2026, 3, 1, 9, 2))
    assert harness.fires(schedule.schedule_id)[-1][1] == "skipped"
    kind, data = harness.events(schedule.schedule_id)[-1]
    assert (kind, data["active"]) == ("schedule.skipped", [first])
    harness.store.transition_execution(
        first, Trigger.CANCEL, expected=ExecutionStatus.PENDING, actor="test"
    )
    await harness.at(utc(2026, 3, 1, 9, 3))
    assert len(started(harness, schedule.schedule_id)) == 2


async def test_overlap_allow_runs_executions_side_by_side(harness: Harness) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    schedule = await harness.schedule("* * * * *", overlap_policy="allow")
    await harness.at(utc(2026, 3, 1, 9, 1))
    await harness.at(utc(2026, 3, 1, 9, 2))
    ids = started(harness, schedule.schedule_id)
    assert len(ids) == 2
    claimed = harness.store.claim_executions("worker", lease_seconds=60, limit=10)
    assert {e.id for e in claimed} == set(ids)


async def test_overlap_queue_holds_the_next_execution_until_the_previous_one_ends(
    harness: Harness,
) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    schedule = await harness.schedule("* * * * *", overlap_policy="queue")
    await harness.at(utc(2026, 3, 1, 9, 1))
    await harness.at(utc(2026, 3, 1, 9, 2))
    first, second = started(harness, schedule.schedule_id)
    claimed = harness.store.claim_executions("worker", lease_seconds=60, limit=10)
    assert [e.id for e in claimed] == [first]  # the second waits in line
    harness.store.transition_execution(
        first, Trigger.START, expected=ExecutionStatus.PENDING, actor="worker"
    )
    harness.store.transition_execution(
        first, Trigger.SUCCEED, expected=ExecutionStatus.RUNNING, actor="worker"
    )
    [promoted] = harness.store.release_locks(first, actor="worker")
    assert (promoted.execution_id, promoted.status) == (second, LockStatus.HELD)
    claimed = harness.store.claim_executions("worker", lease_seconds=60, limit=10)
    assert [e.id for e in claimed] == [second]


async def test_overlap_cancel_previous_cancels_it_and_starts_the_new_one_after(
    harness: Harness,
) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    schedule = await harness.schedule("* * * * *", overlap_policy="cancel_previous")
    await harness.at(utc(2026, 3, 1, 9, 1))
    await harness.at(utc(2026, 3, 1, 9, 2))
    first, second = started(harness, schedule.schedule_id)
    assert harness.store.get_execution(first).status is ExecutionStatus.CANCELLED
    cancelled = [e for e in harness.store.list_events(first) if e.type == "execution.cancelled"]
    assert "cancel_previous" in cancelled[0].data["reason"]
    claimed = harness.store.claim_executions("worker", lease_seconds=60, limit=10)
    assert [e.id for e in claimed] == [second]


# -- refusals are recorded, not raised ----------------------------------------------------------


async def test_a_policy_denial_at_fire_time_is_recorded_and_the_schedule_goes_on(
    harness: Harness,
) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    schedule = await harness.schedule(parameters={"service": "db"})
    harness.service.catalog = dataclasses.replace(
        harness.service.catalog, policies=policies(FREEZE)
    )
    await harness.at(utc(2026, 3, 1, 9))
    assert harness.fires(schedule.schedule_id) == [(utc(2026, 3, 1, 9), "denied", None)]
    kind, data = harness.events(schedule.schedule_id)[-1]
    assert kind == "schedule.denied" and "freeze-db" in data["reason"]
    after = await harness.service.get_schedule(schedule.schedule_id)
    assert (after.last_outcome, after.next_fire_at) == ("denied", utc(2026, 3, 1, 10))
    assert harness.store.list_executions(limit=10).items == []


async def test_a_blueprint_that_is_gone_fails_the_fire_with_the_reason(harness: Harness) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    schedule = await harness.schedule()
    harness.service.catalog = Catalog()
    await harness.at(utc(2026, 3, 1, 9))
    assert harness.fires(schedule.schedule_id)[0][1] == "failed"
    kind, data = harness.events(schedule.schedule_id)[-1]
    assert kind == "schedule.failed" and "workflow 'nightly' not found" in data["error"]


async def test_a_stored_schedule_whose_timezone_is_unknown_fails_and_stops(
    harness: Harness,
) -> None:
    schedule = harness.store.create_schedule(
        workflow_name="nightly",
        cron="0 * * * *",
        timezone="Mars/Olympus_Mons",
        parameters={"service": "web"},
        owner="alice",
        overlap_policy="allow",  # type: ignore[arg-type]
        misfire_policy="skip",  # type: ignore[arg-type]
        catchup_window_seconds=0,
        next_fire_at=utc(2026, 3, 1, 9),
    )
    await harness.at(utc(2026, 3, 1, 9))
    assert harness.fires(schedule.id) == [(utc(2026, 3, 1, 9), "failed", None)]
    assert harness.store.get_schedule(schedule.id).next_fire_at is None


# -- exactly once, sleeping and waking ----------------------------------------------------------


async def test_two_schedulers_racing_on_one_database_start_each_fire_once(
    harness: Harness,
) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 0, 500000)
    schedule = await harness.schedule("* * * * * *", overlap_policy="allow")
    harness.clock.now = utc(2026, 3, 1, 9, 0, 20)
    other = Scheduler(harness.store, harness.service, clock=harness.clock)
    async with anyio.create_task_group() as group:
        for scheduler in (harness.scheduler, other, harness.scheduler, other):
            group.start_soon(scheduler.run_due)
    fires = harness.fires(schedule.schedule_id)
    assert [at for at, _, _ in fires] == [utc(2026, 3, 1, 9, 0, s) for s in range(1, 21)]
    ids = started(harness, schedule.schedule_id)
    assert len(ids) == len(set(ids)) == 20
    assert len(harness.store.list_executions(limit=100).items) == 20


async def test_the_scheduler_sleeps_until_the_next_fire_and_wakes_when_told(
    harness: Harness,
) -> None:
    harness.clock.step = timedelta(0)
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    harness.scheduler.recheck_seconds = 3600
    assert await harness.scheduler._delay() == 3600  # no schedule: only the recheck
    schedule = await harness.schedule("* * * * *")
    assert await harness.scheduler._delay() == 30
    async with anyio.create_task_group() as group:
        group.start_soon(harness.scheduler.run)
        await anyio.sleep(0.2)
        assert harness.fires(schedule.schedule_id) == []
        harness.clock.now = utc(2026, 3, 1, 9, 1)
        harness.scheduler.wake()
        with anyio.fail_after(5):
            while not harness.fires(schedule.schedule_id):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert harness.fires(schedule.schedule_id)[0][:2] == (utc(2026, 3, 1, 9, 1), "started")


async def test_a_paused_schedule_does_not_fire_and_resumes_from_now(harness: Harness) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    schedule = await harness.schedule()
    paused = await harness.service.update_schedule(ALICE, schedule.schedule_id, enabled=False)
    assert (paused.enabled, paused.next_fire_at, paused.next_fire_times) == (False, None, [])
    await harness.at(utc(2026, 3, 1, 12, 30))
    assert harness.fires(schedule.schedule_id) == []
    resumed = await harness.service.update_schedule(ALICE, schedule.schedule_id, enabled=True)
    assert resumed.next_fire_at == utc(2026, 3, 1, 13)
    await harness.at(utc(2026, 3, 1, 13))
    assert [outcome for _, outcome, _ in harness.fires(schedule.schedule_id)] == ["started"]


async def test_a_schedule_that_cannot_move_on_does_not_spin_the_scheduler(
    harness: Harness,
) -> None:
    harness.clock.now = utc(2026, 3, 1, 8, 30)
    view = await harness.schedule()
    nine = utc(2026, 3, 1, 9)
    harness.store.record_fire(view.schedule_id, nine, "skipped", next_fire_at=nine)  # type: ignore[arg-type]
    harness.clock.now = nine  # its next fire is one that is already recorded
    with anyio.fail_after(5):
        assert await harness.scheduler.run_due() == 1
    assert len(harness.fires(view.schedule_id)) == 1
    assert harness.scheduler._stuck  # so run() retries it after STUCK_SLEEP_SECONDS, not hot
    harness.clock.now = nine + timedelta(hours=2)
    await harness.service.update_schedule(ALICE, view.schedule_id, cron="30 * * * *")
    await harness.scheduler.run_due()
    assert not harness.scheduler._stuck


async def test_with_a_worker_queued_fires_run_one_after_another(
    harness: Harness, tmp_path: Path
) -> None:
    harness.clock.now = utc(2026, 3, 1, 9, 0, 30)
    schedule = await harness.schedule("* * * * *", overlap_policy="queue")
    worker = Worker(harness.store, REGISTRY, lease_seconds=3600)
    harness.service.wake = worker.wake

    def status(execution_id: str) -> str:
        return str(harness.store.get_execution(execution_id).status)

    async def until(predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not predicate():  # noqa: ASYNC110
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        await harness.at(utc(2026, 3, 1, 9, 1))
        [first] = started(harness, schedule.schedule_id)
        await until(lambda: status(first) == "running")
        await harness.at(utc(2026, 3, 1, 9, 2))
        [_, second] = started(harness, schedule.schedule_id)
        assert status(second) == "pending"
        # In line behind the first for the schedule's lock: no worker may claim it yet.
        assert harness.store.claim_executions("probe", lease_seconds=30, limit=10) == []
        (tmp_path / "release").touch()
        await until(lambda: status(second) == "succeeded")
        group.cancel_scope.cancel()
    assert status(first) == "succeeded"
    first_end = harness.store.get_execution(first).finished_at
    second_start = harness.store.get_execution(second).started_at
    assert first_end is not None and second_start is not None and first_end <= second_start
