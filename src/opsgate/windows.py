"""Maintenance windows: ``in_window(now, 'Mon-Fri 08:00-18:00', 'Europe/Berlin')``.

A window spec is one or more comma-separated parts ``[DAYS] HH:MM-HH:MM``. DAYS is a day
(``Mon`` or ``Monday``, any case), a range (``Mon-Fri``; ``Fri-Mon`` wraps over the week end), a
list joined by ``|`` (``Sat|Sun``, ``Mon-Wed|Fri``) or ``*``; without DAYS a part applies every
day. An end before the start crosses midnight and belongs to the day it starts on
(``Sun 22:00-02:00`` is Sunday night into Monday); ``24:00`` ends a day.

Times are wall-clock times in the timezone, so a window keeps its local hours when DST moves
them in UTC: on the spring-forward night a ``02:00-03:00`` window does not happen (those local
times do not exist), and on the fall-back night a ``02:00-03:00`` window (Europe/Berlin) lasts
two real hours because the local clock shows those times twice.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MINUTES_PER_DAY = 24 * 60
_PART = re.compile(r"^(?:(?P<days>\S+)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")
#: Names in the tz database that depend on the machine or mean "no zone"; never a window's zone.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
#: How far ahead the next opening or closing is searched: two weeks cover a weekly window whose
#: only occurrence in one week falls into a DST gap.
_HORIZON = timedelta(days=15)

WINDOW_HINT = (
    "write windows like 'Mon-Fri 08:00-18:00' or 'Sat|Sun 00:00-24:00, Mon-Fri 22:00-06:00'"
)
DAY_HINT = "days are Mon Tue Wed Thu Fri Sat Sun (or full names), ranges Mon-Fri, lists Sat|Sun"
TIMEZONE_HINT = "use an IANA timezone name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"


class WindowError(ValueError):
    """A window spec or its timezone cannot be used; ``hint`` says how to write it."""

    def __init__(self, problem: str, hint: str) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}")


@dataclass(frozen=True, slots=True)
class WindowPart:
    """Days of the week (0 = Monday) and the minutes of the day from ``start`` to ``end``.

    ``end <= start`` means the part crosses midnight into the next day.
    """

    days: frozenset[int]
    start_minute: int
    end_minute: int

    def contains(self, local: datetime) -> bool:
        """Whether the wall-clock time ``local`` (already in the window's zone) is inside."""
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        if self.start_minute < self.end_minute:
            return weekday in self.days and self.start_minute <= minute < self.end_minute
        # Crosses midnight: the evening of a listed day, or the morning after it.
        if weekday in self.days and minute >= self.start_minute:
            return True
        return (weekday - 1) % 7 in self.days and minute < self.end_minute


def load_timezone(name: str) -> ZoneInfo:
    """An IANA timezone; :class:`WindowError` with a did-you-mean hint for anything else."""
    if not isinstance(name, str):
        raise WindowError(f"timezone must be a string, not {type(name).__name__}", TIMEZONE_HINT)
    if name not in _timezone_names():
        raise WindowError(f"unknown timezone {name!r}", _timezone_hint(name))
    return ZoneInfo(name)


@lru_cache(maxsize=1)
def _timezone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _timezone_hint(name: str) -> str:
    names = _timezone_names()
    by_lower = {zone.lower(): zone for zone in names}
    close = by_lower.get(name.strip().lower())
    if close is None:
        matches = difflib.get_close_matches(name.strip(), names, n=1, cutoff=0.8)
        close = matches[0] if matches else None
    return f"did you mean {close!r}?" if close is not None else TIMEZONE_HINT


def parse_window(spec: str) -> tuple[WindowPart, ...]:
    """Parse a window spec; :class:`WindowError` names the part that is wrong and why."""
    if not isinstance(spec, str):
        raise WindowError(f"a window must be a string, not {type(spec).__name__}", WINDOW_HINT)
    return _parse_window(spec)


@lru_cache(maxsize=256)
def _parse_window(spec: str) -> tuple[WindowPart, ...]:
    if not spec.strip():
        raise WindowError("empty maintenance window", WINDOW_HINT)
    return tuple(_parse_part(part.strip(), spec) for part in spec.split(","))


def _parse_part(text: str, spec: str) -> WindowPart:
    if not text:
        raise WindowError(f"empty part in window {spec!r}", "remove the extra comma")
    match = _PART.match(text)
    if match is None:
        if not any(char.isdigit() for char in text):
            raise WindowError(
                f"window part {text!r} has no time range",
                "give every part its hours ('Sat|Sun 00:00-24:00'); list days with '|', not ','",
            )
        raise WindowError(f"invalid window part {text!r}", WINDOW_HINT)
    start = _parse_minute(match["start"], text)
    end = _parse_minute(match["end"], text)
    if start == _MINUTES_PER_DAY:
        raise WindowError(
            f"window part {text!r} starts at 24:00", "24:00 can only end a part; start at 00:00"
        )
    if start == end:
        raise WindowError(
            f"window part {text!r} is empty: it starts and ends at the same time",
            "use 00:00-24:00 for a whole day",
        )
    days = _parse_days(match["days"], text) if match["days"] is not None else frozenset(range(7))
    return WindowPart(days=days, start_minute=start, end_minute=end)


def _parse_days(text: str, part: str) -> frozenset[int]:
    if text == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for item in text.split("|"):
        first, dash, last = item.partition("-")
        start = _day(first, part)
        end = _day(last, part) if dash else start
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return frozenset(days)


def _day(text: str, part: str) -> int:
    for names in (DAYS, _FULL_DAYS):
        if text.lower() in names:
            return names.index(text.lower())
    raise WindowError(f"unknown day {text!r} in window part {part!r}", DAY_HINT)


def _parse_minute(text: str, part: str) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if (hours, minutes) == (24, 0):
        return _MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise WindowError(
            f"invalid time {text!r} in window part {part!r}", "times run from 00:00 to 24:00"
        )
    return hours * 60 + minutes


def in_window(now: datetime, spec: str, timezone: str) -> bool:
    """Whether the aware instant ``now`` falls inside the window, read in ``timezone``."""
    return _inside(_aware(now), parse_window(spec), load_timezone(timezone))


def next_window_start(now: datetime, spec: str, timezone: str) -> datetime | None:
    """The first instant at or after ``now`` inside the window (``now`` itself when inside).

    For remedies such as "allowed from Sat 00:00 Europe/Berlin". The result is in ``now``'s
    timezone; ``None`` only when the window never opens within two weeks (every occurrence
    falls into DST gaps).
    """
    return _first(_aware(now), parse_window(spec), load_timezone(timezone), inside=True)


def next_window_end(now: datetime, spec: str, timezone: str) -> datetime | None:
    """The first instant at or after ``now`` outside the window (``now`` itself when outside).

    For remedies of rules that deny inside a window ("allowed again from Mon 18:00").
    """
    return _first(_aware(now), parse_window(spec), load_timezone(timezone), inside=False)


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime):
        raise TypeError(f"a window is checked at a datetime such as now, not {type(now).__name__}")
    if now.utcoffset() is None:
        raise ValueError("a window is checked at an aware datetime (UTC), not a naive one")
    return now


def _inside(instant: datetime, parts: tuple[WindowPart, ...], zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    return any(part.contains(local) for part in parts)


def _first(
    now: datetime, parts: tuple[WindowPart, ...], zone: ZoneInfo, *, inside: bool
) -> datetime | None:
    """The first instant at or after ``now`` whose membership equals ``inside``.

    Membership only changes where the local clock reaches a part's boundary (either
    occurrence of an ambiguous time) or where the zone's UTC offset jumps (a boundary
    skipped by spring-forward, or the clock turned back into a window), so checking those
    candidate instants in order finds the exact change.
    """
    if _inside(now, parts, zone) is inside:
        return now
    until = now + _HORIZON
    minutes = {(p.start_minute if inside else p.end_minute) % _MINUTES_PER_DAY for p in parts}
    first_day = now.astimezone(zone).date() - timedelta(days=1)
    candidates = set(_offset_changes(zone, now, until))
    for offset in range((until - now).days + 2):
        day = first_day + timedelta(days=offset)
        candidates.update(_wall_instants(day, minutes, zone))
    for candidate in sorted(c for c in candidates if now < c <= until):
        if _inside(candidate, parts, zone) is inside:
            return candidate.astimezone(now.tzinfo)
    return None


def _wall_instants(day: date, minutes: set[int], zone: ZoneInfo) -> Iterator[datetime]:
    """Every UTC instant at which the local clock shows one of ``minutes`` on ``day``."""
    for minute in minutes:
        wall = time(minute // 60, minute % 60)
        for fold in (0, 1):
            yield datetime.combine(day, wall, zone).replace(fold=fold).astimezone(UTC)


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """The instants from ``start`` to ``end`` at which the zone's UTC offset changes, to the
    second (at most one change an hour, as in every zone of the tz database)."""
    step = timedelta(hours=1)
    low = start.astimezone(UTC).replace(microsecond=0)
    while low < end:
        high = low + step
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            yield _bisect_change(zone, low, high)
        low = high


def _bisect_change(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high
