"""Concurrency locks: places held up to a limit, a first-come-first-served queue, promotion."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from opsgate.engine.statuses import EXECUTION_TERMINAL, ExecutionStatus
from opsgate.errors import ConflictError, NotFoundError
from opsgate.models import EventType, Execution, LockStatus
from opsgate.stores import SQLStore
from tests.stores.builders import execution_in, new_execution

KEY = "service:nginx"


def test_the_first_comer_holds_the_lock_and_the_next_ones_queue(store: SQLStore) -> None:
    first, second = new_execution(store), new_execution(store)
    held = store.acquire_lock(KEY, first.id, actor="worker-1")
    queued = store.acquire_lock(KEY, second.id, actor="worker-1")
    assert (held.status, held.acquired_at is not None) == (LockStatus.HELD, True)
    assert (queued.status, queued.acquired_at) == (LockStatus.QUEUED, None)
    assert store.list_events(first.id)[-1].type is EventType.LOCK_ACQUIRED
    assert store.list_events(second.id)[-1].type is EventType.LOCK_QUEUED
    assert store.list_events(second.id)[-1].data == {"key": KEY}


def test_a_queued_execution_says_what_it_waits_for_until_it_stops_waiting(
    store: SQLStore,
) -> None:
    holder, promoted, given_up = new_execution(store), new_execution(store), new_execution(store)
    for execution in (holder, promoted, given_up):
        store.acquire_lock(KEY, execution.id, actor="w")
    waiting = f"waiting for lock {KEY}, held by others"
    assert store.get_execution(holder.id).current_sub_task is None
    assert store.get_execution(promoted.id).current_sub_task == waiting
    store.release_locks(given_up.id, actor="w")  # cancelled while it waited
    assert store.get_execution(given_up.id).current_sub_task is None
    store.release_locks(holder.id, actor="w")
    assert store.get_execution(promoted.id).current_sub_task is None


def test_promoted_for_one_lock_an_execution_still_says_it_waits_for_another(
    store: SQLStore,
) -> None:
    web, db = new_execution(store, locks=[("host:web-1", 1)]), new_execution(store)
    store.acquire_lock("host:db-1", db.id, actor="w")
    both = new_execution(store, locks=[("host:db-1", 1), ("host:web-1", 1)])
    store.release_locks(db.id, actor="w")
    assert store.get_execution(both.id).current_sub_task == (
        "waiting for lock host:web-1, held by others"
    )
    store.release_locks(web.id, actor="w")
    assert store.get_execution(both.id).current_sub_task is None
    assert both.id in [e.id for e in store.claim_executions("w", lease_seconds=30, limit=5)]


def test_a_lock_admits_up_to_its_limit(store: SQLStore) -> None:
    executions = [new_execution(store) for _ in range(3)]
    statuses = [
        store.acquire_lock(KEY, e.id, max_concurrent=2, actor="w").status for e in executions
    ]
    assert statuses == [LockStatus.HELD, LockStatus.HELD, LockStatus.QUEUED]


def test_asking_again_returns_the_same_place(store: SQLStore) -> None:
    first, second = new_execution(store), new_execution(store)
    store.acquire_lock(KEY, first.id, actor="w")
    queued = store.acquire_lock(KEY, second.id, actor="w")
    assert store.acquire_lock(KEY, second.id, actor="w") == queued
    assert len(store.list_events(second.id)) == 2


def test_releasing_promotes_the_longest_waiting_execution_first(store: SQLStore) -> None:
    holder, *waiting = [new_execution(store) for _ in range(4)]
    for execution in [holder, *waiting]:
        store.acquire_lock(KEY, execution.id, actor="w")
    promoted = store.release_locks(holder.id, actor="worker-1")
    assert [(p.execution_id, p.status) for p in promoted] == [(waiting[0].id, LockStatus.HELD)]
    assert store.list_events(holder.id)[-1].type is EventType.LOCK_RELEASED
    assert store.list_events(waiting[0].id)[-1].type is EventType.LOCK_ACQUIRED
    assert [p.execution_id for p in store.release_locks(waiting[0].id, actor="w")] == [
        waiting[1].id
    ]


def test_a_waiting_execution_that_gives_up_leaves_the_queue_order_intact(store: SQLStore) -> None:
    holder, quitter, patient = [new_execution(store) for _ in range(3)]
    for execution in (holder, quitter, patient):
        store.acquire_lock(KEY, execution.id, actor="w")
    assert store.release_locks(quitter.id, actor="w") == []
    assert [p.execution_id for p in store.release_locks(holder.id, actor="w")] == [patient.id]


def test_releasing_gives_up_every_key_of_the_execution(store: SQLStore) -> None:
    holder, web, db = [new_execution(store) for _ in range(3)]
    store.acquire_lock("host:web-1", holder.id, actor="w")
    store.acquire_lock("host:db-1", holder.id, actor="w")
    store.acquire_lock("host:web-1", web.id, actor="w")
    store.acquire_lock("host:db-1", db.id, actor="w")
    promoted = store.release_locks(holder.id, actor="w")
    assert sorted((p.key, p.execution_id) for p in promoted) == [
        ("host:db-1", db.id),
        ("host:web-1", web.id),
    ]
    assert store.release_locks(holder.id, actor="w") == []


@pytest.mark.parametrize("status", sorted(EXECUTION_TERMINAL))
def test_an_ended_execution_takes_no_lock_it_could_never_release(
    store: SQLStore, status: ExecutionStatus
) -> None:
    """A late caller (the service, after a worker ran the execution to its end) is refused."""
    ended = execution_in(store, status)
    events_before = store.list_events(ended.id, limit=50)
    with pytest.raises(ConflictError, match=f"it is {status} already"):
        store.acquire_lock(KEY, ended.id, actor="service")
    assert store.list_events(ended.id, limit=50) == events_before
    waiting = new_execution(store)
    assert store.acquire_lock(KEY, waiting.id, actor="w").status is LockStatus.HELD  # not held


def test_locks_taken_at_creation_keep_a_queued_execution_from_being_claimed(
    store: SQLStore,
) -> None:
    holder = new_execution(store, locks=[("host:web-1", 1), ("host:db-1", 1)])
    waiting = new_execution(store, locks=[("host:web-1", 1)])
    assert holder.last_seq == 3  # created, then a lock.acquired per key, in one transaction
    types = [e.type for e in store.list_events(waiting.id, limit=10)]
    assert types == [EventType.EXECUTION_CREATED, EventType.LOCK_QUEUED]
    claimed = store.claim_executions("worker-1", lease_seconds=30, limit=10)
    assert [e.id for e in claimed] == [holder.id]  # the queued one is not claimable
    for execution, key, status in (
        (holder, "host:db-1", LockStatus.HELD),
        (holder, "host:web-1", LockStatus.HELD),
        (waiting, "host:web-1", LockStatus.QUEUED),
    ):  # asking again returns the place taken at creation
        assert store.acquire_lock(key, execution.id, actor="w").status is status


def test_refused_at_creation_an_execution_fails_at_once_and_keeps_no_place(
    store: SQLStore,
) -> None:
    """``on_conflict: reject``, decided in the creating transaction: no worker can claim the
    execution, nor can the places change, between the queueing and the refusal."""
    holder = new_execution(store, locks=[("host:web-1", 1)])
    both = [("host:db-1", 1), ("host:web-1", 1)]
    refused = new_execution(store, locks=both, refuse_queued=True)
    assert (refused.status, refused.current_sub_task) == (ExecutionStatus.FAILED, None)
    assert refused.error == {
        "type": "LockConflict",
        "message": "locks host:web-1 are held by other executions",
    }
    events = [(e.type, e.data.get("key")) for e in store.list_events(refused.id, limit=10)]
    assert events == [
        (EventType.EXECUTION_CREATED, None),
        (EventType.LOCK_ACQUIRED, "host:db-1"),
        (EventType.LOCK_QUEUED, "host:web-1"),
        (EventType.LOCK_RELEASED, "host:db-1"),
        (EventType.LOCK_RELEASED, "host:web-1"),
        (EventType.EXECUTION_FAILED, None),
    ]
    claimed = store.claim_executions("w", lease_seconds=30, limit=10)
    assert [e.id for e in claimed] == [holder.id]
    # Its places are gone: host:db-1 is free, and the next for host:web-1 is first in line.
    later = new_execution(store, locks=both)
    assert store.acquire_lock("host:db-1", later.id, actor="w").status is LockStatus.HELD
    [promoted] = store.release_locks(holder.id, actor="w")
    assert (promoted.key, promoted.execution_id) == ("host:web-1", later.id)


def test_an_execution_refusing_to_queue_is_created_when_its_locks_are_free(
    store: SQLStore,
) -> None:
    created = new_execution(store, locks=[("host:web-1", 2)], refuse_queued=True)
    second = new_execution(store, locks=[("host:web-1", 2)], refuse_queued=True)
    assert (created.status, second.status) == (ExecutionStatus.PENDING, ExecutionStatus.PENDING)
    third = new_execution(store, locks=[("host:web-1", 2)], refuse_queued=True)
    assert third.status is ExecutionStatus.FAILED


def test_a_lock_for_an_unknown_execution_is_not_found(store: SQLStore) -> None:
    with pytest.raises(NotFoundError, match="exe_missing"):
        store.acquire_lock(KEY, "exe_missing", actor="w")


def test_a_lock_needs_at_least_one_place(store: SQLStore) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        store.acquire_lock(KEY, new_execution(store).id, max_concurrent=0, actor="w")


def test_concurrent_acquirers_get_one_place_and_the_others_queue(store: SQLStore) -> None:
    contenders = [new_execution(store) for _ in range(6)]
    start = threading.Barrier(len(contenders))

    def acquire(execution: Execution) -> LockStatus:
        start.wait()
        return store.acquire_lock(KEY, execution.id, actor="w").status

    with ThreadPoolExecutor(len(contenders)) as pool:
        statuses = list(pool.map(acquire, contenders))
    assert sorted(statuses) == [LockStatus.HELD] + [LockStatus.QUEUED] * 5
    holder = contenders[statuses.index(LockStatus.HELD)]
    served = [holder.id]
    while len(served) < len(contenders):
        [promoted] = store.release_locks(served[-1], actor="w")
        served.append(promoted.execution_id)
    assert sorted(served) == sorted(e.id for e in contenders)
