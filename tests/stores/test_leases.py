"""Leases: exclusive claims, expiry and reclaim, wake-ups, renewals, releases, guarded writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError, NotFoundError
from opsgate.models import EventType, Execution, NewStepRun
from opsgate.stores import SQLStore
from tests.clocks import FakeClock
from tests.stores.builders import execution_in, new_approval, new_execution, running_execution

LEASE = timedelta(seconds=30)
TICK = timedelta(microseconds=1)


@pytest.fixture
def frozen(clock: FakeClock) -> FakeClock:
    """The store's clock, moving only when the test advances it."""
    clock.step = timedelta(0)
    return clock


def _claim(store: SQLStore, owner: str, limit: int = 10, **options: Any) -> list[str]:
    claimed = store.claim_executions(
        owner, lease_seconds=LEASE.total_seconds(), limit=limit, **options
    )
    assert all(execution.lease_owner == owner for execution in claimed)
    return [execution.id for execution in claimed]


# -- claiming ----------------------------------------------------------------------------------


def test_a_claim_takes_free_executions_oldest_first_up_to_its_limit(
    store: SQLStore, frozen: FakeClock
) -> None:
    executions = []
    for _ in range(3):
        executions.append(new_execution(store))
        frozen.advance(TICK)
    claimed = store.claim_executions("worker-1", lease_seconds=30, limit=2)
    assert [e.id for e in claimed] == [e.id for e in executions[:2]]
    assert {(e.lease_owner, e.lease_expires_at, e.status) for e in claimed} == {
        ("worker-1", frozen.now + LEASE, ExecutionStatus.PENDING)
    }
    assert store.get_execution(executions[0].id) == claimed[0]
    assert _claim(store, "worker-2") == [executions[2].id]
    assert _claim(store, "worker-3") == []


def test_a_claim_changes_no_status_and_appends_no_event(store: SQLStore) -> None:
    execution = new_execution(store)
    [claimed] = store.claim_executions("worker-1", lease_seconds=30, limit=1)
    assert (claimed.status, claimed.last_seq) == (ExecutionStatus.PENDING, 1)
    assert len(store.list_events(execution.id)) == 1


def test_executions_that_need_a_worker_are_claimed_by_default(store: SQLStore) -> None:
    by_status = {status: execution_in(store, status) for status in ExecutionStatus}
    wanted = {
        ExecutionStatus.PENDING,
        ExecutionStatus.RUNNING,
        ExecutionStatus.WAITING_APPROVAL,  # awake: a decision or a deadline to act on
        ExecutionStatus.ROLLING_BACK,
    }
    claimed = _claim(store, "worker-1")
    assert sorted(claimed) == sorted(by_status[status].id for status in wanted)
    paused = by_status[ExecutionStatus.PAUSED]
    assert _claim(store, "sweeper", statuses=[ExecutionStatus.PAUSED]) == [paused.id]


def test_a_live_lease_is_kept_and_an_expired_one_is_reclaimed_from_its_expiry_on(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution = running_execution(store)
    assert _claim(store, "worker-1") == [execution.id]
    frozen.advance(LEASE - TICK)
    assert _claim(store, "worker-2") == []
    frozen.advance(TICK)
    assert _claim(store, "worker-2") == [execution.id]
    assert store.get_execution(execution.id).lease_expires_at == frozen.now + LEASE


def test_a_lease_without_an_expiry_counts_as_expired(store: SQLStore) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    store.transition_execution(
        execution.id,
        Trigger.PAUSE,
        expected=ExecutionStatus.RUNNING,
        actor="worker-1",
        lease_owner="worker-1",
        lease_expires_at=None,
    )
    store.transition_execution(
        execution.id, Trigger.RESUME, expected=ExecutionStatus.PAUSED, actor="alice"
    )
    assert _claim(store, "worker-2") == [execution.id]


def test_wake_at_holds_a_claim_back_until_exactly_that_instant(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    wake_at = frozen.now + timedelta(seconds=10)
    released = store.release_lease(execution.id, "worker-1", wake_at=wake_at)
    assert (released.lease_owner, released.lease_expires_at, released.wake_at) == (
        None,
        None,
        wake_at,
    )
    frozen.advance(timedelta(seconds=10) - TICK)
    assert _claim(store, "worker-2") == []
    frozen.advance(TICK)
    assert _claim(store, "worker-2") == [execution.id]


def test_a_pending_execution_queued_for_a_lock_is_claimed_only_once_promoted(
    store: SQLStore,
) -> None:
    holder, queued = new_execution(store), new_execution(store)
    store.acquire_lock("service:nginx", holder.id, actor="worker-1")
    store.acquire_lock("service:nginx", queued.id, actor="worker-1")
    assert _claim(store, "worker-1") == [holder.id]
    store.release_lease(holder.id, "worker-1")
    assert _claim(store, "worker-2") == [holder.id]
    store.release_locks(holder.id, actor="worker-2")
    assert _claim(store, "worker-2") == [queued.id]


def test_a_running_execution_is_claimed_even_while_it_waits_for_a_lock(store: SQLStore) -> None:
    holder, waiting = new_execution(store), running_execution(store)
    store.acquire_lock("host:web-1", holder.id, actor="w")
    store.acquire_lock("host:web-1", waiting.id, actor="w")
    assert sorted(_claim(store, "worker-1")) == sorted([holder.id, waiting.id])


@pytest.mark.parametrize(("lease_seconds", "limit"), [(0, 1), (-1, 1), (30, 0)])
def test_a_claim_needs_a_positive_lease_and_limit(
    store: SQLStore, lease_seconds: float, limit: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        store.claim_executions("worker-1", lease_seconds=lease_seconds, limit=limit)


@pytest.mark.parametrize("engines", [1, 2], ids=["threads of one store", "two engines"])
def test_concurrent_claims_never_take_the_same_execution_and_together_take_all(
    store: SQLStore, database_url: str, clock: FakeClock, engines: int
) -> None:
    executions = {new_execution(store).id for _ in range(50)}
    stores = [store] + [SQLStore.open(database_url, clock=clock) for _ in range(engines - 1)]
    workers = 4
    start = threading.Barrier(workers)

    def claim_until_none_is_left(worker: int) -> list[str]:
        mine: list[str] = []
        start.wait()
        while batch := _claim(stores[worker % engines], f"worker-{worker}", limit=3):
            mine += batch
        return mine

    try:
        with ThreadPoolExecutor(workers) as pool:
            claims = list(pool.map(claim_until_none_is_left, range(workers)))
    finally:
        for other in stores[1:]:
            other.close()
    every = [execution_id for claimed in claims for execution_id in claimed]
    assert len(every) == len(set(every)) == 50
    assert set(every) == executions
    for worker, claimed in enumerate(claims):
        assert {store.get_execution(e).lease_owner for e in claimed} <= {f"worker-{worker}"}


# -- renewing and releasing --------------------------------------------------------------------


def test_renewing_extends_the_lease_and_shows_what_others_changed(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    store.transition_execution(
        execution.id, Trigger.PAUSE, expected=ExecutionStatus.RUNNING, actor="alice"
    )
    frozen.advance(timedelta(seconds=10))
    renewed = store.renew_lease(execution.id, "worker-1", lease_seconds=30)
    assert (renewed.status, renewed.lease_owner) == (ExecutionStatus.PAUSED, "worker-1")
    assert renewed.lease_expires_at == frozen.now + LEASE
    assert store.get_execution(execution.id) == renewed


def test_an_expired_lease_nobody_took_over_can_still_be_renewed(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    frozen.advance(LEASE * 2)
    renewed = store.renew_lease(execution.id, "worker-1", lease_seconds=30)
    assert renewed.lease_expires_at == frozen.now + LEASE


def test_renewing_or_releasing_a_lease_taken_over_is_a_conflict_and_changes_nothing(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    frozen.advance(LEASE)
    _claim(store, "worker-2")
    taken_over = store.get_execution(execution.id)
    with pytest.raises(ConflictError, match=r"worker-1 does not hold .*worker-2 holds it now"):
        store.renew_lease(execution.id, "worker-1", lease_seconds=30)
    with pytest.raises(ConflictError, match="stop driving the execution"):
        store.release_lease(execution.id, "worker-1", wake_at=frozen.now + LEASE)
    assert store.get_execution(execution.id) == taken_over
    store.release_lease(execution.id, "worker-2")
    with pytest.raises(ConflictError, match="nobody holds it now"):
        store.renew_lease(execution.id, "worker-2", lease_seconds=30)


def test_lease_operations_on_an_unknown_execution_are_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.renew_lease("exe_missing", "worker-1", lease_seconds=30)
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.release_lease("exe_missing", "worker-1")
    with pytest.raises(ValueError, match="lease_seconds must be positive"):
        store.renew_lease("exe_missing", "worker-1", lease_seconds=0)


# -- when to wake up ---------------------------------------------------------------------------


def test_with_nothing_to_claim_there_is_nothing_to_wake_for(store: SQLStore) -> None:
    assert store.next_wake_at() is None
    for status in (ExecutionStatus.SUCCEEDED, ExecutionStatus.PAUSED):
        execution_in(store, status)
    assert store.next_wake_at() is None


def test_an_execution_claimable_now_means_waking_now(store: SQLStore, frozen: FakeClock) -> None:
    new_execution(store)
    assert store.next_wake_at() == frozen.now


def test_the_next_wake_up_is_the_earliest_instant_something_becomes_claimable(
    store: SQLStore, frozen: FakeClock
) -> None:
    start = frozen.now
    sleeping, leased, both = (running_execution(store) for _ in range(3))
    _claim(store, "worker-1")
    store.release_lease(sleeping.id, "worker-1", wake_at=start + timedelta(seconds=50))
    # Free at its lease's expiry (30 s) but asleep until 40 s: claimable at the later one.
    store.transition_execution(
        both.id,
        Trigger.PAUSE,
        expected=ExecutionStatus.RUNNING,
        actor="worker-1",
        lease_owner="worker-1",
        wake_at=start + timedelta(seconds=40),
    )
    store.transition_execution(
        both.id, Trigger.RESUME, expected=ExecutionStatus.PAUSED, actor="alice"
    )
    assert store.next_wake_at() == start + LEASE  # leased: its worker may die
    store.renew_lease(leased.id, "worker-1", lease_seconds=60)
    assert store.next_wake_at() == start + timedelta(seconds=40)
    frozen.advance(timedelta(seconds=45))
    assert store.next_wake_at() == frozen.now
    assert _claim(store, "worker-2") == [both.id]
    assert store.next_wake_at() == start + timedelta(seconds=50)


def test_the_next_wake_up_leaves_out_executions_queued_for_a_lock(
    store: SQLStore, frozen: FakeClock
) -> None:
    holder, queued = new_execution(store), new_execution(store)
    store.acquire_lock("service:nginx", holder.id, actor="w")
    store.acquire_lock("service:nginx", queued.id, actor="w")
    _claim(store, "worker-1")
    assert store.next_wake_at() == frozen.now + LEASE
    assert store.next_wake_at(statuses=[ExecutionStatus.RUNNING]) is None


# -- guarded writes ----------------------------------------------------------------------------


def _taken_over(store: SQLStore, frozen: FakeClock) -> tuple[Execution, str, str]:
    """A running execution with a step run and a pending approval, whose lease worker-1 lost."""
    execution = running_execution(store)
    [run] = store.create_step_runs(execution.id, [NewStepRun(step_id="check")])
    approval = new_approval(store, execution)
    _claim(store, "worker-1")
    frozen.advance(LEASE)
    _claim(store, "worker-2")
    return store.get_execution(execution.id), run.id, approval.id


def test_guarded_writes_of_a_worker_whose_lease_was_taken_over_change_nothing(
    store: SQLStore, frozen: FakeClock
) -> None:
    execution, run_id, approval_id = _taken_over(store, frozen)
    before = (store.list_step_runs(execution.id), store.list_events(execution.id))
    stale: list[Callable[[], object]] = [
        lambda: store.transition_execution(
            execution.id,
            Trigger.SUCCEED,
            expected=ExecutionStatus.RUNNING,
            actor="worker-1",
            lease_owner="worker-1",
        ),
        lambda: store.transition_step_run(
            run_id,
            Trigger.START,
            expected=StepRunStatus.PENDING,
            actor="worker-1",
            lease_owner="worker-1",
        ),
        lambda: store.transition_approval(
            approval_id,
            Trigger.EXPIRE,
            expected=ApprovalStatus.PENDING,
            actor="worker-1",
            lease_owner="worker-1",
        ),
        lambda: store.append_event(
            execution.id,
            EventType.STEP_PROGRESSED,
            actor="worker-1",
            lease_owner="worker-1",
            progress=0.5,
        ),
        lambda: store.create_step_runs(
            execution.id, [NewStepRun(step_id="verify")], lease_owner="worker-1"
        ),
    ]
    for write in stale:
        with pytest.raises(ConflictError, match=r"worker-1 does not hold .*worker-2 holds it"):
            write()
    assert store.get_execution(execution.id) == execution
    assert (store.list_step_runs(execution.id), store.list_events(execution.id)) == before
    assert store.get_approval(approval_id).status is ApprovalStatus.PENDING


def test_guarded_writes_of_the_lease_holder_go_through(store: SQLStore, frozen: FakeClock) -> None:
    execution, run_id, approval_id = _taken_over(store, frozen)
    [verify] = store.create_step_runs(
        execution.id, [NewStepRun(step_id="verify")], lease_owner="worker-2"
    )
    started, event = store.transition_step_run(
        run_id, Trigger.START, expected=StepRunStatus.PENDING, actor="w2", lease_owner="worker-2"
    )
    assert (started.status, event.seq) == (StepRunStatus.RUNNING, execution.last_seq + 1)
    progressed = store.append_event(
        execution.id, EventType.STEP_PROGRESSED, actor="w2", lease_owner="worker-2", progress=0.5
    )
    assert progressed.seq == execution.last_seq + 2
    store.transition_approval(
        approval_id,
        Trigger.APPROVE,
        expected=ApprovalStatus.PENDING,
        actor="w2",
        lease_owner="worker-2",
    )
    extended_to = frozen.now + 2 * LEASE
    done, _ = store.transition_execution(
        execution.id,
        Trigger.SUCCEED,
        expected=ExecutionStatus.RUNNING,
        actor="w2",
        lease_owner="worker-2",
        lease_expires_at=extended_to,
    )
    assert (done.status, done.lease_expires_at, done.last_seq) == (
        ExecutionStatus.SUCCEEDED,
        extended_to,
        execution.last_seq + 4,
    )
    assert verify.status is StepRunStatus.PENDING


def test_a_guarded_transition_whose_status_moved_says_so(store: SQLStore) -> None:
    execution = running_execution(store)
    _claim(store, "worker-1")
    store.transition_execution(
        execution.id, Trigger.PAUSE, expected=ExecutionStatus.RUNNING, actor="alice"
    )
    with pytest.raises(ConflictError, match="it is now paused, not running"):
        store.transition_execution(
            execution.id,
            Trigger.SUCCEED,
            expected=ExecutionStatus.RUNNING,
            actor="worker-1",
            lease_owner="worker-1",
        )


def test_a_guarded_transition_of_an_unknown_record_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="step run 'sr_missing'"):
        store.transition_step_run(
            "sr_missing",
            Trigger.START,
            expected=StepRunStatus.PENDING,
            actor="worker-1",
            lease_owner="worker-1",
        )
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.append_event(
            "exe_missing", EventType.STEP_PROGRESSED, actor="worker-1", lease_owner="worker-1"
        )
    with pytest.raises(NotFoundError, match="execution 'exe_missing'"):
        store.create_step_runs("exe_missing", [], lease_owner="worker-1")
