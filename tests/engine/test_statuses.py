"""Every (status, trigger) pair of every machine, against transitions written out from DESIGN.md
and from what the engine needs (operator reruns, failed compensations, deadlines during retries).

The expected transitions below are a second, independent spelling of the state machines; a
change to the tables in ``engine/statuses.py`` must be made here too, on purpose.
"""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Any

import pytest

from opsgate.engine.statuses import (
    APPROVAL_MACHINE,
    APPROVAL_TERMINAL,
    EXECUTION_MACHINE,
    EXECUTION_TERMINAL,
    STEP_RUN_MACHINE,
    STEP_RUN_TERMINAL,
    ApprovalStatus,
    ExecutionStatus,
    Machine,
    StepRunStatus,
    Trigger,
    next_status,
)
from opsgate.errors import InvalidTransitionError

EXECUTION_TRANSITIONS = """
pending          start            running
pending          fail             failed
pending          cancel           cancelled
running          request_approval waiting_approval
running          pause            paused
running          succeed          succeeded
running          fail             failed
running          cancel           cancelled
waiting_approval approve          running
waiting_approval fail             failed
waiting_approval cancel           cancelled
paused           resume           running
paused           fail             failed
paused           cancel           cancelled
failed           rerun            running
failed           begin_rollback   rolling_back
cancelled        begin_rollback   rolling_back
rolling_back     finish_rollback  rolled_back
rolling_back     fail_rollback    rollback_failed
"""

STEP_RUN_TRANSITIONS = """
pending          start            running
pending          request_approval waiting_approval
pending          skip             skipped
pending          fail             failed
pending          cancel           cancelled
waiting_approval start            running
waiting_approval fail             failed
waiting_approval cancel           cancelled
running          succeed          succeeded
running          fail             failed
running          retry            retrying
running          time_out         timed_out
running          cancel           cancelled
running          interrupt        interrupted
retrying         start            running
retrying         fail             failed
retrying         cancel           cancelled
succeeded        compensate       rolled_back
succeeded        fail_rollback    rollback_failed
failed           rerun            pending
timed_out        rerun            pending
interrupted      rerun            pending
cancelled        rerun            pending
"""

APPROVAL_TRANSITIONS = """
pending approve   granted
pending reject    rejected
pending expire    expired
pending escalate  escalated
pending supersede superseded
pending cancel    cancelled
"""

ROLLBACK_TRIGGERS = {Trigger.BEGIN_ROLLBACK, Trigger.COMPENSATE, Trigger.FAIL_ROLLBACK}

MACHINES: list[
    tuple[
        Machine[ExecutionStatus] | Machine[StepRunStatus] | Machine[ApprovalStatus],
        type[StrEnum],
        str,
    ]
] = [
    (EXECUTION_MACHINE, ExecutionStatus, EXECUTION_TRANSITIONS),
    (STEP_RUN_MACHINE, StepRunStatus, STEP_RUN_TRANSITIONS),
    (APPROVAL_MACHINE, ApprovalStatus, APPROVAL_TRANSITIONS),
]


def _expected(statuses: type[StrEnum], text: str) -> dict[tuple[StrEnum, Trigger], StrEnum]:
    rows = (line.split() for line in text.strip().splitlines())
    return {(statuses(current), Trigger(trigger)): statuses(new) for current, trigger, new in rows}


def _every_pair() -> list[Any]:
    cases: list[Any] = []
    for machine, statuses, text in MACHINES:
        expected = _expected(statuses, text)
        for current, trigger in itertools.product(statuses, Trigger):
            cases.append(
                pytest.param(
                    machine,
                    current,
                    trigger,
                    expected.get((current, trigger)),
                    id=f"{machine.entity}:{current}-{trigger}",
                )
            )
    return cases


@pytest.mark.parametrize(("machine", "current", "trigger", "expected"), _every_pair())
def test_each_status_and_trigger_pair_follows_the_design(
    machine: Machine[ExecutionStatus],
    current: ExecutionStatus,
    trigger: Trigger,
    expected: ExecutionStatus | None,
) -> None:
    if expected is None:
        with pytest.raises(InvalidTransitionError) as raised:
            next_status(machine, current, trigger, entity_id="id-1")
        assert raised.value.current == current
        assert raised.value.attempted == trigger
        assert f"it is {current}" in str(raised.value)
        assert "id-1" in str(raised.value)
    else:
        assert next_status(machine, current, trigger, entity_id="id-1") == expected


@pytest.mark.parametrize(
    ("machine", "statuses", "text"), MACHINES, ids=lambda m: getattr(m, "entity", "")
)
def test_tables_list_no_transition_beyond_the_design(
    machine: Machine[ExecutionStatus], statuses: type[StrEnum], text: str
) -> None:
    assert dict(machine.transitions) == _expected(statuses, text)


@pytest.mark.parametrize(
    ("machine", "terminal"),
    [
        (EXECUTION_MACHINE, EXECUTION_TERMINAL),
        (STEP_RUN_MACHINE, STEP_RUN_TERMINAL),
        (APPROVAL_MACHINE, APPROVAL_TERMINAL),
    ],
    ids=["execution", "step run", "approval"],
)
def test_terminal_statuses_are_left_only_through_rollback_or_an_operators_rerun(
    machine: Machine[ExecutionStatus], terminal: frozenset[ExecutionStatus]
) -> None:
    for current, trigger in machine.transitions:
        if current in terminal:
            assert trigger in ROLLBACK_TRIGGERS | {Trigger.RERUN}, f"{current} --{trigger}-->"


def test_nothing_undone_is_rerun_and_a_rollback_is_not_interrupted() -> None:
    rerunnable = {status for status, trigger in EXECUTION_MACHINE.transitions if trigger == "rerun"}
    assert rerunnable == {ExecutionStatus.FAILED}
    leaving_rollback = {
        trigger
        for status, trigger in EXECUTION_MACHINE.transitions
        if status is ExecutionStatus.ROLLING_BACK
    }
    assert leaving_rollback == {Trigger.FINISH_ROLLBACK, Trigger.FAIL_ROLLBACK}
    for undone in (StepRunStatus.ROLLED_BACK, StepRunStatus.ROLLBACK_FAILED):
        with pytest.raises(InvalidTransitionError):
            next_status(STEP_RUN_MACHINE, undone, Trigger.RERUN, entity_id="sr-1")


def test_every_rerun_leads_back_to_work_and_every_end_of_a_rollback_is_terminal() -> None:
    for (_status, trigger), new in STEP_RUN_MACHINE.transitions.items():
        if trigger is Trigger.RERUN:
            assert new is StepRunStatus.PENDING
        if trigger in {Trigger.COMPENSATE, Trigger.FAIL_ROLLBACK}:
            assert new in STEP_RUN_TERMINAL


def test_every_status_is_reachable_and_only_a_step_rerun_returns_to_pending() -> None:
    for machine, statuses, _text in MACHINES:
        reached = set(machine.transitions.values())
        assert reached | {statuses("pending")} == set(statuses), machine.entity
    back_to_pending = {
        trigger
        for machine, _statuses, _text in MACHINES
        for (_status, trigger), new in machine.transitions.items()
        if new == "pending"
    }
    assert back_to_pending == {Trigger.RERUN}
