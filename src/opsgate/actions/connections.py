"""Connections that the attempts of one execution share, closed when its runner stops.

An SSH step fanned out over ten targets, followed by two more SSH steps, opens ten connections,
not thirty: the action asks :meth:`Connections.get` for the connection of a key (the target and
how it is reached) and opens one only if none is open. A connection that broke is
:meth:`dropped <Connections.drop>` so that the next attempt (a retry) opens a fresh one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
Closer = Callable[[Any], Awaitable[None]]


class Connections:
    """Open connections by key; :meth:`aclose` closes them all."""

    def __init__(self) -> None:
        self._open: dict[Hashable, tuple[Any, Closer]] = {}
        self._locks: dict[Hashable, anyio.Lock] = {}

    async def get(
        self,
        key: Hashable,
        connect: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> T:
        """The open connection of ``key``, opened by ``connect`` on first use."""
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            found = self._open.get(key)
            if found is not None:
                connection: T = found[0]
                return connection
            connection = await connect()
            self._open[key] = (connection, close)
            return connection

    async def drop(self, key: Hashable) -> None:
        """Close and forget the connection of ``key`` (it failed; the next use reconnects)."""
        found = self._open.pop(key, None)
        if found is not None:
            await _close_quietly(*found)

    async def aclose(self) -> None:
        """Close every connection (shielded: runs even while the runner is cancelled)."""
        found, self._open = list(self._open.values()), {}
        with anyio.CancelScope(shield=True):
            for connection, close in found:
                await _close_quietly(connection, close)


@asynccontextmanager
async def connection(
    pool: Connections | None,
    key: Hashable,
    connect: Callable[[], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
    broken: tuple[type[BaseException], ...] = (OSError,),
) -> AsyncIterator[T]:
    """A connection for one attempt: from ``pool`` when the execution shares one, else opened
    here and closed at the end. A ``broken`` error inside drops it from the pool."""
    if pool is None:
        opened = await connect()
        try:
            yield opened
        finally:
            with anyio.CancelScope(shield=True):
                await _close_quietly(opened, close)
        return
    shared = await pool.get(key, connect, close)
    try:
        yield shared
    except broken:
        with anyio.CancelScope(shield=True):
            await pool.drop(key)
        raise


async def _close_quietly(connection: Any, close: Closer) -> None:
    try:
        with anyio.move_on_after(5):
            await close(connection)
    except Exception:  # a connection that cannot even close cleanly is gone all the same
        pass
