"""Step runs: creation per fan-out item, attempts, persisted retry times, compare-and-set."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa

from opsgate.engine.statuses import StepRunStatus, Trigger
from opsgate.errors import ConflictError, InvalidTransitionError, NotFoundError, StoreError
from opsgate.models import EventType, NewStepRun, StepRun
from opsgate.stores import SQLStore
from tests.stores.builders import running_execution

FAN_OUT = [
    NewStepRun(step_id="check", item_key="web-1", item_index=0, target="web-1"),
    NewStepRun(step_id="check", item_key="web-2", item_index=1, target="web-2"),
    NewStepRun(step_id="notify"),
]


def test_step_runs_are_created_pending_one_per_fan_out_item(store: SQLStore) -> None:
    execution = running_execution(store)
    runs = store.create_step_runs(execution.id, FAN_OUT)
    assert [(r.step_id, r.item_key, r.target, r.status, r.attempt) for r in runs] == [
        ("check", "web-1", "web-1", StepRunStatus.PENDING, 0),
        ("check", "web-2", "web-2", StepRunStatus.PENDING, 0),
        ("notify", "", None, StepRunStatus.PENDING, 0),
    ]
    assert store.list_step_runs(execution.id) == runs
    assert store.get_step_run(runs[0].id) == runs[0]


def test_creating_the_same_step_runs_again_returns_the_existing_ones(store: SQLStore) -> None:
    execution = running_execution(store)
    first = store.create_step_runs(execution.id, FAN_OUT)
    started, _ = store.transition_step_run(
        first[0].id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
    )
    again = store.create_step_runs(execution.id, [*FAN_OUT, NewStepRun(step_id="verify")])
    assert again[:3] == [started, *first[1:]]
    assert len(store.list_step_runs(execution.id)) == 4


def test_step_runs_of_an_unknown_execution_are_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.create_step_runs("exe_missing", FAN_OUT)
    with pytest.raises(NotFoundError, match="step run 'sr_missing'"):
        store.get_step_run("sr_missing")


def test_step_events_are_numbered_after_the_executions_last_event(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    started, event = store.transition_step_run(
        run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
    )
    assert (event.seq, event.type) == (3, EventType.STEP_STARTED)
    assert (event.step_id, event.target, event.attempt) == ("check", "web-1", 1)
    assert event.data == {"step_run_id": run.id}
    assert store.get_execution(execution.id).last_seq == 3
    assert started.started_at == event.occurred_at


def test_each_start_counts_an_attempt_and_a_retry_keeps_its_due_time(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    first, _ = store.transition_step_run(
        run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
    )
    assert first.started_at is not None
    due = first.started_at + timedelta(seconds=2)
    retrying, event = store.transition_step_run(
        run.id,
        Trigger.RETRY,
        expected=StepRunStatus.RUNNING,
        actor="worker-1",
        data={"error": "connection refused"},
        next_attempt_at=due,
        error={"type": "ConnectionError", "retryable": True},
    )
    assert (retrying.status, retrying.attempt, retrying.next_attempt_at) == (
        StepRunStatus.RETRYING,
        1,
        due,
    )
    assert store.get_step_run(run.id).next_attempt_at == due
    assert (event.type, event.attempt) == (EventType.STEP_RETRYING, 1)

    second, event = store.transition_step_run(
        run.id, Trigger.START, expected=StepRunStatus.RETRYING, actor="worker-1"
    )
    assert (second.attempt, second.next_attempt_at, event.attempt) == (2, None, 2)
    assert second.started_at == first.started_at

    done, event = store.transition_step_run(
        run.id,
        Trigger.SUCCEED,
        expected=StepRunStatus.RUNNING,
        actor="worker-1",
        outputs={"stdout": "active"},
    )
    assert (done.status, done.outputs, done.finished_at) == (
        StepRunStatus.SUCCEEDED,
        {"stdout": "active"},
        event.occurred_at,
    )


def test_a_lost_step_compare_and_set_changes_nothing_and_uses_no_seq(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    with pytest.raises(ConflictError, match=f"step run {run.id}: it is now pending, not running"):
        store.transition_step_run(
            run.id, Trigger.SUCCEED, expected=StepRunStatus.RUNNING, actor="worker-1"
        )
    assert store.get_step_run(run.id) == run
    assert store.get_execution(execution.id) == execution
    _, event = store.transition_step_run(
        run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
    )
    assert event.seq == 3


def test_a_transition_of_an_unknown_step_run_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="step run 'sr_missing'"):
        store.transition_step_run(
            "sr_missing", Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
        )


def test_a_compensated_step_run_is_rolled_back(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    for trigger, expected in [
        (Trigger.START, StepRunStatus.PENDING),
        (Trigger.SUCCEED, StepRunStatus.RUNNING),
    ]:
        store.transition_step_run(run.id, trigger, expected=expected, actor="worker-1")
    undone, event = store.transition_step_run(
        run.id, Trigger.COMPENSATE, expected=StepRunStatus.SUCCEEDED, actor="worker-1"
    )
    assert (undone.status, event.type) == (StepRunStatus.ROLLED_BACK, EventType.STEP_ROLLED_BACK)


def test_a_failing_step_event_insert_undoes_the_step_change_and_its_seq(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (execution_id, seq, type, actor, data, occurred_at) "
                "VALUES (:id, 3, 'step.progressed', 'intruder', '{}', :at)"
            ),
            {"id": execution.id, "at": execution.created_at.replace(tzinfo=None)},
        )
    with pytest.raises(StoreError, match="nothing was written"):
        store.transition_step_run(
            run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
        )
    assert store.get_step_run(run.id) == run
    assert store.get_execution(execution.id) == execution


def _ended(store: SQLStore, run_id: str, *path: Trigger) -> StepRun:
    run = store.get_step_run(run_id)
    for trigger in path:
        run, _ = store.transition_step_run(run.id, trigger, expected=run.status, actor="worker-1")
    return run


def test_a_rerun_makes_a_run_that_ended_badly_pending_afresh(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    failed = _ended(store, run.id, Trigger.START, Trigger.RETRY, Trigger.START)
    failed, _ = store.transition_step_run(
        run.id,
        Trigger.FAIL,
        expected=StepRunStatus.RUNNING,
        actor="worker-1",
        error={"type": "StepError"},
        outputs={"stdout": "half"},
    )
    assert (failed.attempt, failed.finished_at is not None) == (2, True)
    again, event = store.transition_step_run(
        run.id,
        Trigger.RERUN,
        expected=StepRunStatus.FAILED,
        actor="alice",
        data={"previous_attempts": 2},
    )
    assert again == dataclasses.replace(
        failed,
        status=StepRunStatus.PENDING,
        attempt=0,
        started_at=None,
        finished_at=None,
        outputs=None,
        error=None,
        updated_at=event.occurred_at,
    )
    assert (event.type, event.actor, event.data) == (
        EventType.STEP_RERUN_REQUESTED,
        "alice",
        {"step_run_id": run.id, "previous_attempts": 2},
    )
    restarted, event = store.transition_step_run(
        run.id, Trigger.START, expected=StepRunStatus.PENDING, actor="worker-1"
    )
    assert (restarted.attempt, event.attempt, restarted.started_at) == (1, 1, event.occurred_at)


@pytest.mark.parametrize(
    "path",
    [
        (Trigger.START, Trigger.TIME_OUT),
        (Trigger.START, Trigger.INTERRUPT),
        (Trigger.CANCEL,),
    ],
    ids=["timed_out", "interrupted", "cancelled"],
)
def test_timed_out_interrupted_and_cancelled_runs_can_be_rerun(
    store: SQLStore, path: tuple[Trigger, ...]
) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    ended = _ended(store, run.id, *path)
    again, _ = store.transition_step_run(
        run.id, Trigger.RERUN, expected=ended.status, actor="alice"
    )
    assert again.status is StepRunStatus.PENDING


def test_a_retry_that_the_deadline_overtook_fails(store: SQLStore) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    retrying = _ended(store, run.id, Trigger.START, Trigger.RETRY)
    failed, event = store.transition_step_run(
        run.id, Trigger.FAIL, expected=retrying.status, actor="worker-1"
    )
    assert (failed.status, failed.finished_at, event.type) == (
        StepRunStatus.FAILED,
        event.occurred_at,
        EventType.STEP_FAILED,
    )


def test_a_failed_compensation_leaves_the_run_rollback_failed_after_events_of_its_attempts(
    store: SQLStore,
) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, FAN_OUT[:1])
    succeeded = _ended(store, run.id, Trigger.START, Trigger.SUCCEED)
    for event_type in (EventType.STEP_COMPENSATION_STARTED, EventType.STEP_COMPENSATION_RETRYING):
        store.append_event(
            execution.id, event_type, actor="worker-1", step_id="check", data={"attempt": 1}
        )
    assert store.get_step_run(run.id) == succeeded
    undone, event = store.transition_step_run(
        run.id,
        Trigger.FAIL_ROLLBACK,
        expected=StepRunStatus.SUCCEEDED,
        actor="worker-1",
        error={"type": "StepError", "message": "exit code 1"},
    )
    assert (undone.status, undone.outputs, undone.error["type"]) == (
        StepRunStatus.ROLLBACK_FAILED,
        succeeded.outputs,
        "StepError",
    )
    assert [e.type for e in store.list_events(execution.id)[-3:]] == [
        EventType.STEP_COMPENSATION_STARTED,
        EventType.STEP_COMPENSATION_RETRYING,
        EventType.STEP_ROLLBACK_FAILED,
    ]
    assert event.type is EventType.STEP_ROLLBACK_FAILED
    with pytest.raises(InvalidTransitionError, match="it is rollback_failed"):
        store.transition_step_run(
            run.id, Trigger.RERUN, expected=StepRunStatus.ROLLBACK_FAILED, actor="alice"
        )
