"""Maintenance windows: exact instants on and just past every edge, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.windows import (
    WindowError,
    in_window,
    load_timezone,
    next_window_end,
    next_window_start,
    parse_window,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
SECOND = timedelta(seconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def minutes_inside(spec: str, zone: str, start: datetime, end: datetime) -> int:
    """Real minutes inside the window between two UTC instants, counted one by one."""
    count, instant = 0, start
    while instant < end:
        count += in_window(instant, spec, zone)
        instant += timedelta(minutes=1)
    return count


# --- in_window: exact edges ---------------------------------------------------------------

EDGES = [
    # Office hours in winter (CET, +01:00) and in summer (CEST, +02:00): local hours stay put.
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 1, 6, 6, 59, 59), False),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 1, 6, 7, 0), True),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 1, 6, 16, 59, 59), True),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 1, 6, 17, 0), False),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 7, 7, 5, 59, 59), False),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 7, 7, 6, 0), True),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 7, 7, 15, 59, 59), True),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 7, 7, 16, 0), False),
    ("Mon-Fri 08:00-18:00", BERLIN, utc(2025, 7, 5, 10, 0), False),  # Saturday
    # Spring forward in Berlin (2025-03-30 01:00 UTC, 02:00 CET -> 03:00 CEST).
    ("Sun 02:00-03:00", BERLIN, utc(2025, 3, 30, 0, 59, 59), False),  # 01:59:59 CET
    ("Sun 02:00-03:00", BERLIN, utc(2025, 3, 30, 1, 0), False),  # 03:00 CEST
    ("Sun 01:00-02:00", BERLIN, utc(2025, 3, 30, 0, 59, 59), True),
    ("Sun 01:00-02:00", BERLIN, utc(2025, 3, 30, 1, 0), False),
    ("Sun 03:00-04:00", BERLIN, utc(2025, 3, 30, 1, 0), True),
    ("Sun 02:30-04:00", BERLIN, utc(2025, 3, 30, 1, 0), True),  # opens at the jump
    ("Sun 02:30-04:00", BERLIN, utc(2025, 3, 30, 0, 59, 59), False),
    # Fall back in Berlin (2025-10-26 01:00 UTC, 03:00 CEST -> 02:00 CET): 02:xx twice.
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 25, 23, 59, 59), False),  # 01:59:59 CEST
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 0, 0), True),  # 02:00 CEST
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 0, 59, 59), True),  # 02:59:59 CEST
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 1, 0), True),  # 02:00 CET
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 1, 59, 59), True),  # 02:59:59 CET
    ("Sun 02:00-03:00", BERLIN, utc(2025, 10, 26, 2, 0), False),  # 03:00 CET
    ("Sun 02:00-02:30", BERLIN, utc(2025, 10, 26, 0, 30), False),  # between the two halves
    ("Sun 02:00-02:30", BERLIN, utc(2025, 10, 26, 1, 0), True),
    # Spring forward in New York (2025-03-09 07:00 UTC, 02:00 EST -> 03:00 EDT).
    ("Sun 02:00-03:00", NEW_YORK, utc(2025, 3, 9, 6, 59, 59), False),  # 01:59:59 EST
    ("Sun 02:00-03:00", NEW_YORK, utc(2025, 3, 9, 7, 0), False),  # 03:00 EDT
    ("Sun 03:00-04:00", NEW_YORK, utc(2025, 3, 9, 7, 0), True),
    # Fall back in New York (2025-11-02 06:00 UTC, 02:00 EDT -> 01:00 EST): 01:xx twice.
    ("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 4, 59, 59), False),  # 00:59:59 EDT
    ("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 5, 0), True),  # 01:00 EDT
    ("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 6, 0), True),  # 01:00 EST
    ("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 6, 59, 59), True),  # 01:59:59 EST
    ("Sun 01:00-02:00", NEW_YORK, utc(2025, 11, 2, 7, 0), False),  # 02:00 EST
    # Overnight: Sunday night into Monday (2025-06-01 is a Sunday).
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 1, 21, 59, 59), False),
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 1, 22, 0), True),
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 2, 1, 59, 59), True),
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 2, 2, 0), False),
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 1, 1, 0), False),  # Saturday night is not listed
    ("Sun 22:00-02:00", "UTC", utc(2025, 6, 2, 22, 0), False),  # Monday night is not listed
    # Over the week end: Friday to Monday, whole days and nights.
    ("Fri-Mon 00:00-24:00", "UTC", utc(2025, 6, 5, 23, 59, 59), False),  # Thursday
    ("Fri-Mon 00:00-24:00", "UTC", utc(2025, 6, 6, 0, 0), True),
    ("Fri-Mon 00:00-24:00", "UTC", utc(2025, 6, 9, 23, 59, 59), True),  # Monday
    ("Fri-Mon 00:00-24:00", "UTC", utc(2025, 6, 10, 0, 0), False),  # Tuesday
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 6, 22, 0), True),  # Friday night
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 7, 5, 59, 59), True),
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 7, 6, 0), False),
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 9, 22, 0), True),  # Monday night
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 10, 5, 59, 59), True),  # ... into Tuesday
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 10, 6, 0), False),
    ("Fri-Mon 22:00-06:00", "UTC", utc(2025, 6, 6, 5, 0), False),  # Thursday night
    # 24:00 ends a day; the next day does not start inside.
    ("Sat 20:00-24:00", "UTC", utc(2025, 6, 7, 23, 59, 59), True),
    ("Sat 20:00-24:00", "UTC", utc(2025, 6, 8, 0, 0), False),
    # Lists of days and of parts; every day; no days; full and upper-case day names.
    ("Sat|Sun 10:00-12:00, Wed 01:00-02:00", "UTC", utc(2025, 6, 8, 11, 0), True),
    ("Sat|Sun 10:00-12:00, Wed 01:00-02:00", "UTC", utc(2025, 6, 4, 1, 30), True),
    ("Sat|Sun 10:00-12:00, Wed 01:00-02:00", "UTC", utc(2025, 6, 4, 2, 0), False),
    ("Sat|Sun 10:00-12:00, Wed 01:00-02:00", "UTC", utc(2025, 6, 2, 11, 0), False),
    ("Mon-Wed|Fri 09:00-10:00", "UTC", utc(2025, 6, 5, 9, 30), False),  # Thursday
    ("Mon-Wed|Fri 09:00-10:00", "UTC", utc(2025, 6, 6, 9, 30), True),
    ("* 22:00-06:00", "UTC", utc(2025, 6, 4, 23, 0), True),
    ("22:00-06:00", "UTC", utc(2025, 6, 4, 5, 59), True),
    ("22:00-06:00", "UTC", utc(2025, 6, 4, 6, 0), False),
    ("SATURDAY 10:00 - 11:00", "UTC", utc(2025, 6, 7, 10, 0), True),
    # Half-hour zones.
    ("Mon 09:00-10:00", "Asia/Kolkata", utc(2025, 6, 2, 3, 30), True),
    ("Mon 09:00-10:00", "Asia/Kolkata", utc(2025, 6, 2, 3, 29, 59), False),
]


@pytest.mark.parametrize(("spec", "zone", "instant", "inside"), EDGES)
def test_in_window_at_each_edge(spec: str, zone: str, instant: datetime, inside: bool) -> None:
    assert in_window(instant, spec, zone) is inside


def test_a_window_in_the_spring_forward_gap_never_happens() -> None:
    day = utc(2025, 3, 29, 22, 0)  # Sunday 00:00 CET
    assert minutes_inside("Sun 02:00-03:00", BERLIN, day, day + timedelta(hours=23)) == 0
    next_sunday = utc(2025, 4, 5, 22, 0)
    assert (
        minutes_inside("Sun 02:00-03:00", BERLIN, next_sunday, next_sunday + timedelta(days=1))
        == 60
    )


def test_a_window_in_the_fall_back_repeat_lasts_two_real_hours() -> None:
    berlin_day = utc(2025, 10, 25, 22, 0)
    assert (
        minutes_inside("Sun 02:00-03:00", BERLIN, berlin_day, berlin_day + timedelta(hours=25))
        == 120
    )
    new_york_day = utc(2025, 11, 2, 4, 0)
    assert (
        minutes_inside(
            "Sun 01:00-02:00", NEW_YORK, new_york_day, new_york_day + timedelta(hours=25)
        )
        == 120
    )


def test_an_office_day_is_ten_real_hours_on_both_dst_sundays() -> None:
    for day in (utc(2025, 3, 29, 22, 0), utc(2025, 10, 25, 22, 0)):
        assert minutes_inside("Sun 08:00-18:00", BERLIN, day, day + timedelta(days=1)) == 600


def test_in_window_reads_any_aware_datetime_in_its_own_zone() -> None:
    tokyo = datetime(2025, 1, 6, 16, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 08:00 CET
    assert in_window(tokyo, "Mon 08:00-09:00", BERLIN)


def test_in_window_refuses_naive_datetimes_and_other_values() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        in_window(datetime(2025, 1, 6, 8, 0), "Mon 08:00-09:00", BERLIN)
    with pytest.raises(TypeError, match="not str"):
        in_window("2025-01-06T08:00:00Z", "Mon 08:00-09:00", BERLIN)  # type: ignore[arg-type]


# --- parse_window and load_timezone: invalid input --------------------------------------

INVALID = [
    ("", "empty maintenance window", "write windows like"),
    ("   ", "empty maintenance window", "write windows like"),
    ("Mon", "window part 'Mon' has no time range", "list days with '|', not ','"),
    ("Mon,Tue 08:00-10:00", "window part 'Mon' has no time range", "give every part its hours"),
    ("Mon 08:00-10:00,", "empty part in window 'Mon 08:00-10:00,'", "remove the extra comma"),
    ("Mon 8-10", "invalid window part 'Mon 8-10'", "write windows like"),
    ("Mon 08:00", "invalid window part 'Mon 08:00'", "write windows like"),
    ("Mo 08:00-10:00", "unknown day 'Mo' in window part 'Mo 08:00-10:00'", "days are Mon"),
    ("Mon- 08:00-10:00", "unknown day '' in window part 'Mon- 08:00-10:00'", "days are Mon"),
    ("Sat||Sun 08:00-10:00", "unknown day '' in window part 'Sat||Sun 08:00-10:00'", "days are"),
    ("*|Mon 08:00-10:00", "unknown day '*' in window part '*|Mon 08:00-10:00'", "days are"),
    ("Mon 25:00-26:00", "invalid time '25:00' in window part 'Mon 25:00-26:00'", "00:00 to 24:00"),
    ("Mon 08:60-09:00", "invalid time '08:60' in window part 'Mon 08:60-09:00'", "00:00 to 24:00"),
    ("Mon 10:00-24:01", "invalid time '24:01' in window part 'Mon 10:00-24:01'", "00:00 to 24:00"),
    ("Mon 24:00-02:00", "window part 'Mon 24:00-02:00' starts at 24:00", "only end a part"),
    (
        "Mon 08:00-08:00",
        "window part 'Mon 08:00-08:00' is empty: it starts and ends at the same time",
        "00:00-24:00",
    ),
    (
        "Mon 00:00-00:00",
        "window part 'Mon 00:00-00:00' is empty: it starts and ends at the same time",
        "00:00-24:00",
    ),
]


@pytest.mark.parametrize(("spec", "problem", "hint"), INVALID)
def test_invalid_window_specs_say_what_is_wrong(spec: str, problem: str, hint: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(spec)
    assert caught.value.problem == problem
    assert hint in caught.value.hint
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still work


def test_a_window_must_be_a_string() -> None:
    with pytest.raises(WindowError, match="a window must be a string, not int"):
        parse_window(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("europe/berlin", "did you mean 'Europe/Berlin'?"),
        ("Europe/Berln", "did you mean 'Europe/Berlin'?"),
        ("Mars/Olympus", "use an IANA timezone name"),
        ("localtime", "use an IANA timezone name"),  # depends on the machine
        ("", "use an IANA timezone name"),
        ("../etc/passwd", "use an IANA timezone name"),
    ],
)
def test_unknown_timezones_are_refused_with_a_hint(name: str, hint: str) -> None:
    with pytest.raises(WindowError) as caught:
        load_timezone(name)
    assert caught.value.problem == f"unknown timezone {name!r}"
    assert caught.value.hint.startswith(hint)


def test_known_timezones_load() -> None:
    assert load_timezone("UTC") == ZoneInfo("UTC")
    assert load_timezone(BERLIN).key == BERLIN
    with pytest.raises(WindowError, match="timezone must be a string, not NoneType"):
        load_timezone(None)  # type: ignore[arg-type]


def test_parse_window_reads_days_and_minutes() -> None:
    (weekend, nights) = parse_window("Sat|Sun 00:00-24:00, Fri-Mon 22:00-06:00")
    assert weekend.days == {5, 6} and (weekend.start_minute, weekend.end_minute) == (0, 1440)
    assert nights.days == {4, 5, 6, 0} and (nights.start_minute, nights.end_minute) == (1320, 360)


# --- next_window_start / next_window_end ---------------------------------------------------


def test_next_window_start_is_the_next_local_opening() -> None:
    wednesday = utc(2025, 6, 4, 12, 0)
    # "allowed from Sat 00:00 Europe/Berlin": 22:00 UTC on Friday in summer.
    assert next_window_start(wednesday, "Sat|Sun 00:00-24:00", BERLIN) == utc(2025, 6, 6, 22, 0)
    assert next_window_start(utc(2025, 1, 8, 12, 0), "Sat 00:00-24:00", BERLIN) == utc(
        2025, 1, 10, 23, 0
    )


def test_next_window_start_is_now_when_inside() -> None:
    inside = utc(2025, 6, 7, 10, 30, 15)
    assert next_window_start(inside, "Sat 00:00-24:00", BERLIN) == inside


def test_next_window_start_keeps_the_zone_of_now() -> None:
    now = datetime(2025, 6, 4, 14, 0, tzinfo=ZoneInfo(BERLIN))
    start = next_window_start(now, "Sat 00:00-24:00", BERLIN)
    assert start == datetime(2025, 6, 7, 0, 0, tzinfo=ZoneInfo(BERLIN))
    assert start is not None and start.tzinfo == now.tzinfo


def test_next_window_start_opens_at_the_spring_forward_jump() -> None:
    before = utc(2025, 3, 29, 12, 0)
    # 02:30 does not exist that night: the window opens at 03:00 CEST, the jump itself.
    assert next_window_start(before, "Sun 02:30-04:00", BERLIN) == utc(2025, 3, 30, 1, 0)
    # 02:00-03:00 does not happen at all that night: next Sunday, 02:00 CEST.
    assert next_window_start(before, "Sun 02:00-03:00", BERLIN) == utc(2025, 4, 6, 0, 0)
    assert next_window_start(utc(2025, 3, 8, 12, 0), "Sun 02:00-03:00", NEW_YORK) == utc(
        2025, 3, 16, 6, 0
    )


def test_next_window_start_finds_the_repeated_hour_after_fall_back() -> None:
    # 02:45 CEST, after the first 02:00-02:30; it opens again at 02:00 CET.
    assert next_window_start(utc(2025, 10, 26, 0, 45), "Sun 02:00-02:30", BERLIN) == utc(
        2025, 10, 26, 1, 0
    )
    # 02:30 CEST is outside 01:30-02:30; turning the clock back to 02:00 re-enters it.
    assert next_window_start(utc(2025, 10, 26, 0, 30), "Sun 01:30-02:30", BERLIN) == utc(
        2025, 10, 26, 1, 0
    )
    # New York: 01:45 EST is after 01:00-01:30 (EDT) ... and inside its repeat at 01:00 EST.
    assert next_window_start(utc(2025, 11, 2, 5, 45), "Sun 01:00-01:30", NEW_YORK) == utc(
        2025, 11, 2, 6, 0
    )


def test_next_window_end() -> None:
    monday = utc(2025, 1, 6, 10, 0)
    assert next_window_end(monday, "Mon-Fri 08:00-18:00", BERLIN) == utc(2025, 1, 6, 17, 0)
    assert next_window_end(utc(2025, 1, 6, 20, 0), "Mon-Fri 08:00-18:00", BERLIN) == utc(
        2025, 1, 6, 20, 0
    )
    # Over the fall-back night the window closes after two real hours.
    assert next_window_end(utc(2025, 10, 26, 0, 30), "Sun 02:00-03:00", BERLIN) == utc(
        2025, 10, 26, 2, 0
    )
    # Over midnight and the week end: Friday night, the weekend, until Monday 06:00.
    weekend = "Fri-Mon 22:00-06:00, Sat|Sun 00:00-24:00"
    assert next_window_end(utc(2025, 6, 6, 23, 0), weekend, "UTC") == utc(2025, 6, 9, 6, 0)
    assert next_window_end(utc(2025, 6, 7, 23, 0), "Sat 20:00-24:00", "UTC") == utc(2025, 6, 8)


def test_a_window_that_never_closes_has_no_end() -> None:
    assert next_window_end(utc(2025, 6, 4), "* 00:00-24:00", BERLIN) is None
    assert next_window_end(utc(2025, 6, 4), "Mon-Sun 00:00-24:00", BERLIN) is None


def test_next_window_functions_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_window_start(datetime(2025, 1, 1), "Mon 08:00-09:00", BERLIN)
    with pytest.raises(WindowError, match="unknown timezone"):
        next_window_end(utc(2025, 1, 1), "Mon 08:00-09:00", "Berlin")


# --- properties -----------------------------------------------------------------------------

ZONES = [
    "UTC",
    BERLIN,
    NEW_YORK,
    "Australia/Lord_Howe",  # DST moves the clock by 30 minutes
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
]
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@st.composite
def window_parts(draw: st.DrawFn) -> tuple[str, frozenset[int], int, int]:
    """A window part as text, with the days and minutes it means (the test's own oracle)."""
    kind = draw(st.sampled_from(["every", "star", "day", "range", "list"]))
    first = draw(st.integers(0, 6))
    if kind == "every":
        text, days = "", frozenset(range(7))
    elif kind == "star":
        text, days = "* ", frozenset(range(7))
    elif kind == "day":
        text, days = f"{DAY_NAMES[first]} ", frozenset({first})
    elif kind == "range":
        span = draw(st.integers(0, 6))
        last = (first + span) % 7
        text = f"{DAY_NAMES[first]}-{DAY_NAMES[last]} "
        days = frozenset((first + offset) % 7 for offset in range(span + 1))
    else:
        chosen = draw(st.sets(st.integers(0, 6), min_size=1, max_size=4))
        text, days = "|".join(DAY_NAMES[day] for day in sorted(chosen)) + " ", frozenset(chosen)
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(1, 1440).filter(lambda minute: minute != start))
    text += f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    return text, days, start, end


def oracle(parts: list[tuple[str, frozenset[int], int, int]], local: datetime) -> bool:
    """The window read naively: the set of (weekday, minute) pairs of a week it covers."""
    covered: set[tuple[int, int]] = set()
    for _, days, start, end in parts:
        length = end - start if end > start else end + 1440 - start
        for day in days:
            for offset in range(length):
                minute = day * 1440 + start + offset
                covered.add(((minute // 1440) % 7, minute % 1440))
    return (local.weekday(), local.hour * 60 + local.minute) in covered


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(window_parts(), min_size=1, max_size=3),
    zone=st.sampled_from(ZONES),
    instant=instants,
)
def test_in_window_agrees_with_a_naive_local_time_check(
    parts: list[tuple[str, frozenset[int], int, int]], zone: str, instant: datetime
) -> None:
    spec = ", ".join(text for text, *_ in parts)
    local = instant.astimezone(ZoneInfo(zone))
    assert in_window(instant, spec, zone) is oracle(parts, local)


@settings(max_examples=40, deadline=None)
@given(part=window_parts(), zone=st.sampled_from(ZONES), instant=instants, opening=st.booleans())
def test_next_window_change_is_the_first_minute_that_changes(
    part: tuple[str, frozenset[int], int, int], zone: str, instant: datetime, opening: bool
) -> None:
    spec = part[0]
    now = instant.replace(second=0, microsecond=0)
    found = (next_window_start if opening else next_window_end)(now, spec, zone)
    if found is None:  # only a window that covers the whole week never closes
        hours = range(0, 24 * 8, 7)
        assert not opening
        assert all(in_window(now + timedelta(hours=h), spec, zone) for h in hours)
        return
    assert found >= now and in_window(found, spec, zone) is opening
    probe = now
    while probe < found:  # membership is constant within a minute for these zones
        assert in_window(probe, spec, zone) is not opening
        probe += timedelta(minutes=1)
