"""The conductor: from a blueprint snapshot and the step runs so far, what happens next.

Pure and deterministic: it reads records and returns a :class:`Decision`; the worker persists
and performs it, then asks again. Rules, in the order they apply:

- A step is *ready* when every step it depends on is complete (succeeded, skipped, or failed
  with the failure tolerated). A ready step's ``when`` is evaluated once: false skips it, and a
  skipped step counts as complete for its dependents. Otherwise its runs are created: one, or
  one per item of its ``for_each``.
- Pending runs start, at most ``max_parallel`` of a step at once; retrying runs start when their
  ``next_attempt_at`` is due (the earliest future one becomes ``wake_at``).
- A fan-out step stops starting runs once more than ``max_failed_percentage`` of its runs have
  failed (0 unless set; ``continue_on_error`` tolerates every failure) and cancels the rest.
- Once a step has failed for good, nothing new starts anywhere, and when no run is left running
  the forward phase is over with a failure (runs not started stay pending, for ``retry_step``).
- When every step is complete, the forward phase is over with success.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from opsgate.engine.context import aggregate_outputs, execution_variables
from opsgate.engine.statuses import StepRunStatus
from opsgate.expressions import ExpressionError, evaluate, render
from opsgate.models import NewStepRun, StepRun
from opsgate.spec.model import StepSpec, WorkflowSpec

_S = StepRunStatus
_ACTIVE = frozenset({_S.PENDING, _S.WAITING_APPROVAL, _S.RUNNING, _S.RETRYING})
_FAILED = frozenset({_S.FAILED, _S.TIMED_OUT, _S.INTERRUPTED})


class StepPhase(StrEnum):
    """Where a whole step stands, judged from its runs."""

    #: No run yet: its dependencies are not complete, or the execution stopped before it.
    WAITING = "waiting"
    #: Some run is pending, waiting for approval, running or retrying.
    ACTIVE = "active"
    #: Every run succeeded, or the failures are tolerated.
    SUCCEEDED = "succeeded"
    #: Its ``when`` was false.
    SKIPPED = "skipped"
    #: A run failed for good and the failure is not tolerated.
    FAILED = "failed"


COMPLETE = frozenset({StepPhase.SUCCEEDED, StepPhase.SKIPPED})


@dataclass(frozen=True, slots=True)
class StepView:
    """One step with its runs, in item order, and what they add up to."""

    spec: StepSpec
    runs: tuple[StepRun, ...]
    phase: StepPhase
    failed: int

    @property
    def running(self) -> int:
        return sum(run.status is _S.RUNNING for run in self.runs)

    @property
    def finished(self) -> int:
        return sum(run.status not in _ACTIVE for run in self.runs)

    def outputs(self) -> Any:
        """What ``steps.<id>.outputs`` reads: one run's outputs, or lists for a fan-out."""
        done = [dict(run.outputs or {}) for run in self.runs]
        if self.spec.for_each is None:
            return done[0] if done else {}
        return aggregate_outputs(done)


@dataclass(frozen=True, slots=True)
class StepFailure:
    """A step that could not even be prepared (its ``when`` or ``for_each`` failed)."""

    step_id: str
    message: str
    error_type: str = "ExpressionError"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of the forward phase: success, or the failure that ended it."""

    succeeded: bool
    reason: str = ""
    step_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the worker does next; an empty decision means: wait for running runs or ``wake_at``."""

    create: tuple[NewStepRun, ...] = ()
    skip: tuple[tuple[str, str], ...] = ()
    fail: tuple[StepFailure, ...] = ()
    start: tuple[StepRun, ...] = ()
    cancel: tuple[StepRun, ...] = ()
    wake_at: datetime | None = None
    outcome: Outcome | None = None
    #: Steps whose runs would start but whose gates are not known to be cleared: check them.
    gate: tuple[str, ...] = ()

    @property
    def has_work(self) -> bool:
        return bool(self.create or self.skip or self.fail or self.start or self.cancel)


@dataclass(frozen=True, slots=True)
class ExecutionFacts:
    """The parts of an execution that templates and conditions read."""

    execution_id: str
    workflow_name: str
    requested_by: str
    params: Mapping[str, Any]
    targets: Sequence[Mapping[str, Any]] = ()
    #: A policy's cap on every step's ``max_parallel``.
    max_parallel: int | None = None


@dataclass(slots=True)
class Conductor:
    """Decides the next moves of one execution of one blueprint snapshot."""

    spec: WorkflowSpec
    facts: ExecutionFacts
    #: ``approvals.<step>``: the granted gates' responses, kept current by the worker.
    approvals: dict[str, Any] = field(default_factory=dict)
    _steps: dict[str, StepSpec] = field(init=False)

    def __post_init__(self) -> None:
        self._steps = {step.id: step for step in self.spec.steps}

    def views(self, runs: Sequence[StepRun]) -> dict[str, StepView]:
        """Every forward step with its runs and phase, in blueprint order."""
        by_step: dict[str, list[StepRun]] = {step_id: [] for step_id in self._steps}
        for run in runs:
            if run.step_id in by_step:
                by_step[run.step_id].append(run)
        return {
            step_id: _view(self._steps[step_id], sorted(found, key=_item_order))
            for step_id, found in by_step.items()
        }

    def variables(self, views: Mapping[str, StepView], now: datetime) -> dict[str, Any]:
        """The template variables of this execution as its runs stand."""
        steps = {
            step_id: {"status": _public_status(view), "outputs": view.outputs()}
            for step_id, view in views.items()
        }
        return execution_variables(
            execution_id=self.facts.execution_id,
            workflow_name=self.facts.workflow_name,
            requested_by=self.facts.requested_by,
            params=self.facts.params,
            data=self.spec.data,
            steps=steps,
            targets=self.facts.targets,
            now=now,
            approvals=self.approvals,
        )

    def decide(
        self,
        runs: Sequence[StepRun],
        now: datetime,
        *,
        accepting: bool = True,
        gated: Collection[str] = (),
    ) -> Decision:
        """The next moves. ``accepting=False`` (paused, cancelling): start nothing new.

        ``gated`` are the steps whose gates are not cleared yet: their runs do not start until
        then, and the decision lists them under ``gate`` for the worker to check.
        """
        views = self.views(runs)
        failed = next((v for v in views.values() if v.phase is StepPhase.FAILED), None)
        if failed is not None or not accepting:
            return self._wind_down(views, failed)
        if all(view.phase in COMPLETE for view in views.values()):
            return Decision(outcome=Outcome(succeeded=True))
        variables = self.variables(views, now)
        create: list[NewStepRun] = []
        skip: list[tuple[str, str]] = []
        fail: list[StepFailure] = []
        start: list[StepRun] = []
        cancel: list[StepRun] = []
        gate: list[str] = []
        wake_at: datetime | None = None
        for view in views.values():
            if view.phase is StepPhase.WAITING and self._ready(view.spec, views):
                self._prepare(view.spec, variables, create, skip, fail)
            elif view.phase is StepPhase.ACTIVE:
                if view.spec.id in gated:
                    gate.append(view.spec.id)
                    continue
                if self._over_failure_budget(view):
                    # Runs that waited for the gate have not started either: cancel them too.
                    unstarted = (_S.PENDING, _S.RETRYING, _S.WAITING_APPROVAL)
                    cancel += [run for run in view.runs if run.status in unstarted]
                    continue
                starts, due = self._startable(view, variables, now)
                start += starts
                wake_at = _earliest(wake_at, due)
        return Decision(
            tuple(create),
            tuple(skip),
            tuple(fail),
            tuple(start),
            tuple(cancel),
            wake_at,
            gate=tuple(gate),
        )

    def _wind_down(self, views: Mapping[str, StepView], failed: StepView | None) -> Decision:
        """After a failure (or while not accepting): start nothing; end when nothing runs.

        Runs that have not started stay as they are (pending, retrying), so that an operator's
        ``retry_step`` can continue the execution from where it stopped.
        """
        running = any(run.status is _S.RUNNING for view in views.values() for run in view.runs)
        if failed is None or running:
            return Decision()
        return Decision(outcome=Outcome(False, _failure_reason(failed), failed.spec.id))

    def _ready(self, step: StepSpec, views: Mapping[str, StepView]) -> bool:
        return all(views[dep].phase in COMPLETE for dep in step.depends_on if dep in views)

    def _prepare(
        self,
        step: StepSpec,
        variables: Mapping[str, Any],
        create: list[NewStepRun],
        skip: list[tuple[str, str]],
        fail: list[StepFailure],
    ) -> None:
        try:
            if step.when is not None and not _truthy(step.when, variables):
                skip.append((step.id, f"condition {step.when!r} is false"))
                return
            runs = self._expand(step, variables)
            max_parallel(step, variables)  # fail before any run exists, not after
        except ExpressionError as exc:
            fail.append(StepFailure(step.id, str(exc)))
            return
        if not runs:
            skip.append((step.id, "for_each gave no items"))
            return
        create.extend(runs)

    def _expand(self, step: StepSpec, variables: Mapping[str, Any]) -> list[NewStepRun]:
        """The runs of a ready step: one, or one per fan-out item."""
        if step.for_each is None:
            return [NewStepRun(step_id=step.id)]
        if step.for_each == "targets":
            return [
                NewStepRun(
                    step_id=step.id,
                    item_key=str(target["name"]),
                    item_index=index,
                    target=str(target["name"]),
                )
                for index, target in enumerate(self.facts.targets)
            ]
        items = fan_out_items(step, variables)
        return [
            NewStepRun(step_id=step.id, item_key=str(index), item_index=index)
            for index in range(len(items))
        ]

    def _over_failure_budget(self, view: StepView) -> bool:
        if view.spec.for_each is None or view.spec.continue_on_error:
            return False
        return _failed_share(view) > float(view.spec.max_failed_percentage or 0)

    def _startable(
        self, view: StepView, variables: Mapping[str, Any], now: datetime
    ) -> tuple[list[StepRun], datetime | None]:
        """Runs of an active step that may start now, and when the next retry falls due."""
        try:
            limit = max_parallel(view.spec, variables)
        except ExpressionError:  # it rendered when the step became ready; be careful anyway
            limit = 1
        cap = self.facts.max_parallel
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        slots = (limit - view.running) if limit is not None else len(view.runs)
        starts: list[StepRun] = []
        due: datetime | None = None
        for run in view.runs:
            if len(starts) >= slots:
                break
            if run.status in (_S.PENDING, _S.WAITING_APPROVAL):
                starts.append(run)
            elif run.status is _S.RETRYING:
                if run.next_attempt_at is None or run.next_attempt_at <= now:
                    starts.append(run)
                else:
                    due = _earliest(due, run.next_attempt_at)
        return starts, due


def fan_out_items(step: StepSpec, variables: Mapping[str, Any]) -> list[Any]:
    """The items of a ``for_each`` that is a list or a template giving a list."""
    source = step.for_each
    items = render(source, variables) if isinstance(source, str) else list(source or ())
    if isinstance(items, tuple):
        items = list(items)
    if not isinstance(items, list):
        raise ExpressionError(
            f"for_each of step {step.id!r} must give a list, not {type(items).__name__}"
        )
    return items


def max_parallel(step: StepSpec, variables: Mapping[str, Any]) -> int | None:
    """The step's ``max_parallel`` (rendered when it is a template); ``None`` = no limit."""
    value = step.max_parallel
    if isinstance(value, str):
        value = render(value, variables)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExpressionError(
            f"max_parallel of step {step.id!r} must be an integer of at least 1, not {value!r}"
        )
    return value


def progress(views: Mapping[str, StepView]) -> float:
    """Percentage of the work done: each step weighs one, a fan-out by its finished runs."""
    if not views:
        return 100.0
    done = 0.0
    for view in views.values():
        if view.phase in COMPLETE or view.phase is StepPhase.FAILED:
            done += 1
        elif view.runs:
            done += view.finished / len(view.runs)
    return round(100.0 * done / len(views), 1)


def _view(step: StepSpec, runs: list[StepRun]) -> StepView:
    failed = sum(run.status in _FAILED for run in runs)
    cancelled = sum(run.status is _S.CANCELLED for run in runs)
    if not runs:
        phase = StepPhase.WAITING
    elif any(run.status in _ACTIVE for run in runs):
        phase = StepPhase.ACTIVE
    elif all(run.status is _S.SKIPPED for run in runs):
        phase = StepPhase.SKIPPED
    elif step.continue_on_error or (failed == 0 and cancelled == 0):
        phase = StepPhase.SUCCEEDED
    elif (
        cancelled == 0
        and step.for_each is not None
        and 100.0 * failed / len(runs) <= float(step.max_failed_percentage or 0)
    ):
        phase = StepPhase.SUCCEEDED
    else:
        phase = StepPhase.FAILED
    return StepView(step, tuple(runs), phase, failed)


def _failed_share(view: StepView) -> float:
    return 100.0 * view.failed / len(view.runs) if view.runs else 0.0


def _failure_reason(view: StepView) -> str:
    if view.spec.for_each is not None and len(view.runs) > 1:
        not_run = sum(run.status is _S.CANCELLED for run in view.runs)
        return (
            f"step {view.spec.id!r} failed: {view.failed} of {len(view.runs)} runs failed "
            f"(allowed: {float(view.spec.max_failed_percentage or 0):g}%), {not_run} not run"
        )
    run = view.runs[-1]
    message = (run.error or {}).get("message", run.status)
    return f"step {view.spec.id!r} {run.status}: {message}"


def _public_status(view: StepView) -> str:
    if len(view.runs) == 1:
        return str(view.runs[0].status)
    return {StepPhase.WAITING: "pending", StepPhase.ACTIVE: "running"}.get(
        view.phase, str(view.phase)
    )


def _truthy(condition: str | bool, variables: Mapping[str, Any]) -> bool:
    return condition if isinstance(condition, bool) else bool(evaluate(condition, variables))


def _item_order(run: StepRun) -> tuple[int, str]:
    return (run.item_index if run.item_index is not None else -1, run.item_key)


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)
