"""Schedules: saved, changed, deleted softly; each fire time recorded once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from opsgate.engine.statuses import ExecutionStatus, Trigger
from opsgate.errors import ConflictError, NotFoundError
from opsgate.models import (
    EventType,
    Execution,
    FireOutcome,
    MisfirePolicy,
    NewFire,
    OverlapPolicy,
)
from opsgate.stores import SQLStore
from opsgate.stores.tables import events, schedule_fires
from tests.stores.builders import BLUEPRINT, new_execution, new_schedule

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
    tomorrow = FIRE_AT + timedelta(days=1)
    store.record_fire(schedule.id, FIRE_AT, FireOutcome.STARTED, next_fire_at=tomorrow)
    same_instant = FIRE_AT.astimezone(timezone(timedelta(hours=1)))
    with pytest.raises(ConflictError, match=f"schedule {schedule.id} already recorded its fire"):
        store.record_fire(schedule.id, same_instant, FireOutcome.SKIPPED, next_fire_at=None)
    assert store.get_schedule(schedule.id).last_outcome is FireOutcome.STARTED
    later = store.record_fire(schedule.id, tomorrow, FireOutcome.MISFIRED, next_fire_at=None)
    assert later.outcome is FireOutcome.MISFIRED


def test_a_fire_of_an_unknown_schedule_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="schedule 'sch_missing'"):
        store.record_fire("sch_missing", FIRE_AT, FireOutcome.STARTED, next_fire_at=None)


def test_a_fire_is_refused_when_it_is_no_longer_the_schedules_next(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    with pytest.raises(ConflictError, match="no longer due at"):
        store.record_fire(
            schedule.id, FIRE_AT - timedelta(hours=1), FireOutcome.SKIPPED, next_fire_at=None
        )
    store.update_schedule(schedule.id, actor="alice", enabled=False)
    with pytest.raises(ConflictError, match="changed, paused, deleted or fired"):
        store.record_fire(schedule.id, FIRE_AT, FireOutcome.STARTED, next_fire_at=None)
    assert store.get_schedule(schedule.id).last_fire_at is None
    assert _schedule_events(store, schedule.id)[-1][0] is EventType.SCHEDULE_UPDATED


def test_an_execution_and_its_fire_are_created_together_or_not_at_all(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    tomorrow = FIRE_AT + timedelta(days=1)
    fire = NewFire(schedule_id=schedule.id, fire_at=FIRE_AT, next_fire_at=tomorrow, queue=True)
    execution = _fired_execution(store, fire)
    assert execution.schedule_id == schedule.id
    [recorded] = _fires(store, schedule.id)
    assert (recorded.fire_at, recorded.outcome, recorded.execution_id) == (
        FIRE_AT,
        FireOutcome.STARTED,
        execution.id,
    )
    assert store.get_schedule(schedule.id).next_fire_at == tomorrow
    assert store.release_locks(execution.id, actor="test") == []  # held, nobody waited
    with pytest.raises(ConflictError, match="already recorded its fire"):
        _fired_execution(store, fire)
    assert len(store.list_executions(limit=10).items) == 1
    assert [e for e in store.list_events(execution.id) if e.type is EventType.LOCK_ACQUIRED]


def test_a_fire_refused_for_a_held_lock_is_recorded_and_the_schedule_moves_on(
    store: SQLStore,
) -> None:
    """``on_conflict: reject``: the fire is decided (not fired again next round), its
    execution failed, and no place is kept, the schedule's own included."""
    holder = new_execution(store, locks=[("service:nginx", 1)])
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    tomorrow = FIRE_AT + timedelta(days=1)
    fire = NewFire(schedule_id=schedule.id, fire_at=FIRE_AT, next_fire_at=tomorrow, queue=True)
    refused = _fired_execution(store, fire, locks=[("service:nginx", 1)], refuse_queued=True)
    assert refused.status is ExecutionStatus.FAILED
    [recorded] = _fires(store, schedule.id)
    assert (recorded.outcome, recorded.execution_id) == (FireOutcome.STARTED, refused.id)
    assert store.get_schedule(schedule.id).next_fire_at == tomorrow
    released = [e.data["key"] for e in store.list_events(refused.id) if e.type == "lock.released"]
    assert released == [f"schedule:{schedule.id}", "service:nginx"]
    assert store.release_locks(holder.id, actor="test") == []  # nobody left waiting


def test_due_schedules_are_the_enabled_ones_whose_fire_has_come(store: SQLStore) -> None:
    due = new_schedule(store, next_fire_at=FIRE_AT)
    later = new_schedule(store, next_fire_at=FIRE_AT + timedelta(seconds=1))
    paused = new_schedule(store, next_fire_at=FIRE_AT - timedelta(hours=1), enabled=False)
    gone = new_schedule(store, next_fire_at=FIRE_AT - timedelta(hours=2))
    store.delete_schedule(gone.id, actor="alice")
    assert [s.id for s in store.due_schedules(FIRE_AT)] == [due.id]
    assert store.next_schedule_fire_at() == FIRE_AT
    assert {s.id for s in store.due_schedules(FIRE_AT + timedelta(seconds=1))} == {
        due.id,
        later.id,
    }
    assert paused.id not in {s.id for s in store.due_schedules(FIRE_AT + timedelta(days=1))}


def test_the_next_fire_of_no_schedule_is_none(store: SQLStore) -> None:
    assert store.next_schedule_fire_at() is None
    new_schedule(store, next_fire_at=None)
    assert store.next_schedule_fire_at() is None


def test_an_idempotency_key_saves_one_schedule_per_owner(store: SQLStore) -> None:
    first = new_schedule(store, idempotency_key="k", misfire_grace_seconds=90)
    again = new_schedule(store, idempotency_key="k", cron="0 4 * * *")
    other = new_schedule(store, idempotency_key="k", owner="bob")
    assert again == first and first.misfire_grace_seconds == 90
    assert other.id != first.id
    assert store.find_schedule("alice", "k") == first
    assert store.find_schedule("alice", "nope") is None
    assert len(store.list_schedules()) == 2


def test_active_executions_of_a_schedule_are_the_ones_not_ended(store: SQLStore) -> None:
    schedule = new_schedule(store, next_fire_at=FIRE_AT)
    fire = NewFire(
        schedule_id=schedule.id, fire_at=FIRE_AT, next_fire_at=FIRE_AT + timedelta(days=1)
    )
    running = _fired_execution(store, fire)
    assert [e.id for e in store.active_schedule_executions(schedule.id)] == [running.id]
    store.transition_execution(
        running.id, Trigger.CANCEL, expected=ExecutionStatus.PENDING, actor="test"
    )
    assert store.active_schedule_executions(schedule.id) == []


def _fired_execution(
    store: SQLStore,
    fire: NewFire,
    *,
    locks: Sequence[tuple[str, int]] = (),
    refuse_queued: bool = False,
) -> Execution:
    snapshot = store.save_snapshot("restart_service", "1.2.0", BLUEPRINT)
    execution, created = store.create_execution(
        workflow_name="restart_service",
        blueprint_digest=snapshot.digest,
        parameters={"service": "nginx"},
        requested_by="alice",
        fire=fire,
        locks=locks,
        refuse_queued=refuse_queued,
    )
    assert created
    return execution


def _fires(store: SQLStore, schedule_id: str) -> list[sa.Row[Any]]:
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(schedule_fires).where(schedule_fires.c.schedule_id == schedule_id)
            ).all()
        )
