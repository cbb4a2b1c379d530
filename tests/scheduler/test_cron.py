"""Cron fire times across DST changes in Europe/Berlin and America/New_York, and parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsgate.schedules.cron import CronError, DstNote, parse_cron, schedule_problems

TICK = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *more: int) -> datetime:
    second, microsecond = (*more, 0, 0)[:2]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def fires(cron: str, timezone: str, after: datetime, count: int) -> list[tuple[datetime, str]]:
    found = parse_cron(cron, timezone).fires(after, count)
    return [(fire.at, str(fire.dst) if fire.dst else "") for fire in found]


# -- spring forward: Europe/Berlin 2026-03-29 01:00 UTC (02:00 CET -> 03:00 CEST) --------------


def test_berlin_a_wall_clock_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        (utc(2026, 3, 29, 1, 0), "shifted"),  # 03:00 CEST: 02:30 does not exist
        (utc(2026, 3, 30, 0, 30), ""),  # 02:30 CEST
    ]
    fire = parse_cron("30 2 * * *", "Europe/Berlin").next_fire(utc(2026, 3, 28, 12))
    assert fire.local.strftime("%H:%M %Z") == "03:00 CEST"
    assert fire.wall == datetime(2026, 3, 29, 2, 30)
    assert "02:30:00 does not exist on 2026-03-29" in (fire.explain() or "")


def test_berlin_an_interval_schedule_skips_the_spring_gap_and_keeps_elapsed_time() -> None:
    assert fires("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 15), 4) == [
        (utc(2026, 3, 29, 0, 30), ""),  # 01:30 CET
        (utc(2026, 3, 29, 1, 0), "after_gap"),  # 03:00 CEST; 02:00 and 02:30 never existed
        (utc(2026, 3, 29, 1, 30), ""),
        (utc(2026, 3, 29, 2, 0), ""),
    ]


def test_the_gap_fire_is_due_just_before_the_change_and_not_again_at_it() -> None:
    cron = parse_cron("30 2 * * *", "Europe/Berlin")
    change = utc(2026, 3, 29, 1, 0)
    assert cron.next_fire(change - TICK).at == change
    assert cron.next_fire(change).at == utc(2026, 3, 30, 0, 30)


def test_a_gap_fire_merges_with_a_fire_at_the_end_of_the_gap() -> None:
    assert fires("0,30 2,3 * * *", "Europe/Berlin", utc(2026, 3, 29, 0), 3) == [
        (utc(2026, 3, 29, 1, 0), "shifted"),  # 02:00, 02:30 and 03:00 CEST: one fire
        (utc(2026, 3, 29, 1, 30), ""),  # 03:30 CEST
        (utc(2026, 3, 30, 0, 0), ""),  # 02:00 CEST next day
    ]


# -- fall back: Europe/Berlin 2026-10-25 01:00 UTC (03:00 CEST -> 02:00 CET) -------------------


def test_berlin_a_repeated_wall_clock_time_fires_once_at_its_first_occurrence() -> None:
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2) == [
        (utc(2026, 10, 25, 0, 30), "repeated_once"),  # 02:30 CEST; not 02:30 CET
        (utc(2026, 10, 26, 1, 30), ""),
    ]


def test_berlin_inside_the_second_pass_a_wall_clock_time_does_not_fire_again() -> None:
    second_pass = utc(2026, 10, 25, 1, 10)  # 02:10 CET, after 02:30 CEST fired
    assert parse_cron("30 2 * * *", "Europe/Berlin").next_fire(second_pass).at == utc(
        2026, 10, 26, 1, 30
    )


def test_berlin_an_interval_schedule_fires_in_both_passes_of_the_repeated_hour() -> None:
    assert fires("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 30), 3) == [
        (utc(2026, 10, 25, 0), "repeated_first"),  # 02:00 CEST
        (utc(2026, 10, 25, 1), "repeated_second"),  # 02:00 CET
        (utc(2026, 10, 25, 2), ""),  # 03:00 CET: one fire per real hour throughout
    ]


# -- America/New_York: spring 2026-03-08 07:00 UTC, fall 2026-11-01 06:00 UTC --------------------


def test_new_york_spring_forward_shifts_a_wall_clock_time_to_the_end_of_the_gap() -> None:
    assert fires("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2) == [
        (utc(2026, 3, 8, 7, 0), "shifted"),  # 03:00 EDT
        (utc(2026, 3, 9, 6, 30), ""),  # 02:30 EDT
    ]


def test_new_york_fall_back_fires_a_wall_clock_time_once() -> None:
    assert fires("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) == [
        (utc(2026, 11, 1, 5, 30), "repeated_once"),  # 01:30 EDT; not 01:30 EST
        (utc(2026, 11, 2, 6, 30), ""),
    ]


def test_new_york_fall_back_repeats_an_interval_schedule() -> None:
    assert fires("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 45), 5) == [
        (utc(2026, 11, 1, 5, 0), "repeated_first"),  # 01:00 EDT
        (utc(2026, 11, 1, 5, 30), "repeated_first"),  # 01:30 EDT
        (utc(2026, 11, 1, 6, 0), "repeated_second"),  # 01:00 EST
        (utc(2026, 11, 1, 6, 30), "repeated_second"),  # 01:30 EST
        (utc(2026, 11, 1, 7, 0), ""),  # 02:00 EST
    ]


# -- plain times, forms, thresholds ---------------------------------------------------------


def test_a_fire_is_strictly_after_the_instant_asked_for() -> None:
    cron = parse_cron("0 9 * * 1-5", "Europe/Berlin")
    fire = utc(2026, 3, 2, 8)  # Monday 09:00 CET
    assert cron.next_fire(fire - TICK).at == fire
    assert cron.next_fire(fire).at == utc(2026, 3, 3, 8)


def test_six_fields_put_seconds_first_and_aliases_expand() -> None:
    assert [at for at, _ in fires("*/20 * * * * *", "UTC", utc(2026, 3, 1, 9, 0, 5), 3)] == [
        utc(2026, 3, 1, 9, 0, 20),
        utc(2026, 3, 1, 9, 0, 40),
        utc(2026, 3, 1, 9, 1, 0),
    ]
    cron = parse_cron("@daily", "Asia/Tokyo")
    assert cron.next_fire(utc(2026, 3, 1, 9)).at == utc(2026, 3, 1, 15)  # midnight JST
    assert not cron.interval and parse_cron("@hourly", "UTC").interval


def test_a_yearly_fire_across_dst_changes_uses_the_offset_of_its_own_date() -> None:
    assert fires("0 3 1 7 *", "Europe/Berlin", utc(2026, 1, 10), 2) == [
        (utc(2026, 7, 1, 1), ""),  # 03:00 CEST
        (utc(2027, 7, 1, 1), ""),
    ]


def test_dst_notes_are_enumerated_in_words() -> None:
    assert {str(note) for note in DstNote} == {
        "shifted",
        "repeated_once",
        "repeated_first",
        "repeated_second",
        "after_gap",
    }


# -- problems -----------------------------------------------------------------------------


def test_an_invalid_cron_and_an_unknown_timezone_are_both_reported() -> None:
    problems = schedule_problems("61 * * * *", "Europe/Berln")
    assert len(problems) == 2
    assert "invalid cron '61 * * * *'" in problems[0].problem
    assert "unknown timezone 'Europe/Berln'" in problems[1].problem
    assert problems[1].hint == "did you mean 'Europe/Berlin'?"


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("* * * *", "has 4 field(s), not 5 or 6"),
        ("0 0 1 1 * 2030", "out of range"),
        ("0 0 * * * * *", "has 7 field(s), not 5 or 6"),
        ("every day", "has 2 field(s)"),
        ("0 0 30 2 *", "never fires"),
        (5, "cron must be a string, not int"),
    ],
)
def test_unusable_cron_expressions_say_what_is_wrong(cron: object, expected: str) -> None:
    [problem] = schedule_problems(cron, "UTC")
    assert expected in str(problem)
    assert problem.hint


def test_parse_cron_raises_the_first_problem() -> None:
    with pytest.raises(CronError, match="unknown timezone 'Mars/Olympus'"):
        parse_cron("0 * * * *", "Mars/Olympus")
    assert schedule_problems("0 * * * *", "UTC") == []
