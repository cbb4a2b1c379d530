"""Snapshots and executions: creation, idempotency keys, compare-and-set transitions, listing."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from opsgate.engine.statuses import ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError, InvalidTransitionError, NotFoundError, StoreError
from opsgate.models import EventType, Execution, NewStepRun, StepRun, content_digest
from opsgate.stores import SQLStore
from tests.clocks import FakeClock
from tests.stores.builders import BLUEPRINT, execution_in, new_execution, running_execution


def _events_of(store: SQLStore, execution_id: str) -> list[tuple[int | None, EventType]]:
    return [(event.seq, event.type) for event in store.list_events(execution_id)]


def test_a_snapshot_is_kept_under_the_digest_of_its_content(store: SQLStore) -> None:
    snapshot = store.save_snapshot("restart_service", "1.2.0", BLUEPRINT)
    assert snapshot.digest == content_digest(BLUEPRINT)
    assert store.get_snapshot(snapshot.digest) == snapshot
    assert snapshot.content == BLUEPRINT


def test_saving_the_same_content_again_returns_the_first_snapshot(
    store: SQLStore, clock: FakeClock
) -> None:
    first = store.save_snapshot("restart_service", "1.2.0", BLUEPRINT)
    clock.advance(timedelta(hours=1))
    again = store.save_snapshot("restart_service", "1.2.0", dict(reversed(BLUEPRINT.items())))
    assert again == first


def test_another_store_on_the_database_finds_the_snapshot_saved_first(
    store: SQLStore, database_url: str, clock: FakeClock
) -> None:
    first = store.save_snapshot("restart_service", "1.2.0", BLUEPRINT)
    clock.advance(timedelta(hours=1))
    other = SQLStore.open(database_url, clock=clock)  # another process, say
    try:
        assert other.get_snapshot(first.digest) == first
        assert other.save_snapshot("restart_service", "1.2.0", BLUEPRINT) == first
    finally:
        other.close()


def test_a_snapshot_saved_once_is_not_written_again(store: SQLStore) -> None:
    """Executions of the same blueprint share its snapshot: one transaction per process, not
    one per execution (snapshots are immutable and never deleted)."""
    first = store.save_snapshot("restart_service", "1.2.0", BLUEPRINT)
    transactions: list[object] = []

    def begin(conn: object) -> None:
        transactions.append(conn)

    sa.event.listen(store.engine, "begin", begin)
    try:
        assert store.save_snapshot("restart_service", "1.2.0", BLUEPRINT) == first
        assert store.get_snapshot(first.digest) == first
    finally:
        sa.event.remove(store.engine, "begin", begin)
    assert transactions == []


def test_an_unknown_snapshot_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="blueprint snapshot 'abc' not found"):
        store.get_snapshot("abc")


def test_a_new_execution_is_pending_with_its_created_event_as_seq_1(store: SQLStore) -> None:
    execution = new_execution(store, parameters={"service": "nginx", "api_token": "env:TOKEN"})
    assert execution.status is ExecutionStatus.PENDING
    assert execution.last_seq == 1
    assert store.get_execution(execution.id) == execution
    [event] = store.list_events(execution.id)
    assert (event.seq, event.type, event.actor) == (1, EventType.EXECUTION_CREATED, "alice")
    assert event.data["parameters"] == {"service": "nginx", "api_token": "env:TOKEN"}
    assert event.data["blueprint_digest"] == execution.blueprint_digest


def test_an_unknown_execution_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="execution 'exe_missing' not found"):
        store.get_execution("exe_missing")


def test_repeating_a_request_with_its_idempotency_key_returns_the_first_execution(
    store: SQLStore,
) -> None:
    first = new_execution(store, idempotency_key="deploy-42")
    snapshot = store.get_snapshot(first.blueprint_digest)
    again, created = store.create_execution(
        workflow_name="restart_service",
        blueprint_digest=snapshot.digest,
        parameters={"service": "nginx"},
        requested_by="alice",
        idempotency_key="deploy-42",
    )
    assert (again, created) == (first, False)
    assert _events_of(store, first.id) == [(1, EventType.EXECUTION_CREATED)]
    assert len(store.list_executions().items) == 1


def test_an_idempotency_key_reused_with_other_parameters_is_a_conflict(store: SQLStore) -> None:
    first = new_execution(store, idempotency_key="deploy-42")
    with pytest.raises(ConflictError, match=r"idempotency key 'deploy-42'.*other parameters"):
        new_execution(store, idempotency_key="deploy-42", parameters={"service": "sshd"})
    assert [e.id for e in store.list_executions().items] == [first.id]


def test_an_idempotency_key_reused_with_another_blueprint_is_a_conflict(store: SQLStore) -> None:
    new_execution(store, idempotency_key="deploy-42")
    with pytest.raises(ConflictError, match=r"idempotency key 'deploy-42'.*blueprint"):
        new_execution(store, idempotency_key="deploy-42", workflow_name="reboot_host")


def test_idempotency_keys_belong_to_their_principal(store: SQLStore) -> None:
    alice = new_execution(store, idempotency_key="deploy-42", requested_by="alice")
    bob = new_execution(store, idempotency_key="deploy-42", requested_by="bob")
    assert alice.id != bob.id


def test_requests_without_a_key_always_create_an_execution(store: SQLStore) -> None:
    assert new_execution(store).id != new_execution(store).id


def test_a_transition_sets_the_status_and_appends_its_event(store: SQLStore) -> None:
    execution = new_execution(store)
    store.claim_executions("worker-1", lease_seconds=10, limit=1)
    started, event = store.transition_execution(
        execution.id,
        Trigger.START,
        expected=ExecutionStatus.PENDING,
        actor="worker-1",
        data={"worker": "worker-1"},
        lease_owner="worker-1",
        lease_expires_at=execution.created_at + timedelta(seconds=30),
        deadline_at=execution.created_at + timedelta(hours=1),
    )
    assert started.status is ExecutionStatus.RUNNING
    assert started.lease_owner == "worker-1"
    assert started.lease_expires_at == execution.created_at + timedelta(seconds=30)
    assert started.deadline_at == execution.created_at + timedelta(hours=1)
    assert started.started_at == event.occurred_at
    assert started.last_seq == event.seq == 2
    assert (event.type, event.actor, event.data) == (
        EventType.EXECUTION_STARTED,
        "worker-1",
        {"worker": "worker-1"},
    )
    assert store.get_execution(execution.id) == started
    assert store.list_events(execution.id)[-1] == event


def test_reaching_a_terminal_status_stamps_finished_at_and_keeps_started_at(
    store: SQLStore,
) -> None:
    running = running_execution(store)
    failed, event = store.transition_execution(
        running.id,
        Trigger.FAIL,
        expected=ExecutionStatus.RUNNING,
        actor="worker-1",
        error={"type": "StepError", "message": "exit code 1"},
    )
    assert failed.finished_at == event.occurred_at
    assert failed.started_at == running.started_at
    assert failed.error == {"type": "StepError", "message": "exit code 1"}
    rolling_back, _ = store.transition_execution(
        running.id, Trigger.BEGIN_ROLLBACK, expected=ExecutionStatus.FAILED, actor="worker-1"
    )
    assert rolling_back.status is ExecutionStatus.ROLLING_BACK


def test_a_lost_compare_and_set_is_a_conflict_naming_the_status_and_changes_nothing(
    store: SQLStore,
) -> None:
    running = running_execution(store)
    with pytest.raises(
        ConflictError, match=f"execution {running.id}: it is now running, not pending"
    ):
        store.transition_execution(
            running.id,
            Trigger.START,
            expected=ExecutionStatus.PENDING,
            actor="worker-2",
            progress=0.5,
        )
    assert store.get_execution(running.id) == running
    assert _events_of(store, running.id) == [
        (1, EventType.EXECUTION_CREATED),
        (2, EventType.EXECUTION_STARTED),
    ]


def test_a_transition_the_table_refuses_writes_nothing(store: SQLStore) -> None:
    execution = new_execution(store)
    with pytest.raises(InvalidTransitionError, match="it is pending"):
        store.transition_execution(
            execution.id, Trigger.SUCCEED, expected=ExecutionStatus.PENDING, actor="worker-1"
        )
    assert store.get_execution(execution.id) == execution


def test_a_transition_of_an_unknown_execution_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.transition_execution(
            "exe_missing", Trigger.START, expected=ExecutionStatus.PENDING, actor="worker-1"
        )


def test_a_failing_event_insert_undoes_the_status_change_too(store: SQLStore) -> None:
    execution = new_execution(store)
    # A stray event already holds seq 2, so the transition's event insert violates
    # UNIQUE(execution_id, seq) after the status UPDATE has run in the same transaction.
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (execution_id, seq, type, actor, data, occurred_at) "
                "VALUES (:id, 2, 'step.progressed', 'intruder', '{}', :at)"
            ),
            {"id": execution.id, "at": execution.created_at.replace(tzinfo=None)},
        )
    with pytest.raises(StoreError, match="events"):
        store.transition_execution(
            execution.id, Trigger.START, expected=ExecutionStatus.PENDING, actor="worker-1"
        )
    assert store.get_execution(execution.id) == execution
    assert [(e.seq, e.actor) for e in store.list_events(execution.id)] == [
        (1, "alice"),
        (2, "intruder"),
    ]


def test_listing_pages_through_every_execution_newest_first(
    store: SQLStore, clock: FakeClock
) -> None:
    created = [new_execution(store) for _ in range(4)]
    clock.step = timedelta(0)  # several executions created in the same microsecond
    created += [new_execution(store) for _ in range(4)]
    expected = sorted(created, key=lambda e: (e.created_at, e.id), reverse=True)

    seen, cursor = [], None
    while True:
        page = store.list_executions(cursor=cursor, limit=3)
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [e.id for e in seen] == [e.id for e in expected]


def test_pages_stay_stable_when_executions_are_created_meanwhile(store: SQLStore) -> None:
    older = [new_execution(store) for _ in range(4)]
    first = store.list_executions(limit=2)
    new_execution(store)
    second = store.list_executions(cursor=first.next_cursor, limit=2)
    assert [e.id for e in first.items + second.items] == [e.id for e in reversed(older)]
    assert (
        second.next_cursor is None or store.list_executions(cursor=second.next_cursor).items == []
    )


def test_listing_filters_by_workflow_and_status(store: SQLStore) -> None:
    restart = new_execution(store, workflow_name="restart_service")
    running = running_execution(store, workflow_name="restart_service")
    reboot = new_execution(store, workflow_name="reboot_host")
    by_workflow = store.list_executions(workflow_name="restart_service").items
    assert [e.id for e in by_workflow] == [running.id, restart.id]
    pending = store.list_executions(status=ExecutionStatus.PENDING).items
    assert [e.id for e in pending] == [reboot.id, restart.id]
    both = store.list_executions(workflow_name="reboot_host", status=ExecutionStatus.RUNNING)
    assert both.items == [] and both.next_cursor is None


@pytest.mark.parametrize("cursor", ["garbage", "W10=", "WyIyMDI2LTAzLTAxVDA5OjAwOjAwIiwgIngiXQ=="])
def test_a_malformed_cursor_is_refused_with_what_to_pass(store: SQLStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="pass the next_cursor of the previous page"):
        store.list_executions(cursor=cursor)


@pytest.mark.parametrize("limit", [0, 501])
def test_a_page_size_out_of_range_is_refused(store: SQLStore, limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be between 1 and 500"):
        store.list_executions(limit=limit)


def test_a_rerun_failed_execution_runs_again_unfinished_and_without_its_error(
    store: SQLStore,
) -> None:
    running = running_execution(store)
    failed, _ = store.transition_execution(
        running.id,
        Trigger.FAIL,
        expected=ExecutionStatus.RUNNING,
        actor="worker-1",
        error={"type": "StepError"},
    )
    again, event = store.transition_execution(
        running.id, Trigger.RERUN, expected=ExecutionStatus.FAILED, actor="alice"
    )
    assert (again.status, again.started_at, again.finished_at, again.error) == (
        ExecutionStatus.RUNNING,
        running.started_at,
        None,
        None,
    )
    assert (event.type, event.actor) == (EventType.EXECUTION_RERUN, "alice")
    assert failed.finished_at is not None


def test_a_rollback_is_unfinished_until_it_ends(store: SQLStore) -> None:
    failed = execution_in(store, ExecutionStatus.FAILED)
    rolling_back, _ = store.transition_execution(
        failed.id, Trigger.BEGIN_ROLLBACK, expected=ExecutionStatus.FAILED, actor="worker-1"
    )
    assert rolling_back.finished_at is None
    done, event = store.transition_execution(
        failed.id, Trigger.FINISH_ROLLBACK, expected=rolling_back.status, actor="worker-1"
    )
    assert done.finished_at == event.occurred_at


def test_a_cancel_records_whether_it_asked_for_cleanup(store: SQLStore) -> None:
    running = running_execution(store)
    assert running.cancel_cleanup is False
    cancelled, _ = store.transition_execution(
        running.id,
        Trigger.CANCEL,
        expected=ExecutionStatus.RUNNING,
        actor="alice",
        data={"cleanup": True},
        cancel_cleanup=True,
    )
    assert store.get_execution(running.id).cancel_cleanup is cancelled.cancel_cleanup is True


def test_the_status_of_an_execution_is_read_with_its_step_runs(store: SQLStore) -> None:
    execution = running_execution(store)
    runs = store.create_step_runs(execution.id, [NewStepRun(step_id="check")])
    assert store.execution_status(execution.id) == (store.get_execution(execution.id), runs)
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.execution_status("exe_missing")


def _failed_at_restart(store: SQLStore) -> tuple[Execution, list[StepRun]]:
    """A failed execution: check succeeded on web-1, restart failed on web-1 and timed out on
    web-2 and was cancelled on web-3."""
    execution = running_execution(store)
    check, *restart = store.create_step_runs(
        execution.id,
        [NewStepRun(step_id="check", item_key="web-1")]
        + [NewStepRun(step_id="restart", item_key=f"web-{n}") for n in (1, 2, 3)],
    )
    for run, path in [
        (check, [Trigger.START, Trigger.SUCCEED]),
        (restart[0], [Trigger.START, Trigger.FAIL]),
        (restart[1], [Trigger.START, Trigger.TIME_OUT]),
        (restart[2], [Trigger.CANCEL]),
    ]:
        for trigger in path:
            run, _ = store.transition_step_run(
                run.id, trigger, expected=run.status, actor="worker-1"
            )
    failed, _ = store.transition_execution(
        execution.id,
        Trigger.FAIL,
        expected=ExecutionStatus.RUNNING,
        actor="worker-1",
        error={"step_id": "restart"},
    )
    return failed, store.list_step_runs(execution.id)


def test_rerunning_a_step_of_a_failed_execution_runs_both_again(store: SQLStore) -> None:
    failed, runs = _failed_at_restart(store)
    execution, rerun = store.rerun_step(failed.id, "restart", actor="alice")
    assert (execution.status, execution.error, execution.last_seq) == (
        ExecutionStatus.RUNNING,
        None,
        failed.last_seq + 4,
    )
    assert execution == store.get_execution(failed.id)
    assert [(r.item_key, r.status, r.attempt) for r in rerun] == [
        ("web-1", StepRunStatus.PENDING, 0),
        ("web-2", StepRunStatus.PENDING, 0),
        ("web-3", StepRunStatus.PENDING, 0),
    ]
    events = store.list_events(failed.id, after_seq=failed.last_seq)
    assert [(e.type, e.actor) for e in events] == [
        (EventType.STEP_RERUN_REQUESTED, "alice")
    ] * 3 + [(EventType.EXECUTION_RERUN, "alice")]
    assert events[-1].data == {"step_id": "restart"}
    assert events[0].data == {
        "step_run_id": runs[1].id,
        "previous_status": "failed",
        "previous_attempts": 1,
    }
    assert store.get_step_run(runs[0].id) == runs[0]


def test_rerunning_a_step_of_an_active_execution_leaves_the_execution_as_it_is(
    store: SQLStore,
) -> None:
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, [NewStepRun(step_id="check")])
    for trigger in (Trigger.START, Trigger.TIME_OUT):
        run, _ = store.transition_step_run(run.id, trigger, expected=run.status, actor="w")
    after, [rerun] = store.rerun_step(execution.id, "check", actor="alice")
    assert (after.status, after.last_seq) == (ExecutionStatus.RUNNING, execution.last_seq + 3)
    assert rerun.status is StepRunStatus.PENDING


def test_a_step_of_a_rolled_back_execution_is_not_rerun(store: SQLStore) -> None:
    failed, runs = _failed_at_restart(store)
    for trigger in (Trigger.BEGIN_ROLLBACK, Trigger.FINISH_ROLLBACK):
        failed, _ = store.transition_execution(
            failed.id, trigger, expected=failed.status, actor="worker-1"
        )
    with pytest.raises(InvalidTransitionError, match=r"cannot rerun execution .*rolled_back"):
        store.rerun_step(failed.id, "restart", actor="alice")
    assert store.get_execution(failed.id) == failed
    assert store.list_step_runs(failed.id) == runs


def test_a_step_without_a_run_that_ended_badly_is_not_rerun(store: SQLStore) -> None:
    failed, runs = _failed_at_restart(store)
    with pytest.raises(ConflictError, match=r"step check .* has no run to rerun .*succeeded"):
        store.rerun_step(failed.id, "check", actor="alice")
    with pytest.raises(NotFoundError, match="'restrat' not found; did you mean 'restart'"):
        store.rerun_step(failed.id, "restrat", actor="alice")
    assert store.get_execution(failed.id) == failed
    assert store.list_step_runs(failed.id) == runs
