"""The schedule use cases of the service: checked as a whole, explained, changed by their owner."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from opsgate.errors import ConflictError, NotFoundError, PolicyDeniedError
from opsgate.schedules.validation import InvalidScheduleError
from tests.scheduler.conftest import ALICE, BOB, FREEZE, Harness, policies

pytestmark = pytest.mark.anyio

NINE = datetime(2026, 3, 1, 9, tzinfo=UTC)


async def test_one_call_with_three_mistakes_gets_one_error_listing_all_and_saves_nothing(
    harness: Harness,
) -> None:
    with pytest.raises(InvalidScheduleError) as raised:
        await harness.service.schedule_workflow(
            ALICE, "nightly", "61 * * * *", "Europe/Berln", {"service": "Web!", "batch": 9}
        )
    fields = [problem.field for problem in raised.value.problems]
    assert fields == ["cron", "timezone", "parameters.service", "parameters.batch"]
    message = str(raised.value)
    assert "4 problem(s); nothing was saved" in message
    assert "did you mean 'Europe/Berlin'?" in message and "61 * * * *" in message
    assert harness.store.list_schedules() == []
    assert harness.schedule_event_count() == 0


async def test_unknown_workflow_and_policy_names_are_listed_together(harness: Harness) -> None:
    with pytest.raises(InvalidScheduleError) as raised:
        await harness.service.schedule_workflow(
            ALICE,
            "nightlly",
            "0 3 * * *",
            "UTC",
            {},
            overlap_policy="replace",
            misfire_policy="all",
            catchup_window_seconds=-1,
            misfire_grace_seconds=0,
        )
    problems = {problem.field: str(problem) for problem in raised.value.problems}
    assert set(problems) == {
        "workflow_name",
        "overlap_policy",
        "misfire_policy",
        "catchup_window_seconds",
        "misfire_grace_seconds",
    }
    assert "did you mean 'nightly'?" in problems["workflow_name"]
    assert "skip, queue, allow, cancel_previous" in problems["overlap_policy"]


async def test_times_must_be_aware_ordered_and_leave_a_fire(harness: Harness) -> None:
    with pytest.raises(InvalidScheduleError, match="start_at: must have a timezone"):
        await harness.schedule(start_at=datetime(2026, 3, 2))
    with pytest.raises(InvalidScheduleError, match="end_at: must be after start_at"):
        await harness.schedule(start_at=NINE + timedelta(days=2), end_at=NINE + timedelta(days=1))
    with pytest.raises(InvalidScheduleError, match="never fires between now"):
        await harness.schedule("0 3 * * *", end_at=NINE + timedelta(hours=1))


async def test_a_schedule_the_owner_may_not_run_is_refused_when_created(harness: Harness) -> None:
    harness.service.catalog = dataclasses.replace(
        harness.service.catalog, policies=policies(FREEZE)
    )
    with pytest.raises(InvalidScheduleError, match="policy: rule 'freeze-db'"):
        await harness.schedule(parameters={"service": "db"})
    assert harness.store.list_schedules() == []


async def test_a_new_schedule_comes_back_with_its_fire_times_and_policies_in_words(
    harness: Harness,
) -> None:
    harness.clock.now = datetime(2026, 10, 23, 12, tzinfo=UTC)
    view = await harness.schedule(
        "30 2 * * *", "Europe/Berlin", overlap_policy="queue", misfire_policy="run_all"
    )
    assert view.owner == "alice" and view.enabled and view.created
    assert view.parameters == {"service": "web", "batch": 2}
    assert [(f.at_local, f.dst) for f in view.next_fire_times[:3]] == [
        ("2026-10-24T02:30:00+02:00", None),
        ("2026-10-25T02:30:00+02:00", "repeated_once"),
        ("2026-10-26T02:30:00+01:00", None),
    ]
    assert view.next_fire_times[1].at_utc == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert "fires at the first only" in (view.next_fire_times[1].note or "")
    assert len(view.next_fire_times) == 5
    assert "waits in line" in view.overlap_policy_explained
    assert "every fire missed in the last 1 hour runs" in view.misfire_policy_explained
    assert [kind for kind, _ in harness.events(view.schedule_id)] == ["schedule.created"]


async def test_an_idempotency_key_makes_a_repeated_call_return_the_same_schedule(
    harness: Harness,
) -> None:
    first = await harness.schedule(idempotency_key="nightly-web")
    again = await harness.schedule(idempotency_key="nightly-web")
    assert (again.schedule_id, again.created) == (first.schedule_id, False)
    with pytest.raises(ConflictError, match="nightly-web"):
        await harness.schedule("0 4 * * *", idempotency_key="nightly-web")
    assert len(harness.store.list_schedules()) == 1


async def test_an_update_is_checked_as_a_whole_and_moves_the_next_fire(harness: Harness) -> None:
    harness.clock.now = NINE
    view = await harness.schedule("0 * * * *")
    with pytest.raises(InvalidScheduleError) as raised:
        await harness.service.update_schedule(
            ALICE, view.schedule_id, cron="0 25 * * *", parameters={"service": "?"}
        )
    assert [p.field for p in raised.value.problems] == ["cron", "parameters.service"]
    assert harness.store.get_schedule(view.schedule_id).cron == "0 * * * *"
    updated = await harness.service.update_schedule(
        ALICE, view.schedule_id, cron="30 9 * * *", timezone="Europe/Berlin"
    )
    assert updated.next_fire_at == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    kind, data = harness.events(view.schedule_id)[-1]
    assert kind == "schedule.updated" and data["cron"] == "30 9 * * *"


async def test_only_the_owner_changes_or_deletes_a_schedule(harness: Harness) -> None:
    view = await harness.schedule()
    with pytest.raises(PolicyDeniedError, match="belongs to alice"):
        await harness.service.update_schedule(BOB, view.schedule_id, parameters={"service": "db"})
    with pytest.raises(PolicyDeniedError, match="may not delete"):
        await harness.service.delete_schedule(BOB, view.schedule_id)
    deleted = await harness.service.delete_schedule(ALICE, view.schedule_id)
    assert (deleted.enabled, deleted.next_fire_at) == (False, None)
    assert (await harness.service.list_scheduled_workflows()).schedules == []
    with pytest.raises(NotFoundError):
        await harness.service.update_schedule(ALICE, view.schedule_id, enabled=True)


async def test_upcoming_executions_merge_every_schedule_in_time_order(harness: Harness) -> None:
    harness.clock.now = NINE
    hourly = await harness.schedule("0 * * * *")
    halves = await harness.schedule("15,45 * * * *", "Europe/Berlin")
    paused = await harness.schedule("*/5 * * * *", enabled=False)
    upcoming = await harness.service.get_upcoming_executions(2)
    assert [(u.schedule_id, u.fire.at_utc.strftime("%H:%M")) for u in upcoming.executions] == [
        (halves.schedule_id, "09:15"),
        (halves.schedule_id, "09:45"),
        (hourly.schedule_id, "10:00"),
        (halves.schedule_id, "10:15"),
        (halves.schedule_id, "10:45"),
        (hourly.schedule_id, "11:00"),
    ]
    assert paused.schedule_id not in {u.schedule_id for u in upcoming.executions}
    assert upcoming.executions[0].fire.at_local == "2026-03-01T10:15:00+01:00"
    assert not upcoming.truncated
    first_three = await harness.service.get_upcoming_executions(2, limit=3)
    assert len(first_three.executions) == 3 and first_three.truncated
    with pytest.raises(ValueError, match="hours_ahead"):
        await harness.service.get_upcoming_executions(0)


async def test_the_list_shows_each_schedules_last_fire_and_outcome(harness: Harness) -> None:
    harness.clock.now = NINE - timedelta(minutes=30)
    view = await harness.schedule()
    await harness.at(NINE)
    [listed] = (await harness.service.list_scheduled_workflows("nightly")).schedules
    assert (listed.schedule_id, listed.last_fire_at, listed.last_outcome) == (
        view.schedule_id,
        NINE,
        "started",
    )
    assert listed.next_fire_at == NINE + timedelta(hours=1)
    assert len(listed.next_fire_times) == 3
    assert (await harness.service.list_scheduled_workflows("other")).schedules == []
