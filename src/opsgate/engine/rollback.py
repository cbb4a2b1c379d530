"""Rollback planning: which compensations run, in which order.

Compensations run for completed step runs only, in reverse completion order, and a step is undone
only after every step that depends on it (directly or not) has been undone. Then the blueprint's
``rollback_plan.on_failure`` actions run in order, and ``finally`` actions close every execution
whatever its outcome. Plan-level actions are tracked as step runs whose step id starts with ``@``
(``@on_failure.page``), which no blueprint step id can, so their progress survives a crash too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from opsgate.engine.statuses import StepRunStatus
from opsgate.models import StepRun
from opsgate.spec.model import CompensationSpec, RollbackActionSpec, StepSpec, WorkflowSpec

ON_FAILURE = "@on_failure"
FINALLY = "@finally"


@dataclass(frozen=True, slots=True)
class Compensation:
    """The undo of one completed step run."""

    run: StepRun
    step: StepSpec
    spec: CompensationSpec


def plan_step_id(phase: str, action: RollbackActionSpec) -> str:
    """The step id under which a rollback-plan action is tracked: ``@on_failure.<id>``."""
    return f"{phase}.{action.id}"


def plan_actions(spec: WorkflowSpec, phase: str) -> tuple[RollbackActionSpec, ...]:
    """The blueprint's ``on_failure`` or ``finally`` actions."""
    return spec.rollback_plan.on_failure if phase == ON_FAILURE else spec.rollback_plan.finally_


def pending_compensations(spec: WorkflowSpec, runs: Sequence[StepRun]) -> list[Compensation]:
    """Compensations still to run, in the order they must run."""
    steps = {step.id: step for step in spec.steps}
    todo = [
        run
        for run in runs
        if run.status is StepRunStatus.SUCCEEDED
        and run.step_id in steps
        and steps[run.step_id].rollback is not None
    ]
    todo.sort(key=_completion, reverse=True)
    dependents = _transitive_dependents(spec)
    ordered: list[StepRun] = []
    remaining = list(todo)
    while remaining:
        pending_steps = {run.step_id for run in remaining}
        # The latest-finished run none of whose dependents still waits to be undone.
        index = next(
            (
                i
                for i, run in enumerate(remaining)
                if not (dependents[run.step_id] & (pending_steps - {run.step_id}))
            ),
            0,
        )
        ordered.append(remaining.pop(index))
    return [
        Compensation(run, steps[run.step_id], steps[run.step_id].rollback)  # type: ignore[arg-type]
        for run in ordered
    ]


def needs_rollback(spec: WorkflowSpec, runs: Sequence[StepRun]) -> bool:
    """Whether a failed or cleaned-up execution has anything to undo or report."""
    if not spec.rollback_on_failure:
        return False
    return bool(pending_compensations(spec, runs) or spec.rollback_plan.on_failure)


def _completion(run: StepRun) -> tuple[datetime, int]:
    finished = run.finished_at or run.updated_at
    return finished, run.item_index if run.item_index is not None else -1


def _transitive_dependents(spec: WorkflowSpec) -> Mapping[str, frozenset[str]]:
    direct: dict[str, set[str]] = {step.id: set() for step in spec.steps}
    for step in spec.steps:
        for dependency in step.depends_on:
            direct.setdefault(dependency, set()).add(step.id)
    closed: dict[str, frozenset[str]] = {}

    def close(step_id: str, seen: frozenset[str]) -> frozenset[str]:
        if step_id in closed:
            return closed[step_id]
        found = set(direct.get(step_id, ()))
        for child in direct.get(step_id, ()):
            if child not in seen:
                found |= close(child, seen | {child})
        closed[step_id] = frozenset(found)
        return closed[step_id]

    return {step_id: close(step_id, frozenset({step_id})) for step_id in direct}
