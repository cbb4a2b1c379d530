"""Store calls from async code: on the event loop when they cannot wait (SQLite), in a thread
when they would wait for another connection's write lock, and always in a thread on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from opsgate.engine.statuses import ExecutionStatus, Trigger
from opsgate.stores import SQLStore
from opsgate.stores.calls import call_store
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

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    async def release_later() -> None:
        await anyio.sleep(0.3)
        other.execute("COMMIT")

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        group.start_soon(release_later)
        begin = time.monotonic()
        with anyio.fail_after(10):
            ran_in = await call_store(store, _start, store, execution.id)
        waited = time.monotonic() - begin
        group.cancel_scope.cancel()
    other.close()
    assert ran_in != threading.get_ident()  # it waited in a thread
    assert waited >= 0.25
    assert ticks >= 10  # the event loop went on meanwhile
    assert store.get_execution(execution.id).status is ExecutionStatus.RUNNING
    store.close()
