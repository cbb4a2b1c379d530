"""Concurrency locks: places held up to a limit, a first-come-first-served queue, promotion."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from opsgate.models import EventType, Execution, LockStatus
from opsgate.stores import SQLStore
from tests.stores.builders import new_execution

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
