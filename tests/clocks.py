"""A clock for tests of time-dependent code: it moves only when the test says so."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class FakeClock:
    """Moves ``step`` per reading (zero freezes it) or by ``advance``; safe across threads."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += self.step
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta
