"""The conductor's decisions on hand-built states (pure: no store, no worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from opsgate.engine.conductor import Conductor, ExecutionFacts, StepPhase, progress
from opsgate.engine.statuses import StepRunStatus
from opsgate.models import StepRun
from opsgate.spec.model import WorkflowSpec

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def conductor(
    *steps: dict[str, Any],
    params: dict[str, Any] | None = None,
    targets: list[dict[str, Any]] | None = None,
) -> Conductor:
    spec = WorkflowSpec.model_validate({"name": "w", "version": "1", "steps": list(steps)})
    facts = ExecutionFacts("exe", "w", "alice", params or {}, targets or [])
    return Conductor(spec, facts)


def run(
    step_id: str,
    status: str,
    item: int | None = None,
    *,
    due: datetime | None = None,
    outputs: dict[str, Any] | None = None,
) -> StepRun:
    return StepRun(
        id=f"sr_{step_id}_{item}",
        execution_id="exe",
        step_id=step_id,
        item_key="" if item is None else str(item),
        item_index=item,
        target=None,
        status=StepRunStatus(status),
        attempt=1,
        next_attempt_at=due,
        started_at=None,
        finished_at=None,
        outputs=outputs,
        error=None,
        created_at=NOW,
        updated_at=NOW,
    )


def test_roots_are_created_first_and_dependents_wait() -> None:
    decision = conductor(
        {"id": "a", "action": "log"}, {"id": "b", "action": "log", "depends_on": ["a"]}
    ).decide([], NOW)
    assert [new.step_id for new in decision.create] == ["a"]
    assert decision.outcome is None


def test_created_runs_start_and_completion_ends_the_forward_phase() -> None:
    c = conductor({"id": "a", "action": "log"})
    assert [r.id for r in c.decide([run("a", "pending")], NOW).start] == ["sr_a_None"]
    done = c.decide([run("a", "succeeded")], NOW)
    assert done.outcome is not None and done.outcome.succeeded


def test_a_false_condition_skips_with_its_reason() -> None:
    c = conductor({"id": "a", "action": "log", "when": "params.go"}, params={"go": False})
    assert c.decide([], NOW).skip == (("a", "condition 'params.go' is false"),)


def test_a_broken_condition_fails_the_step_before_it_runs() -> None:
    c = conductor({"id": "a", "action": "log", "when": "params.missing > 1"})
    [failure] = c.decide([], NOW).fail
    assert failure.step_id == "a" and "params.missing" in failure.message


def test_a_for_each_that_is_not_a_list_fails_the_step() -> None:
    c = conductor({"id": "a", "action": "log", "for_each": "{{ params.n }}"}, params={"n": 3})
    [failure] = c.decide([], NOW).fail
    assert "must give a list, not int" in failure.message


def test_fan_out_over_targets_creates_one_run_per_target() -> None:
    c = conductor(
        {"id": "a", "action": "log", "for_each": "targets"},
        targets=[{"name": "web-1"}, {"name": "web-2"}],
    )
    created = c.decide([], NOW).create
    assert [(n.item_key, n.item_index, n.target) for n in created] == [
        ("web-1", 0, "web-1"),
        ("web-2", 1, "web-2"),
    ]


def test_max_parallel_counts_running_runs() -> None:
    c = conductor({"id": "a", "action": "log", "for_each": [1, 2, 3, 4], "max_parallel": 2})
    runs = [
        run("a", "running", 0),
        run("a", "pending", 1),
        run("a", "pending", 2),
        run("a", "pending", 3),
    ]
    assert [r.item_index for r in c.decide(runs, NOW).start] == [1]


def test_a_retry_starts_when_due_and_sets_the_wake_up_before() -> None:
    c = conductor({"id": "a", "action": "log"})
    later = NOW + timedelta(seconds=5)
    waiting = c.decide([run("a", "retrying", due=later)], NOW)
    assert (waiting.start, waiting.wake_at) == ((), later)
    assert c.decide([run("a", "retrying", due=later)], later).start


def test_after_a_failure_nothing_new_starts_and_the_end_waits_for_running_runs() -> None:
    c = conductor(
        {"id": "a", "action": "log"},
        {"id": "b", "action": "log"},
        {"id": "c", "action": "log", "depends_on": ["a"]},
    )
    busy = c.decide([run("a", "failed"), run("b", "running")], NOW)
    assert (busy.start, busy.create, busy.outcome) == ((), (), None)
    ended = c.decide([run("a", "failed"), run("b", "succeeded")], NOW)
    assert ended.outcome is not None and not ended.outcome.succeeded
    assert ended.outcome.step_id == "a"


def test_a_gated_step_waits_for_its_gates_to_be_checked() -> None:
    c = conductor({"id": "a", "action": "log", "approval": {"approvers": {"principals": ["bob"]}}})
    [created] = c.decide([], NOW, gated={"a"}).create
    assert created.step_id == "a"
    held = c.decide([run("a", "pending")], NOW, gated={"a"})
    assert (held.gate, held.start, held.has_work) == (("a",), (), False)
    [started] = c.decide([run("a", "waiting_approval")], NOW, gated=()).start
    assert started.status == "waiting_approval"


def test_not_accepting_starts_nothing() -> None:
    c = conductor({"id": "a", "action": "log"})
    assert not c.decide([run("a", "pending")], NOW, accepting=False).has_work


def test_fan_out_outputs_are_lists_in_item_order_and_progress_counts_runs() -> None:
    c = conductor(
        {"id": "a", "action": "log", "for_each": [1, 2]},
        {"id": "b", "action": "log", "depends_on": ["a"]},
    )
    runs = [
        run("a", "succeeded", 1, outputs={"v": "y"}),
        run("a", "succeeded", 0, outputs={"v": "x"}),
    ]
    views = c.views(runs)
    assert views["a"].outputs() == {"v": ["x", "y"]}
    assert views["a"].phase is StepPhase.SUCCEEDED
    assert progress(views) == 50.0
    assert progress(c.views([run("a", "succeeded", 0), run("a", "running", 1)])) == 25.0


def test_a_batch_over_its_failure_budget_cancels_the_runs_that_waited_for_its_gate() -> None:
    """A gated fan-out: its runs wait for the gate, then start max_parallel at a time. Once
    too many failed, the runs that never started are cancelled, whatever they waited for,
    so that the step (and the execution) can end."""
    c = conductor(
        {
            "id": "a",
            "action": "log",
            "for_each": [1, 2, 3],
            "max_parallel": 1,
            "approval": {"approvers": {"principals": ["bob"]}},
        }
    )
    runs = [run("a", "failed", 0), run("a", "waiting_approval", 1), run("a", "pending", 2)]
    decision = c.decide(runs, NOW, gated=())
    assert sorted(r.item_index for r in decision.cancel) == [1, 2]
    assert decision.start == ()
