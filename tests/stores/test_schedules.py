"""Schedules: saved, changed, deleted softly; each fire time recorded once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from opsgate.errors import ConflictError, NotFoundError
from opsgate.models import EventType, FireOutcome, MisfirePolicy, OverlapPolicy
from opsgate.stores import SQLStore
from opsgate.stores.tables import events
from tests.stores.builders import new_execution, new_schedule

FIRE_AT = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def _schedule_events(store: SQLStore, schedule_id: str) -> list[tuple[EventType, str]]:
    # Schedule events have no execution, so no seq: read them straight from the table.
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.type, events.c.actor)
            .where(events.c.schedule_id == schedule_id)
            .order_by(events.c.id)
        ).all()
    return [(row.type, row.actor) for row in rows]


def test_a_schedule_is_saved_as_given_with_its_created_event(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT, start_at=FIRE_AT - timedelta(days=1))
    assert store.get_schedule(schedule.id) == schedule
    assert (schedule.overlap_policy, schedule.misfire_policy) == (
        OverlapPolicy.SKIP,
        MisfirePolicy.RUN_ONCE,
    )
    assert (schedule.enabled, schedule.next_fire_at, schedule.last_outcome) == (
        True,
        FIRE_AT,
        None,
    )
    assert _schedule_events(store, schedule.id) == [(EventType.SCHEDULE_CREATED, "alice")]


def test_updating_a_schedule_changes_only_the_given_fields(store: SQLStore) -> None:
    schedule = new_schedule(store)
    updated = store.update_schedule(
        schedule.id,
        actor="bob",
        cron="30 4 * * 1-5",
        overlap_policy=OverlapPolicy.QUEUE,
        next_fire_at=FIRE_AT,
        enabled=False,
    )
    assert (updated.cron, updated.overlap_policy, updated.enabled, updated.next_fire_at) == (
        "30 4 * * 1-5",
        OverlapPolicy.QUEUE,
        False,
        FIRE_AT,
    )
    assert (updated.timezone, updated.parameters) == (schedule.timezone, schedule.parameters)
    assert updated.updated_at > schedule.updated_at
    assert store.get_schedule(schedule.id) == updated
    assert _schedule_events(store, schedule.id)[-1] == (EventType.SCHEDULE_UPDATED, "bob")


def test_a_deleted_schedule_is_gone_for_users_but_its_history_stays(store: SQLStore) -> None:
    kept = new_schedule(store)
    deleted = new_schedule(store, next_fire_at=FIRE_AT)
    store.record_fire(deleted.id, FIRE_AT, FireOutcome.SKIPPED, next_fire_at=None)
    gone = store.delete_schedule(deleted.id, actor="bob")
    assert (gone.enabled, gone.next_fire_at) == (False, None)
    with pytest.raises(NotFoundError, match=f"schedule '{deleted.id}' not found"):
        store.get_schedule(deleted.id)
    with pytest.raises(NotFoundError):
        store.update_schedule(deleted.id, actor="bob", enabled=True)
    with pytest.raises(NotFoundError):
        store.delete_schedule(deleted.id, actor="bob")
    assert [s.id for s in store.list_schedules()] == [kept.id]
    assert _schedule_events(store, deleted.id)[-1] == (EventType.SCHEDULE_DELETED, "bob")


def test_schedules_are_listed_by_workflow(store: SQLStore) -> None:
    restart = new_schedule(store)
    new_schedule(store, workflow_name="reboot_host")
    assert [s.id for s in store.list_schedules(workflow_name="restart_service")] == [restart.id]
    assert len(store.list_schedules()) == 2


def test_recording_a_fire_moves_the_schedule_on(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    execution = new_execution(store)
    fire = store.record_fire(
        schedule.id,
        FIRE_AT,
        FireOutcome.STARTED,
        execution_id=execution.id,
        next_fire_at=FIRE_AT + timedelta(days=1),
    )
    assert (fire.schedule_id, fire.fire_at, fire.outcome, fire.execution_id) == (
        schedule.id,
        FIRE_AT,
        FireOutcome.STARTED,
        execution.id,
    )
    after = store.get_schedule(schedule.id)
    assert (after.last_fire_at, after.last_outcome, after.next_fire_at) == (
        FIRE_AT,
        FireOutcome.STARTED,
        FIRE_AT + timedelta(days=1),
    )
    assert _schedule_events(store, schedule.id)[-1] == (EventType.SCHEDULE_FIRED, "scheduler")


def test_a_fire_time_is_recorded_once_whatever_offset_names_it(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    store.record_fire(schedule.id, FIRE_AT, FireOutcome.STARTED, next_fire_at=None)
    same_instant = FIRE_AT.astimezone(timezone(timedelta(hours=1)))
    with pytest.raises(ConflictError, match=f"schedule {schedule.id} already recorded its fire"):
        store.record_fire(schedule.id, same_instant, FireOutcome.SKIPPED, next_fire_at=None)
    assert store.get_schedule(schedule.id).last_outcome is FireOutcome.STARTED
    later = store.record_fire(
        schedule.id, FIRE_AT + timedelta(days=1), FireOutcome.MISFIRED, next_fire_at=None
    )
    assert later.outcome is FireOutcome.MISFIRED


def test_a_fire_of_an_unknown_schedule_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="schedule 'sch_missing'"):
        store.record_fire("sch_missing", FIRE_AT, FireOutcome.STARTED, next_fire_at=None)
