"""Domain records and the event vocabulary."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import pytest

from opsgate.engine.statuses import (
    APPROVAL_MACHINE,
    EXECUTION_MACHINE,
    STEP_RUN_MACHINE,
    ExecutionStatus,
    Machine,
    StepRunStatus,
    Trigger,
)
from opsgate.models import (
    APPROVAL_EVENTS,
    EXECUTION_EVENTS,
    FIRE_EVENTS,
    STEP_RUN_EVENTS,
    EventType,
    ExecutionTransition,
    FireOutcome,
    StepRunTransition,
    content_digest,
)


def test_content_digest_ignores_key_order_and_spacing() -> None:
    assert content_digest({"b": [1, 2], "a": "é"}) == content_digest({"a": "é", "b": [1, 2]})


def test_content_digest_is_sha256_of_canonical_json() -> None:
    expected = hashlib.sha256('{"a":"é","b":[1,2]}'.encode()).hexdigest()
    assert content_digest({"b": [1, 2], "a": "é"}) == expected


def test_content_digest_tells_different_content_apart() -> None:
    assert content_digest({"a": 1}) != content_digest({"a": "1"})


@pytest.mark.parametrize(
    ("machine", "events", "prefix"),
    [
        (EXECUTION_MACHINE, EXECUTION_EVENTS, "execution."),
        (STEP_RUN_MACHINE, STEP_RUN_EVENTS, "step."),
        (APPROVAL_MACHINE, APPROVAL_EVENTS, "approval."),
    ],
    ids=["execution", "step run", "approval"],
)
def test_every_trigger_of_a_machine_has_an_event_of_its_entity(
    machine: Machine[Any], events: Mapping[Trigger, EventType], prefix: str
) -> None:
    triggers = {trigger for _status, trigger in machine.transitions}
    assert set(events) == triggers
    assert all(event.value.startswith(prefix) for event in events.values())


def test_every_fire_outcome_has_a_schedule_event() -> None:
    assert set(FIRE_EVENTS) == set(FireOutcome)
    assert all(event.value.startswith("schedule.") for event in FIRE_EVENTS.values())


def test_event_types_are_dotted_lowercase_names() -> None:
    pattern = re.compile(r"^(execution|step|approval|schedule|lock)\.[a-z_]+$")
    assert [e.value for e in EventType if not pattern.match(e.value)] == []


def test_changes_of_a_batch_are_frozen_and_start_without_field_changes() -> None:
    first = ExecutionTransition(
        execution_id="exe_1", trigger=Trigger.START, expected=ExecutionStatus.PENDING, actor="w"
    )
    second = StepRunTransition(
        step_run_id="sr_1", trigger=Trigger.START, expected=StepRunStatus.PENDING, actor="w"
    )
    assert (first.changes, second.changes, first.lease_owner, first.data) == ({}, {}, None, None)
    assert (
        first.changes
        is not ExecutionTransition(
            execution_id="exe_2", trigger=Trigger.START, expected=ExecutionStatus.PENDING, actor="w"
        ).changes
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.lease_owner = "w"  # type: ignore[misc]


def test_a_rerun_and_a_failed_compensation_have_events_of_their_own() -> None:
    assert EXECUTION_EVENTS[Trigger.RERUN] is EventType.EXECUTION_RERUN
    assert STEP_RUN_EVENTS[Trigger.RERUN] is EventType.STEP_RERUN_REQUESTED
    assert STEP_RUN_EVENTS[Trigger.FAIL_ROLLBACK] is EventType.STEP_ROLLBACK_FAILED
    assert len(set(STEP_RUN_EVENTS.values())) == len(STEP_RUN_EVENTS)
