"""Calling the synchronous store from async code: here and now when that is cheap and cannot
block, otherwise in a worker thread.

A SQLite call is in-process and short (its commit's fsync is most of it). Handing it to a
thread and back cost more than the call itself on this project's machines: one after another,
running the worker's store calls on the event loop took an execution from about 19 to 15 ms, and
the service's creation as well to about 14 ms (docs/performance.md). What must never happen on
the event loop is waiting for a lock another process holds: such a call fails at once instead
(:func:`opsgate.stores.database.not_waiting`) and is run again in a thread, where it may wait.
A failed transaction wrote nothing, so running it again is safe. PostgreSQL calls always go to
a thread (each statement is a network round trip).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from opsgate.errors import StoreError
from opsgate.stores.database import not_waiting
from opsgate.stores.sql import SQLStore

T = TypeVar("T")


async def call_store(store: SQLStore, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)``, a call of ``store``: now if it cannot wait, else in a thread.

    Only for short calls (one execution's rows, a batch of changes): a long query run here would
    hold up everything else on the event loop.
    """
    if store.engine.dialect.name == "sqlite":
        try:
            with not_waiting():
                return function(*args, **kwargs)
        except StoreError:
            pass  # locked by another writer, or failed: in a thread, where it may wait
    return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))
