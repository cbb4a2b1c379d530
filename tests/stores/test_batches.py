"""Batches: several changes of several executions in one transaction, all or nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError, InvalidTransitionError, NotFoundError
from opsgate.models import (
    ApprovalTransition,
    Change,
    EventType,
    Execution,
    ExecutionTransition,
    NewEvent,
    NewStepRun,
    NewStepRuns,
    StepRun,
    StepRunTransition,
)
from opsgate.stores import SQLStore
from tests.stores.builders import new_approval, running_execution

THREADS = 6


def _start(run: StepRun, owner: str | None = None) -> StepRunTransition:
    return StepRunTransition(
        step_run_id=run.id,
        trigger=Trigger.START,
        expected=StepRunStatus.PENDING,
        actor="worker-1",
        lease_owner=owner,
    )


def _progress(execution: Execution, n: int) -> NewEvent:
    return NewEvent(
        execution_id=execution.id, type=EventType.STEP_PROGRESSED, actor="worker-1", data={"n": n}
    )


def _state(store: SQLStore, *executions: Execution) -> list[object]:
    return [
        (store.get_execution(e.id), store.list_step_runs(e.id), store.list_events(e.id))
        for e in executions
    ]


def test_a_batch_writes_changes_of_several_executions_in_order_with_their_events(
    store: SQLStore,
) -> None:
    web, db = running_execution(store), running_execution(store)
    [check] = store.create_step_runs(web.id, [NewStepRun(step_id="check")])
    [backup] = store.create_step_runs(db.id, [NewStepRun(step_id="backup")])
    approval = new_approval(store, db)
    events = store.apply(
        [
            _start(check),
            NewEvent(
                execution_id=web.id,
                type=EventType.STEP_PROGRESSED,
                actor="worker-1",
                data={"sub_task": "probing"},
                step_id="check",
                attempt=1,
                changes={"current_sub_task": "probing", "progress": 0.5},
            ),
            _start(backup),
            NewStepRuns(execution_id=web.id, runs=(NewStepRun(step_id="verify"),)),
            ApprovalTransition(
                approval_id=approval.id,
                trigger=Trigger.APPROVE,
                expected=ApprovalStatus.PENDING,
                actor="bob",
            ),
            ExecutionTransition(
                execution_id=db.id,
                trigger=Trigger.REQUEST_APPROVAL,
                expected=ExecutionStatus.RUNNING,
                actor="worker-1",
                changes={"current_sub_task": "waiting for bob"},
            ),
        ]
    )
    assert [(e.execution_id, e.seq, e.type) for e in events] == [
        (web.id, 3, EventType.STEP_STARTED),
        (web.id, 4, EventType.STEP_PROGRESSED),
        (db.id, 4, EventType.STEP_STARTED),
        (db.id, 5, EventType.APPROVAL_GRANTED),
        (db.id, 6, EventType.EXECUTION_WAITING_APPROVAL),
    ]
    assert store.list_events(web.id)[-2:] == events[:2]
    assert store.list_events(db.id)[-3:] == events[2:]
    assert events[1].data == {"sub_task": "probing"} and events[1].step_id == "check"
    assert events[3].data == {"approval_id": approval.id}
    web_after, db_after = store.get_execution(web.id), store.get_execution(db.id)
    assert (web_after.last_seq, web_after.current_sub_task, web_after.progress) == (
        4,
        "probing",
        0.5,
    )
    assert (db_after.status, db_after.last_seq, db_after.current_sub_task) == (
        ExecutionStatus.WAITING_APPROVAL,
        6,
        "waiting for bob",
    )
    assert [(r.step_id, r.status) for r in store.list_step_runs(web.id)] == [
        ("check", StepRunStatus.RUNNING),
        ("verify", StepRunStatus.PENDING),
    ]
    assert store.get_approval(approval.id).status is ApprovalStatus.GRANTED


def test_one_refused_change_undoes_the_whole_batch_and_is_named(store: SQLStore) -> None:
    web, db = running_execution(store), running_execution(store)
    [check] = store.create_step_runs(web.id, [NewStepRun(step_id="check")])
    [backup] = store.create_step_runs(db.id, [NewStepRun(step_id="backup")])
    store.transition_step_run(backup.id, Trigger.START, expected=StepRunStatus.PENDING, actor="w")
    before = _state(store, web, db)
    changes: list[Change] = [
        _start(check),
        _progress(web, 1),
        NewStepRuns(execution_id=web.id, runs=(NewStepRun(step_id="verify"),)),
        _start(backup),  # lost: it is running already
        _progress(db, 2),
    ]
    with pytest.raises(
        ConflictError,
        match=rf"change 4 of 5 \(start step run {backup.id}\) was refused, so nothing of the "
        rf"batch was written: cannot start step run {backup.id}: it is now running, not pending",
    ):
        store.apply(changes)
    assert _state(store, web, db) == before


def test_a_batch_with_a_transition_the_table_refuses_writes_nothing(store: SQLStore) -> None:
    execution = running_execution(store)
    [check] = store.create_step_runs(execution.id, [NewStepRun(step_id="check")])
    before = _state(store, execution)
    refused = StepRunTransition(
        step_run_id=check.id, trigger=Trigger.SUCCEED, expected=StepRunStatus.PENDING, actor="w"
    )
    with pytest.raises(InvalidTransitionError, match=f"cannot succeed step run {check.id}"):
        store.apply([_progress(execution, 1), refused])
    assert _state(store, execution) == before


def test_a_batch_naming_an_unknown_record_writes_nothing(store: SQLStore) -> None:
    execution = running_execution(store)
    before = _state(store, execution)
    missing = StepRunTransition(
        step_run_id="sr_missing", trigger=Trigger.START, expected=StepRunStatus.PENDING, actor="w"
    )
    with pytest.raises(NotFoundError, match="step run 'sr_missing'"):
        store.apply([_progress(execution, 1), missing])
    assert _state(store, execution) == before


def test_a_guarded_batch_of_a_worker_that_lost_one_lease_writes_nothing(store: SQLStore) -> None:
    mine, theirs = running_execution(store), running_execution(store)
    [run] = store.create_step_runs(mine.id, [NewStepRun(step_id="check")])
    store.claim_executions("worker-1", lease_seconds=30, limit=2)
    store.release_lease(theirs.id, "worker-1")
    store.claim_executions("worker-2", lease_seconds=30, limit=2)
    before = _state(store, mine, theirs)
    guarded = NewEvent(
        execution_id=theirs.id,
        type=EventType.STEP_PROGRESSED,
        actor="worker-1",
        lease_owner="worker-1",
    )
    with pytest.raises(ConflictError, match=r"change 2 of 2 .*worker-2 holds it now"):
        store.apply([_start(run, owner="worker-1"), guarded])
    assert _state(store, mine, theirs) == before


def test_an_empty_batch_writes_nothing(store: SQLStore) -> None:
    assert store.apply([]) == []


def test_a_batch_of_new_step_runs_only_appends_no_event(store: SQLStore) -> None:
    execution = running_execution(store)
    runs = (NewStepRun(step_id="check", item_key="web-1"), NewStepRun(step_id="notify"))
    assert store.apply([NewStepRuns(execution_id=execution.id, runs=runs)]) == []
    assert store.apply([NewStepRuns(execution_id=execution.id, runs=runs)]) == []
    assert len(store.list_step_runs(execution.id)) == 2
    assert store.get_execution(execution.id).last_seq == 2


def test_interleaved_batches_number_each_executions_events_without_gaps(store: SQLStore) -> None:
    executions = [running_execution(store) for _ in range(3)]
    runs = {
        e.id: store.create_step_runs(
            e.id,
            [
                NewStepRun(step_id="check", item_key=f"{t}-{n}")
                for t in range(THREADS)
                for n in range(4)
            ],
        )
        for e in executions
    }
    start = threading.Barrier(THREADS)

    def drive(thread: int) -> None:
        # Threads walk the executions in different orders, so their batches cross.
        order = executions[thread % 3 :] + executions[: thread % 3]
        if thread % 2:
            order.reverse()
        start.wait()
        for n in range(4):
            batch: list[Change] = []
            for execution in order:
                [run] = [r for r in runs[execution.id] if r.item_key == f"{thread}-{n}"]
                batch += [_start(run), _progress(execution, n)]
            store.apply(batch)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(drive, range(THREADS)))
    for execution in executions:
        seqs = [event.seq for event in store.list_events(execution.id, limit=500)]
        assert seqs == list(range(1, 2 + 2 * 4 * THREADS + 1))
        assert store.get_execution(execution.id).last_seq == len(seqs)
        assert {r.status for r in store.list_step_runs(execution.id)} == {StepRunStatus.RUNNING}
