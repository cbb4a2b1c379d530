"""Store calls from async code: on the event loop when they cannot wait (SQLite), in a thread
when they would wait for another connection's write lock, and always in a thread on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from sqlalchemy import event

from opsgate.engine.statuses import ExecutionStatus, Trigger
from opsgate.stores import SQLStore
from opsgate.stores.calls import call_store
from opsgate.stores.database import SQLITE_BUSY_TIMEOUT_MS, not_waiting
from tests.stores.builders import new_execution


def _start(store: SQLStore, execution_id: str) -> int:
    """The transition, and the thread it ran in."""
    store.transition_execution(
        execution_id, Trigger.START, expected=ExecutionStatus.PENDING, actor="worker-1"
    )
    return threading.get_ident()


@pytest.mark.anyio
async def test_a_call_runs_on_the_event_loop_on_sqlite_and_in_a_thread_on_postgresql(
    store: SQLStore,
) -> None:
    execution = new_execution(store)
    ran_in = await call_store(store, _start, store, execution.id)
    on_loop = ran_in == threading.get_ident()
    assert on_loop is (store.engine.dialect.name == "sqlite")
    assert store.get_execution(execution.id).status is ExecutionStatus.RUNNING


@pytest.mark.anyio
async def test_a_sqlite_write_that_would_wait_waits_in_a_thread_not_on_the_loop(
    tmp_path: Path,
) -> None:
    store = SQLStore.open(f"sqlite:///{tmp_path / 'opsgate.db'}")
    store.migrate()
    execution = new_execution(store)
    other = sqlite3.connect(tmp_path / "opsgate.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    ticks = 0
    longest_stall = 0.0
    ticking, loop_went_on = anyio.Event(), anyio.Event()

    async def tick() -> None:
        nonlocal ticks, longest_stall
        while True:
            ticks += 1
            ticking.set()
            if ticks == 5:
                loop_went_on.set()
            before = anyio.current_time()
            await anyio.sleep(0.01)
            longest_stall = max(longest_stall, anyio.current_time() - before)

    async def release_once_the_loop_went_on() -> None:
        await loop_went_on.wait()  # while the call waits for the lock
        other.execute("COMMIT")

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        group.start_soon(release_once_the_loop_went_on)
        await ticking.wait()
        with anyio.fail_after(10):
            ran_in = await call_store(store, _start, store, execution.id)
        group.cancel_scope.cancel()
    other.close()
    assert loop_went_on.is_set()  # the loop ticked while the call waited for the lock
    assert longest_stall < SQLITE_BUSY_TIMEOUT_MS / 1000 / 2  # never blocked for a busy wait
    assert ran_in != threading.get_ident()  # it waited in a thread
    assert store.get_execution(execution.id).status is ExecutionStatus.RUNNING
    store.close()


def test_calls_on_the_loop_keep_one_connection_per_thread_until_the_store_closes(
    tmp_path: Path,
) -> None:
    store = SQLStore.open(f"sqlite:///{tmp_path / 'opsgate.db'}")
    store.migrate()
    execution = new_execution(store)
    checkouts: list[sqlite3.Connection] = []
    statements: dict[int, list[str]] = defaultdict(list)

    def checkout(dbapi_connection: sqlite3.Connection, _record: object, _proxy: object) -> None:
        checkouts.append(dbapi_connection)
        dbapi_connection.set_trace_callback(statements[id(dbapi_connection)].append)

    event.listen(store.engine, "checkout", checkout)
    with not_waiting():
        assert store.get_execution(execution.id).status is ExecutionStatus.PENDING
        _start(store, execution.id)
        with store._transaction(read_only=True):  # a call inside another one's transaction
            assert store.get_execution(execution.id).status is ExecutionStatus.RUNNING
    kept, nested = checkouts
    assert nested is not kept  # the kept one was in a transaction, so the pool lent another
    on_kept = statements[id(kept)]
    # A read, a write that takes the write lock at BEGIN, the outer read: an earlier
    # transaction's read-only option does not stick to the kept connection.
    begins = [statement for statement in on_kept if statement.startswith("BEGIN")]
    assert begins == ["BEGIN DEFERRED", "BEGIN IMMEDIATE", "BEGIN DEFERRED"]
    assert [s for s in on_kept if "busy_timeout" in s] == ["PRAGMA busy_timeout=0"]  # once

    store.get_execution(execution.id)  # not on the loop: a pooled connection, given back
    assert checkouts[2] is nested
    thread = threading.Thread(target=not_waiting()(store.get_execution), args=(execution.id,))
    thread.start()
    thread.join()
    assert len(checkouts) == 4 and checkouts[3] is not kept  # that thread keeps its own
    store.close()
    for connection in (kept, checkouts[3]):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")  # closed with the store, not left open
