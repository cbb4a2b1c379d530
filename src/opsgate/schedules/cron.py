"""Cron expressions in IANA timezones, and fire times that DST changes cannot surprise. Pure.

An expression has 5 fields (``minute hour day-of-month month day-of-week``), 6 with seconds
first (``*/10 * * * * *``, as Quartz, Spring and Windmill write them), or is an alias
(``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``). Day of month and day of week
are OR-ed, as in Vixie cron.

Fire times are wall-clock times in the schedule's timezone. Where DST makes a wall-clock time
skipped or repeated, opsgate follows Vixie cron's rule, decided by the expression:

- **wall-clock schedules** (fixed minutes and hours, such as ``30 2 * * *``): a time that a
  spring-forward gap skips fires once, at the end of the gap (02:30 in Europe/Berlin fires at
  03:00 CEST on that day); a time that a fall-back repeats fires once, at its first occurrence.
- **interval schedules** (the minute or the hour field starts with ``*``, such as
  ``*/15 * * * *`` or ``0 * * * *``): they follow elapsed time, so times in a gap do not exist
  and do not fire, and repeated times fire in both passes.

Each :class:`Fire` carries a :class:`DstNote` when one of these rules applied to it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from opsgate.windows import WindowError, load_timezone

CRON_HINT = (
    "write 5 fields 'minute hour day-of-month month day-of-week' (e.g. '30 2 * * 1-5'), "
    "6 with seconds first ('*/10 * * * * *'), or an alias such as '@daily'"
)
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: How many segments between DST changes one search may cross before it gives up.
_MAX_STEPS = 1000
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)


class CronError(ValueError):
    """An expression or timezone that cannot be used; ``hint`` says how to write it."""

    def __init__(self, problem: str, hint: str) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}")


class DstNote(StrEnum):
    """How a DST change touched one fire time."""

    #: The local time does not exist that day (spring forward): fires at the end of the gap.
    SHIFTED = "shifted"
    #: The local time occurs twice that day (fall back): fires at this first occurrence only.
    REPEATED_ONCE = "repeated_once"
    #: The local time occurs twice (interval schedule): this is the first of two fires.
    REPEATED_FIRST = "repeated_first"
    #: The local time occurs twice (interval schedule): this is the second of two fires.
    REPEATED_SECOND = "repeated_second"
    #: Local times in the gap just before it did not exist, so they did not fire.
    AFTER_GAP = "after_gap"


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time: the instant (aware UTC), the local time it is in the schedule's zone, the
    wall-clock time the expression named (differs from ``local`` only when ``SHIFTED``)."""

    at: datetime
    local: datetime
    wall: datetime
    dst: DstNote | None = None

    def explain(self) -> str | None:
        """The DST note in words, for previews; ``None`` when DST did not touch it."""
        wall = self.wall.strftime("%H:%M:%S")
        day = self.wall.date().isoformat()
        if self.dst is DstNote.SHIFTED:
            return (
                f"{wall} does not exist on {day} (clocks spring forward); "
                f"fires at the end of the gap, {self.local.strftime('%H:%M:%S %Z')}"
            )
        if self.dst is DstNote.REPEATED_ONCE:
            return f"{wall} occurs twice on {day} (clocks fall back); fires at the first only"
        if self.dst is DstNote.REPEATED_FIRST:
            return f"{wall} occurs twice on {day} (clocks fall back); first of two fires"
        if self.dst is DstNote.REPEATED_SECOND:
            return f"{wall} occurs twice on {day} (clocks fall back); second of two fires"
        if self.dst is DstNote.AFTER_GAP:
            return f"local times just before it did not exist on {day}, so they did not fire"
        return None


@dataclass(frozen=True, slots=True)
class _Transition:
    """A change of the zone's UTC offset at instant ``at``."""

    at: datetime
    before: timedelta
    after: timedelta


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression in a timezone; :meth:`next_fire` walks its fire times."""

    expression: str
    timezone: str
    zone: ZoneInfo
    fields: str
    with_seconds: bool
    interval: bool
    _iterator: croniter = field(repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def next_fire(self, after: datetime) -> Fire:
        """The first fire strictly after the instant ``after``.

        Raises :class:`CronError` when the expression never fires again (``0 0 30 2 *``).
        """
        start, inclusive = after.astimezone(UTC), False
        gap_skipped = False
        for _ in range(_MAX_STEPS):
            offset = _offset(self.zone, start)
            wall = self._wall_next(_wall(start, offset), inclusive)
            candidate = (wall - offset).replace(tzinfo=UTC)
            change = _first_transition(self.zone, start, candidate)
            if change is None:
                local = candidate.astimezone(self.zone)
                note = _repeat_note(local, self.interval)
                if note is DstNote.REPEATED_SECOND and not self.interval:
                    start, inclusive = candidate, False  # wall-clock: first occurrence only
                    continue
                if gap_skipped and note is None:
                    note = DstNote.AFTER_GAP
                return Fire(candidate, local, wall, note)
            if change.after > change.before:
                gap_start, gap_end = _wall(change.at, change.before), _wall(change.at, change.after)
                in_gap = self._wall_next(gap_start, inclusive=True)
                if in_gap < gap_end and change.at > after:
                    if not self.interval:
                        local = change.at.astimezone(self.zone)
                        return Fire(change.at, local, in_gap, DstNote.SHIFTED)
                    gap_skipped = True
            start, inclusive = change.at, True
        raise CronError(  # pragma: no cover - only a broken tz database gets here
            f"cron {self.expression!r} in {self.timezone} finds no fire time after {after}",
            CRON_HINT,
        )

    def fires(self, after: datetime, count: int) -> list[Fire]:
        """The next ``count`` fires after ``after``, fewer if the expression stops firing."""
        found: list[Fire] = []
        moment = after
        for _ in range(count):
            try:
                fire = self.next_fire(moment)
            except CronError:
                break
            found.append(fire)
            moment = fire.at
        return found

    def fires_until(self, after: datetime, until: datetime, limit: int) -> list[Fire]:
        """Fires in ``(after, until]``, at most ``limit`` of them."""
        found: list[Fire] = []
        moment = after
        while len(found) < limit:
            try:
                fire = self.next_fire(moment)
            except CronError:
                break
            if fire.at > until:
                break
            found.append(fire)
            moment = fire.at
        return found

    def _wall_next(self, wall: datetime, inclusive: bool) -> datetime:
        """The first wall-clock time the expression names after ``wall`` (or at it)."""
        start = wall - _SECOND if inclusive else wall
        with self._lock:
            self._iterator.set_current(start, force=True)
            try:
                found: datetime = self._iterator.get_next(datetime)
            except CroniterBadDateError as exc:
                raise CronError(
                    f"cron {self.expression!r} never fires after {wall:%Y-%m-%d %H:%M:%S}",
                    "check the day of month and month fields (is the date possible?)",
                ) from exc
        return found


def parse_cron(expression: str, timezone: str) -> CronSchedule:
    """A :class:`CronSchedule` (cached); :class:`CronError` names what is wrong with either
    argument. Unlike :func:`schedule_problems`, it does not check that the expression fires
    again: the scheduler parses stored schedules on every fire, and they were checked."""
    try:
        return _parse(expression, timezone)
    except (CronError, CroniterError, WindowError):
        raise schedule_problems(expression, timezone)[0] from None


def schedule_problems(expression: object, timezone: object) -> list[CronError]:
    """Every problem of an expression and a timezone, the cron first; empty when both are fine."""
    problems: list[CronError] = []
    try:
        fields, _with_seconds = _normalise(expression)
        croniter(fields, datetime(2026, 1, 1), second_at_beginning=True)
    except CronError as exc:
        problems.append(exc)
    except CroniterError as exc:
        problems.append(CronError(f"invalid cron {expression!r}: {exc}", CRON_HINT))
    try:
        load_timezone(timezone)  # type: ignore[arg-type]
    except WindowError as exc:
        problems.append(CronError(exc.problem, exc.hint))
    if not problems:
        try:
            _parse(str(expression), str(timezone)).next_fire(datetime.now(UTC))
        except CronError as exc:
            problems.append(exc)
    return problems


@lru_cache(maxsize=4096)
def _parse(expression: str, timezone: str) -> CronSchedule:
    fields, with_seconds = _normalise(expression)
    parts = fields.split()
    minute, hour = (parts[1], parts[2]) if with_seconds else (parts[0], parts[1])
    iterator = croniter(fields, datetime(2026, 1, 1), second_at_beginning=with_seconds)
    return CronSchedule(
        expression=expression,
        timezone=timezone,
        zone=load_timezone(timezone),
        fields=fields,
        with_seconds=with_seconds,
        interval=minute.startswith("*") or hour.startswith("*"),
        _iterator=iterator,
    )


def _normalise(expression: object) -> tuple[str, bool]:
    """The expression's fields (aliases expanded) and whether they start with seconds."""
    if not isinstance(expression, str):
        raise CronError(f"cron must be a string, not {type(expression).__name__}", CRON_HINT)
    text = " ".join(expression.split())
    fields = ALIASES.get(text.lower(), text)
    count = len(fields.split())
    if count not in (5, 6):
        raise CronError(f"cron {expression!r} has {count} field(s), not 5 or 6", CRON_HINT)
    return fields, count == 6


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _wall(instant: datetime, offset: timedelta) -> datetime:
    """The naive local wall-clock time of ``instant`` under ``offset``."""
    return (instant + offset).replace(tzinfo=None)


def _repeat_note(local: datetime, interval: bool) -> DstNote | None:
    """Whether the local time of a fire occurs twice that day, and which pass this is."""
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() == local.utcoffset():
        return None
    if local.fold == 1:
        return DstNote.REPEATED_SECOND
    return DstNote.REPEATED_FIRST if interval else DstNote.REPEATED_ONCE


def _first_transition(zone: ZoneInfo, after: datetime, until: datetime) -> _Transition | None:
    """The first change of the zone's offset in ``(after, until]``."""
    for year in range(after.year, until.year + 1):
        for change in _transitions(zone, year):
            if after < change.at <= until:
                return change
    return None


@lru_cache(maxsize=512)
def _transitions(zone: ZoneInfo, year: int) -> tuple[_Transition, ...]:
    """The offset changes of ``zone`` in ``year`` (UTC), to the second: one probe a day, then
    bisection (no zone changes its offset twice within a day)."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    before = _offset(zone, day)
    while day.year == year:
        following = day + _DAY
        after = _offset(zone, following)
        if after != before:
            low, high = day, following
            while high - low > _SECOND:
                middle = low + (high - low) / 2
                if _offset(zone, middle) == before:
                    low = middle
                else:
                    high = middle
            found.append(_Transition(high.replace(microsecond=0), before, after))
        day, before = following, after
    return tuple(found)
