"""The worker's hot path: batches that return their records, the lease given back with the last
changes, step run ids known before the runs are written, and statements compiled only once."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from opsgate.engine.statuses import ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError
from opsgate.models import (
    Execution,
    ExecutionTransition,
    NewStepRun,
    NewStepRuns,
    StepRun,
    StepRunTransition,
)
from opsgate.stores import SQLStore, sql
from opsgate.stores.sql import planned_step_runs, step_run_id
from tests.clocks import FakeClock
from tests.stores.builders import running_execution

OWNER = "worker-1"


def _claimed(store: SQLStore) -> Execution:
    execution = running_execution(store)
    [claimed] = store.claim_executions(OWNER, lease_seconds=30, limit=1)
    assert claimed.id == execution.id
    return claimed


def _create_and_start(execution: Execution, step_id: str) -> list[NewStepRuns | StepRunTransition]:
    """What a runner writes to start a new step: the run, and its start, in one batch."""
    return [
        NewStepRuns(
            execution_id=execution.id, runs=(NewStepRun(step_id=step_id),), lease_owner=OWNER
        ),
        StepRunTransition(
            step_run_id=step_run_id(execution.id, step_id, ""),
            trigger=Trigger.START,
            expected=StepRunStatus.PENDING,
            actor=OWNER,
            lease_owner=OWNER,
        ),
    ]


def test_a_run_is_created_and_started_in_one_batch_under_the_id_known_before(
    store: SQLStore, clock: FakeClock
) -> None:
    execution = _claimed(store)
    [planned] = planned_step_runs(execution.id, [NewStepRun(step_id="check")], clock())
    [started] = store.write(_create_and_start(execution, "check"))  # one record: the newest
    assert isinstance(started, StepRun)
    assert started.id == planned.id == step_run_id(execution.id, "check", "")
    assert (started.status, started.attempt) == ("running", 1)
    assert started.started_at is not None
    assert store.get_step_run(planned.id) == started
    # the planned record is what creating it wrote, before the start changed it
    unstarted = dataclasses.replace(
        started, status=StepRunStatus.PENDING, attempt=0, started_at=None
    )
    at = {"created_at": clock(), "updated_at": clock()}  # the clock moved between the two
    assert dataclasses.replace(unstarted, **at) == dataclasses.replace(planned, **at)
    assert [e.type for e in store.list_events(execution.id)][-1] == "step.started"


def test_step_run_ids_differ_by_execution_step_and_item() -> None:
    ids = {
        step_run_id("exe_1", "check", ""),
        step_run_id("exe_2", "check", ""),
        step_run_id("exe_1", "verify", ""),
        step_run_id("exe_1", "check", "web-1"),
        step_run_id("exe_1", "check\x00", ""),
    }
    assert len(ids) == 5
    assert all(i.startswith("sr_") for i in ids)
    assert step_run_id("exe_1", "check", "") == step_run_id("exe_1", "check", "")


def test_a_refused_change_writes_nothing_of_the_batch_and_keeps_the_lease(
    store: SQLStore,
) -> None:
    execution = _claimed(store)
    store.write(_create_and_start(execution, "check"))
    before = (store.get_execution(execution.id), store.list_events(execution.id))
    [again] = _create_and_start(execution, "check")[1:]  # it runs already: the CAS fails
    with pytest.raises(ConflictError, match=r"change 3 of 3 .*nothing of the batch"):
        store.release_lease(
            execution.id, OWNER, changes=[*_create_and_start(execution, "verify"), again]
        )
    assert (store.get_execution(execution.id), store.list_events(execution.id)) == before
    assert [r.step_id for r in store.list_step_runs(execution.id)] == ["check"]


def test_the_last_changes_and_the_lease_release_are_one_transaction(
    store: SQLStore, clock: FakeClock
) -> None:
    execution = _claimed(store)
    [started] = store.write(_create_and_start(execution, "check"))
    finish = [
        StepRunTransition(
            step_run_id=started.id,
            trigger=Trigger.SUCCEED,
            expected=StepRunStatus.RUNNING,
            actor=OWNER,
            lease_owner=OWNER,
            changes={"outputs": {"ok": True}},
        ),
        ExecutionTransition(
            execution_id=execution.id,
            trigger=Trigger.SUCCEED,
            expected=ExecutionStatus.RUNNING,
            actor=OWNER,
            lease_owner=OWNER,
        ),
    ]
    commits: list[object] = []

    def commit(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(store.engine, "commit", commit)
    wake_at = clock() + timedelta(minutes=5)
    released = store.release_lease(execution.id, OWNER, wake_at=wake_at, changes=finish)
    sa.event.remove(store.engine, "commit", commit)
    assert len(commits) == 1
    assert (released.status, released.lease_owner, released.wake_at) == ("succeeded", None, wake_at)
    assert store.get_step_run(started.id).outputs == {"ok": True}
    types = [e.type for e in store.list_events(execution.id)]
    assert types[-2:] == ["step.succeeded", "execution.succeeded"]
    assert [e.seq for e in store.list_events(execution.id)] == list(range(1, len(types) + 1))


def test_a_release_without_the_lease_writes_none_of_its_changes(store: SQLStore) -> None:
    execution = _claimed(store)
    with pytest.raises(ConflictError, match="does not hold the lease"):
        store.release_lease(execution.id, "worker-2", changes=_create_and_start(execution, "x"))
    assert store.list_step_runs(execution.id) == []
    assert store.get_execution(execution.id).lease_owner == OWNER


def test_hot_path_statements_are_prepared_once_and_run_on_the_driver_cursor(
    store: SQLStore,
) -> None:
    """Building statements on every call was the engine's main cost, and SQLAlchemy's execution
    of a cached one the next (about 55 µs each): a warm batch, claim and wake-up look compile
    nothing and run every statement on the driver's cursor, without an execution context."""
    warm = _claimed(store)
    store.write(_create_and_start(warm, "check"))
    store.next_wake_at()
    execution = _claimed(store)
    prepared_before = len(sql._PREPARED)
    through: list[str] = []

    def record(*args: Any) -> None:
        _conn, _cursor, statement, _parameters, context, _many = args
        if not statement.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE, see database.py
            through.append(f"{'driver' if context is None else 'sqlalchemy'}: {statement}")

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.write(_create_and_start(execution, "check"))
        store.claim_executions("worker-2", lease_seconds=30, limit=5)
        store.next_wake_at()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert len(through) >= 6, through
    assert [line for line in through if not line.startswith("driver")] == []
    assert len(sql._PREPARED) == prepared_before


def test_new_runs_are_checked_against_their_own_owner_after_a_guarded_change(
    store: SQLStore,
) -> None:
    execution = _claimed(store)
    [start] = _create_and_start(execution, "check")[1:]
    store.write(_create_and_start(execution, "check")[:1])
    stranger = NewStepRuns(
        execution_id=execution.id, runs=(NewStepRun(step_id="verify"),), lease_owner="worker-2"
    )
    with pytest.raises(ConflictError, match="worker-2 does not hold the lease"):
        store.write([start, stranger])
    assert [r.status for r in store.list_step_runs(execution.id)] == ["pending"]


def test_a_batch_returns_the_runs_it_created_but_did_not_start(store: SQLStore) -> None:
    execution = _claimed(store)
    create, start = _create_and_start(execution, "check")
    assert isinstance(create, NewStepRuns)
    both = dataclasses.replace(create, runs=(*create.runs, NewStepRun(step_id="verify")))
    started, waiting = store.write([both, start])
    assert isinstance(started, StepRun) and isinstance(waiting, StepRun)
    assert (started.step_id, started.status) == ("check", "running")
    assert (waiting.step_id, waiting.status, waiting.attempt) == ("verify", "pending", 0)
    assert store.get_step_run(waiting.id) == waiting
