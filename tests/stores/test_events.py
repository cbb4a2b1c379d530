"""The event log and what the columns hold: gapless seqs, enum values, aware UTC times."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from opsgate.engine.statuses import ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError, NotFoundError
from opsgate.models import EventType, NewStepRun
from opsgate.stores import SQLStore
from tests.stores.builders import new_execution, running_execution

THREADS = 8


def test_an_event_without_a_status_change_takes_the_next_seq_and_may_update_progress(
    store: SQLStore,
) -> None:
    execution = running_execution(store)
    event = store.append_event(
        execution.id,
        EventType.STEP_PROGRESSED,
        actor="worker-1",
        data={"sub_task": "stopping nginx"},
        step_id="restart",
        target="web-1",
        attempt=1,
        current_sub_task="stopping nginx",
        progress=0.25,
    )
    assert (event.seq, event.step_id, event.target, event.attempt) == (3, "restart", "web-1", 1)
    after = store.get_execution(execution.id)
    assert (after.last_seq, after.current_sub_task, after.progress) == (3, "stopping nginx", 0.25)
    assert after.status is ExecutionStatus.RUNNING


def test_events_are_read_in_order_after_a_seq_and_a_page_at_a_time(store: SQLStore) -> None:
    execution = running_execution(store)
    for n in range(5):
        store.append_event(execution.id, EventType.STEP_PROGRESSED, actor="w", data={"n": n})
    assert [e.seq for e in store.list_events(execution.id)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.seq for e in store.list_events(execution.id, after_seq=2, limit=3)] == [3, 4, 5]
    assert store.list_events(execution.id, after_seq=7) == []


def test_events_of_an_unknown_execution_are_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.list_events("exe_missing")
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.append_event("exe_missing", EventType.STEP_PROGRESSED, actor="worker-1")


def _assert_gapless(store: SQLStore, execution_id: str) -> None:
    seqs = [event.seq for event in store.list_events(execution_id, limit=500)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert store.get_execution(execution_id).last_seq == len(seqs)


def test_seqs_stay_gapless_and_unique_under_interleaved_transitions(store: SQLStore) -> None:
    execution = running_execution(store)
    runs = store.create_step_runs(
        execution.id, [NewStepRun(step_id="check", item_key=f"web-{n}") for n in range(24)]
    )
    start = threading.Barrier(THREADS)

    def drive(index: int) -> None:
        start.wait()
        for run in runs[index::THREADS]:
            store.transition_step_run(
                run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="w"
            )
            store.append_event(execution.id, EventType.STEP_PROGRESSED, actor="w")
            store.transition_step_run(
                run.id, Trigger.SUCCEED, expected=StepRunStatus.RUNNING, actor="w"
            )

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(drive, range(THREADS)))
    _assert_gapless(store, execution.id)
    assert len(store.list_events(execution.id, limit=500)) == 2 + 3 * len(runs)


def test_racing_workers_start_a_step_once_and_the_losers_leave_no_gap(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, [NewStepRun(step_id="restart")])
    start = threading.Barrier(THREADS)

    def race(worker: int) -> str:
        start.wait()
        try:
            store.transition_step_run(
                run.id, Trigger.START, expected=StepRunStatus.PENDING, actor=f"w{worker}"
            )
        except ConflictError:
            return "lost"
        store.append_event(execution.id, EventType.STEP_PROGRESSED, actor=f"w{worker}")
        return "won"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(race, range(THREADS)))
    assert sorted(outcomes) == ["lost"] * (THREADS - 1) + ["won"]
    assert store.get_step_run(run.id).attempt == 1
    _assert_gapless(store, execution.id)


def test_enums_are_stored_as_their_values(store: SQLStore) -> None:
    execution = running_execution(store)
    store.transition_execution(
        execution.id, Trigger.REQUEST_APPROVAL, expected=ExecutionStatus.RUNNING, actor="w"
    )
    with store.engine.connect() as conn:
        status = conn.execute(
            sa.text("SELECT status FROM executions WHERE id = :id"), {"id": execution.id}
        ).scalar_one()
        types = conn.execute(
            sa.text("SELECT type FROM events WHERE execution_id = :id ORDER BY seq"),
            {"id": execution.id},
        ).scalars()
        assert (type(status), status) == (str, "waiting_approval")
        assert list(types) == [
            "execution.created",
            "execution.started",
            "execution.waiting_approval",
        ]
        if conn.dialect.name == "postgresql":
            enum_types = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE t.typtype = 'e' AND n.nspname = current_schema()"
                )
            ).scalar_one()
            assert enum_types == 0


def test_times_come_back_as_aware_utc_whatever_offset_they_were_written_with(
    store: SQLStore,
) -> None:
    berlin_noon = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    execution = new_execution(store, deadline_at=berlin_noon)
    for read in (execution, store.get_execution(execution.id)):
        assert read.deadline_at == berlin_noon
        assert read.deadline_at is not None and read.deadline_at.tzinfo is UTC
        assert read.deadline_at.hour == 11
        assert read.created_at.tzinfo is UTC
    with store.engine.connect() as conn:
        column = (
            "deadline_at" if conn.dialect.name == "sqlite" else "deadline_at AT TIME ZONE 'UTC'"
        )
        raw, error_is_null = conn.execute(
            sa.text(f"SELECT {column}, error IS NULL FROM executions WHERE id = :id"),
            {"id": execution.id},
        ).one()
    assert str(raw).startswith("2026-03-01 11:00:00")
    assert error_is_null


def test_naive_times_are_refused_and_nothing_is_written(store: SQLStore) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime 2026-03-01T12:00:00 refused"):
        new_execution(store, deadline_at=datetime(2026, 3, 1, 12, 0))
    assert store.list_executions().items == []
