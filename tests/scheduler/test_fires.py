"""Planning a due schedule's fires: grace period, misfire policies, catch-up window, end."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsgate.models import MisfirePolicy, OverlapPolicy, Schedule
from opsgate.schedules.cron import parse_cron
from opsgate.schedules.fires import FireStep, first_fire, misfire_words, plan_due

HOUR = timedelta(hours=1)
NINE = datetime(2026, 3, 1, 9, tzinfo=UTC)
#: Back after a 3-hour downtime: 09:00, 10:00 and 11:00 were missed; 12:00 is 30 s late.
BACK = NINE + 3 * HOUR + timedelta(seconds=30)


def schedule(**changes: Any) -> Schedule:
    base = Schedule(
        id="sch_1",
        workflow_name="restart_service",
        cron="0 * * * *",
        timezone="UTC",
        parameters={},
        overlap_policy=OverlapPolicy.ALLOW,
        misfire_policy=MisfirePolicy.SKIP,
        owner="alice",
        enabled=True,
        start_at=None,
        end_at=None,
        next_fire_at=NINE,
        last_fire_at=None,
        last_outcome=None,
        catchup_window_seconds=4 * 3600,
        misfire_grace_seconds=60,
        idempotency_key=None,
        created_at=NINE,
        updated_at=NINE,
    )
    return dataclasses.replace(base, **changes)


def plan(now: datetime = BACK, **changes: Any) -> list[tuple[datetime, bool, datetime | None]]:
    due = schedule(**changes)
    return [(s.fire_at, s.run, s.next_at) for s in plan_due(due, parse_cron(due.cron, "UTC"), now)]


def at(hour: int) -> datetime:
    return NINE.replace(hour=hour)


def test_skip_records_the_missed_fires_once_and_runs_the_one_on_time() -> None:
    assert plan(misfire_policy=MisfirePolicy.SKIP) == [
        (at(9), False, at(12)),
        (at(12), True, at(13)),
    ]


def test_run_once_runs_one_catch_up_for_the_missed_fires() -> None:
    assert plan(misfire_policy=MisfirePolicy.RUN_ONCE) == [
        (at(9), True, at(12)),
        (at(12), True, at(13)),
    ]
    [catch_up, _] = plan_due(
        schedule(misfire_policy=MisfirePolicy.RUN_ONCE), parse_cron("0 * * * *", "UTC"), BACK
    )
    assert catch_up.data["catch_up"] is True


def test_run_all_runs_every_missed_fire_oldest_first() -> None:
    assert plan(misfire_policy=MisfirePolicy.RUN_ALL) == [
        (at(9), True, at(10)),
        (at(10), True, at(11)),
        (at(11), True, at(12)),
        (at(12), True, at(13)),
    ]


def test_fires_older_than_the_catch_up_window_are_recorded_as_missed() -> None:
    window = 2 * 3600  # back to 10:00:30: only 11:00 can be caught up
    assert plan(misfire_policy=MisfirePolicy.RUN_ALL, catchup_window_seconds=window) == [
        (at(9), False, at(11)),
        (at(11), True, at(12)),
        (at(12), True, at(13)),
    ]
    assert plan(misfire_policy=MisfirePolicy.RUN_ONCE, catchup_window_seconds=window) == [
        (at(9), False, at(11)),
        (at(11), True, at(12)),
        (at(12), True, at(13)),
    ]
    assert plan(misfire_policy=MisfirePolicy.RUN_ONCE, catchup_window_seconds=0) == [
        (at(9), False, at(12)),
        (at(12), True, at(13)),
    ]


def test_a_fire_exactly_at_the_grace_limit_is_on_time_and_just_past_it_is_missed() -> None:
    limit = at(12) + timedelta(seconds=60)
    assert plan(limit, next_fire_at=at(12)) == [(at(12), True, at(13))]
    assert plan(limit + timedelta(microseconds=1), next_fire_at=at(12)) == [(at(12), False, at(13))]


def test_nothing_is_planned_before_the_fire_time() -> None:
    assert plan(at(12) - timedelta(microseconds=1), next_fire_at=at(12)) == []
    assert plan(at(12), next_fire_at=at(12)) == [(at(12), True, at(13))]
    assert plan(next_fire_at=None) == []


def test_a_schedule_ends_at_its_end_time() -> None:
    end = at(11) + timedelta(minutes=30)
    assert plan(misfire_policy=MisfirePolicy.SKIP, end_at=end) == [(at(9), False, None)]
    assert plan(misfire_policy=MisfirePolicy.RUN_ALL, end_at=end)[-1] == (at(11), True, None)


def test_steps_are_capped_per_pass() -> None:
    steps = plan_due(
        schedule(cron="* * * * * *", next_fire_at=NINE, misfire_grace_seconds=3600),
        parse_cron("* * * * * *", "UTC"),
        NINE + timedelta(minutes=10),
        limit=5,
    )
    assert [s.fire_at for s in steps] == [NINE + timedelta(seconds=i) for i in range(5)]
    assert steps[-1].next_at == NINE + timedelta(seconds=5)


def test_the_first_fire_is_after_now_and_not_before_the_start() -> None:
    cron = parse_cron("0 * * * *", "UTC")
    assert first_fire(cron, NINE, None, None) == at(10)
    assert first_fire(cron, NINE, at(12), None) == at(12)
    assert first_fire(cron, NINE, at(12), at(11)) is None


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        (MisfirePolicy.SKIP, "are skipped"),
        (MisfirePolicy.RUN_ONCE, "one catch-up execution runs for the fires missed in the last 2"),
        (MisfirePolicy.RUN_ALL, "every fire missed in the last 2 hours runs"),
    ],
)
def test_misfire_policies_are_explained_in_words(policy: MisfirePolicy, words: str) -> None:
    text = misfire_words(policy, 7200, 90)
    assert words in text and "90 seconds late" in text


def test_fire_steps_carry_their_misfire_data() -> None:
    [missed, _] = plan_due(schedule(), parse_cron("0 * * * *", "UTC"), BACK)
    assert missed == FireStep(
        at(9),
        False,
        at(12),
        {
            "misfire_policy": "skip",
            "missed": {
                "from": at(9).isoformat(),
                "until": (BACK - timedelta(minutes=1)).isoformat(),
            },
        },
    )
