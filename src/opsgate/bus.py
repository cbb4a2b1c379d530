"""The event bus: new events of the log, pushed to the subscribers in this process.

The engine writes events to the database and knows nothing of who listens (the MCP server
turns them into progress and resource-updated notifications). The bus polls the ``events``
table by id, so it sees the events of every process that shares the database (an
``opsgate worker``, another replica on PostgreSQL), not only those of its own worker.

Ids are taken when a row is inserted, but transactions commit in any order on PostgreSQL: a
slow transaction can commit an id below one already delivered. The ids skipped between two
delivered ones are kept as *holes* and looked up again on every poll until they appear or
``hole_seconds`` pass (a rolled-back transaction leaves a hole that never fills).

Subscribers receive cues (which execution got which event), not payloads: each reads what it
needs from the store. A subscriber that falls behind loses cues rather than slowing the bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from opsgate.stores.tables import events

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventNotice:
    """That an event was appended: enough to know what to re-read."""

    id: int
    type: str
    execution_id: str | None
    seq: int | None
    step_id: str | None


@dataclass(slots=True)
class _Subscriber:
    execution_id: str | None
    stream: MemoryObjectSendStream[EventNotice]


#: Skipped ids further below a delivered one than this are not waited for (a sequence jump).
_MAX_GAP = 1000

_COLUMNS = (events.c.id, events.c.type, events.c.execution_id, events.c.seq, events.c.step_id)


class EventBus:
    """Polls the event log and fans each new event out to the matching subscribers."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        interval_seconds: float = 0.1,
        batch: int = 500,
        hole_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.interval_seconds = interval_seconds
        self.batch = batch
        self.hole_seconds = hole_seconds
        self.clock = clock
        self._high: int | None = None
        self._holes: dict[int, float] = {}
        self._subscribers: dict[int, _Subscriber] = {}
        self._poked = anyio.Event()

    async def run(self) -> None:
        """Poll until cancelled; a database failure is logged and the poll tried again."""
        while True:
            try:
                notices = await anyio.to_thread.run_sync(self.poll)
            except sa.exc.SQLAlchemyError:
                logger.exception("cannot read the event log; trying again")
                notices = []
            for notice in notices:
                self._publish(notice)
            with anyio.move_on_after(self.interval_seconds):
                await self._poked.wait()
            self._poked = anyio.Event()

    def poke(self) -> None:
        """Poll now rather than at the next interval (this process just wrote something)."""
        self._poked.set()

    def poll(self) -> list[EventNotice]:
        """The events committed since the last poll, in id order (the first poll: none)."""
        with self.engine.connect() as conn:
            if self._high is None:
                self._high = conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0
                return []
            new = conn.execute(
                sa.select(*_COLUMNS)
                .where(events.c.id > self._high)
                .order_by(events.c.id)
                .limit(self.batch)
            ).all()
            now = self.clock()
            self._holes = {i: due for i, due in self._holes.items() if due > now}
            late: Sequence[sa.Row[Any]] = ()
            if self._holes:
                late = conn.execute(
                    sa.select(*_COLUMNS).where(events.c.id.in_(list(self._holes)))
                ).all()
        for row in late:
            del self._holes[row.id]
        for row in new:
            skipped = range(max(self._high + 1, row.id - _MAX_GAP), row.id)
            self._holes.update(dict.fromkeys(skipped, now + self.hole_seconds))
            self._high = row.id
        return [
            EventNotice(row.id, str(row.type), row.execution_id, row.seq, row.step_id)
            for row in sorted([*late, *new], key=lambda r: r.id)
        ]

    @contextmanager
    def subscribe(
        self, execution_id: str | None = None, *, buffer: int = 256
    ) -> Iterator[MemoryObjectReceiveStream[EventNotice]]:
        """A stream of the notices of one execution (or of all events), while in the block."""
        send, receive = anyio.create_memory_object_stream[EventNotice](buffer)
        key = id(send)
        self._subscribers[key] = _Subscriber(execution_id, send)
        try:
            with receive:
                yield receive
        finally:
            del self._subscribers[key]
            send.close()

    def _publish(self, notice: EventNotice) -> None:
        for subscriber in list(self._subscribers.values()):
            if subscriber.execution_id not in (None, notice.execution_id):
                continue
            try:
                subscriber.stream.send_nowait(notice)
            except anyio.WouldBlock:
                logger.debug("a subscriber is behind; dropped the cue of event %s", notice.id)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # it is leaving; subscribe() removes it
