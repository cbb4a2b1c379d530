"""Which compensations run, and in which order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsgate.engine.rollback import needs_rollback, pending_compensations
from opsgate.engine.statuses import StepRunStatus
from opsgate.models import StepRun
from opsgate.spec.model import WorkflowSpec

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNDO = {"action": "log", "with": {"message": "undo"}}


def spec(*steps: dict[str, Any], **fields: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {"name": "w", "version": "1", "steps": list(steps), **fields}
    )


def run(
    step_id: str, finished_after: int, status: str = "succeeded", item: int | None = None
) -> StepRun:
    at = T0 + timedelta(seconds=finished_after)
    return StepRun(
        id=f"sr_{step_id}_{item}",
        execution_id="exe",
        step_id=step_id,
        item_key="" if item is None else str(item),
        item_index=item,
        target=None,
        status=StepRunStatus(status),
        attempt=1,
        next_attempt_at=None,
        started_at=at,
        finished_at=at,
        outputs={},
        error=None,
        created_at=T0,
        updated_at=at,
    )


def order(workflow: WorkflowSpec, runs: list[StepRun]) -> list[str]:
    return [c.run.id for c in pending_compensations(workflow, runs)]


def test_compensations_run_in_reverse_completion_order() -> None:
    workflow = spec(
        {"id": "a", "action": "log", "rollback": UNDO},
        {"id": "b", "action": "log", "rollback": UNDO},
    )
    assert order(workflow, [run("a", 1), run("b", 2)]) == ["sr_b_None", "sr_a_None"]


def test_a_step_is_undone_only_after_its_dependents_even_if_it_finished_later() -> None:
    # ``a`` was rerun after ``c`` (which depends on it) had finished.
    workflow = spec(
        {"id": "a", "action": "log", "rollback": UNDO},
        {"id": "c", "action": "log", "depends_on": ["a"], "rollback": UNDO},
    )
    assert order(workflow, [run("a", 5), run("c", 2)]) == ["sr_c_None", "sr_a_None"]


def test_only_succeeded_runs_with_a_compensation_are_undone() -> None:
    workflow = spec(
        {"id": "a", "action": "log", "rollback": UNDO},
        {"id": "b", "action": "log"},
        {"id": "c", "action": "log", "rollback": UNDO},
        {"id": "d", "action": "log", "rollback": UNDO},
    )
    runs = [run("a", 1), run("b", 2), run("c", 3, "failed"), run("d", 4, "rolled_back")]
    assert order(workflow, runs) == ["sr_a_None"]


def test_each_fan_out_run_is_undone_latest_first() -> None:
    workflow = spec({"id": "f", "action": "log", "for_each": [1, 2, 3], "rollback": UNDO})
    runs = [run("f", 3, item=0), run("f", 1, item=1), run("f", 2, item=2)]
    assert order(workflow, runs) == ["sr_f_0", "sr_f_2", "sr_f_1"]


def test_rollback_is_needed_for_compensations_or_on_failure_actions_unless_disabled() -> None:
    plain = spec({"id": "a", "action": "log"})
    assert not needs_rollback(plain, [run("a", 1)])
    with_plan = spec(
        {"id": "a", "action": "log"},
        rollback_plan={"on_failure": [{"id": "n", "action": "log", "with": {"message": "x"}}]},
    )
    assert needs_rollback(with_plan, [])
    undo = spec({"id": "a", "action": "log", "rollback": UNDO})
    assert needs_rollback(undo, [run("a", 1)])
    disabled = spec({"id": "a", "action": "log", "rollback": UNDO}, rollback_on_failure=False)
    assert not needs_rollback(disabled, [run("a", 1)])
