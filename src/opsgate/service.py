"""The use cases: one coroutine each, called by the MCP tools and the CLI alike.

The service validates requests, reads and writes through the store (in worker threads: the
store is synchronous), and wakes the local worker when it created or changed work. It never
runs steps itself. Who calls comes from authentication, as a :class:`Principal`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from opsgate.catalog import Catalog
from opsgate.engine.conductor import Conductor, ExecutionFacts, progress
from opsgate.engine.locks import lock_keys
from opsgate.engine.rollback import needs_rollback
from opsgate.engine.statuses import (
    EXECUTION_MACHINE,
    ExecutionStatus,
    StepRunStatus,
    Trigger,
    next_status,
)
from opsgate.errors import ConflictError, InvalidParametersError, NotFoundError
from opsgate.models import Execution, StepRun
from opsgate.spec.model import WorkflowSpec
from opsgate.spec.parameters import validate_parameters
from opsgate.stores.sql import SQLStore
from opsgate.views import (
    EventList,
    EventView,
    ExecutionList,
    ExecutionStarted,
    ExecutionStatusView,
    ExecutionSummary,
    MetricsList,
    StepRunView,
    StepView,
    WorkflowMetricsView,
)

T = TypeVar("T")
_E = ExecutionStatus
_S = StepRunStatus
_RERUNNABLE = frozenset({_S.FAILED, _S.TIMED_OUT, _S.INTERRUPTED, _S.CANCELLED})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and its roles."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)


class Service:
    """The application facade over the store, the catalog and the worker."""

    def __init__(
        self,
        store: SQLStore,
        catalog: Catalog,
        *,
        wake: Callable[[str | None], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.wake = wake

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    # ----------------------------------------------------------------- starting

    def blueprint(self, workflow_name: str) -> WorkflowSpec:
        """A served blueprint by name, or NotFoundError with close matches."""
        spec = self.catalog.blueprints.get(workflow_name)
        if spec is None:
            raise NotFoundError("workflow", workflow_name, self.catalog.blueprints)
        return spec

    async def execute_workflow(
        self,
        principal: Principal,
        workflow_name: str,
        parameters: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> ExecutionStarted:
        """Validate the parameters, snapshot the blueprint and create a pending execution."""
        spec = self.blueprint(workflow_name)
        values, problems = validate_parameters(spec.parameters, parameters)
        if problems:
            raise InvalidParametersError(workflow_name, problems)
        content = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        snapshot = await self._call(self.store.save_snapshot, spec.name, spec.version, content)
        execution, created = await self._call(
            self.store.create_execution,
            workflow_name=spec.name,
            blueprint_digest=snapshot.digest,
            parameters=values,
            requested_by=principal.name,
            idempotency_key=idempotency_key,
        )
        if created and spec.concurrency is not None:
            await self._take_locks(spec, execution, values, principal)
        self.wake(execution.id)
        return ExecutionStarted(
            execution_id=execution.id,
            workflow_name=spec.name,
            status=str(execution.status),
            created=created,
            next_step=f"call get_workflow_status(execution_id={execution.id!r}) to follow it",
        )

    async def _take_locks(
        self,
        spec: WorkflowSpec,
        execution: Execution,
        values: Mapping[str, Any],
        principal: Principal,
    ) -> None:
        """Acquire the blueprint's locks now, so that a refusal (``on_conflict: reject``) reaches
        the caller; the worker acquires them again before starting (the first call decides)."""
        assert spec.concurrency is not None
        keys = lock_keys(spec, values)
        queued = []
        for key in keys:
            holding = await self._call(
                self.store.acquire_lock,
                key,
                execution.id,
                max_concurrent=spec.concurrency.max_concurrent,
                actor=principal.name,
            )
            if holding.status == "queued":
                queued.append(key)
        if queued and spec.concurrency.on_conflict == "reject":
            error = {
                "type": "LockConflict",
                "message": f"locks {', '.join(queued)} are held by other executions",
            }
            await self._call(self.store.release_locks, execution.id, actor=principal.name)
            try:
                await self._call(
                    self.store.transition_execution,
                    execution.id,
                    Trigger.FAIL,
                    expected=_E.PENDING,
                    actor=principal.name,
                    error=error,
                    data={"error": error},
                )
            except ConflictError:
                pass  # a worker claimed it meanwhile and refused it first: same outcome
            raise ConflictError(
                f"{spec.name} refuses to queue (on_conflict: reject) and lock(s) "
                f"{', '.join(queued)} are held by other executions; execution {execution.id} "
                "was recorded as failed. Try again when they finish."
            )

    # ----------------------------------------------------------------- reading

    async def get_workflow_status(self, execution_id: str) -> ExecutionStatusView:
        execution = await self._call(self.store.get_execution, execution_id)
        runs = await self._call(self.store.list_step_runs, execution_id)
        spec = await self._call(self._spec_of, execution)
        return status_view(spec, execution, runs)

    def _spec_of(self, execution: Execution) -> WorkflowSpec:
        snapshot = self.store.get_snapshot(execution.blueprint_digest)
        return WorkflowSpec.model_validate(snapshot.content)

    async def list_executions(
        self,
        *,
        workflow_name: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ExecutionList:
        page = await self._call(
            self.store.list_executions,
            workflow_name=workflow_name,
            status=ExecutionStatus(status) if status else None,
            cursor=cursor,
            limit=limit,
        )
        return ExecutionList(
            executions=[
                ExecutionSummary(
                    execution_id=e.id,
                    workflow_name=e.workflow_name,
                    status=str(e.status),
                    requested_by=e.requested_by,
                    created_at=e.created_at,
                    finished_at=e.finished_at,
                )
                for e in page.items
            ],
            next_cursor=page.next_cursor,
        )

    async def get_execution_events(
        self, execution_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> EventList:
        await self._call(self.store.get_execution, execution_id)
        events = await self._call(
            self.store.list_events, execution_id, after_seq=after_seq, limit=limit + 1
        )
        more = len(events) > limit
        events = events[:limit]
        return EventList(
            execution_id=execution_id,
            events=[
                EventView(
                    seq=e.seq or 0,
                    type=str(e.type),
                    occurred_at=e.occurred_at,
                    actor=e.actor,
                    step_id=e.step_id,
                    target=e.target,
                    attempt=e.attempt,
                    data=dict(e.data or {}),
                )
                for e in events
            ],
            next_after_seq=(events[-1].seq if more and events else None),
        )

    async def get_workflow_metrics(self, workflow_name: str | None = None) -> MetricsList:
        """Per blueprint: success rate, duration p50/p95, failures, rollbacks, approval waits."""
        if workflow_name is not None:
            self.blueprint(workflow_name)
        found = await self._call(self.store.workflow_metrics, workflow_name)
        return MetricsList(
            metrics=[WorkflowMetricsView.model_validate(m, from_attributes=True) for m in found]
        )

    # ----------------------------------------------------------------- control

    async def cancel_execution(
        self,
        principal: Principal,
        execution_id: str,
        *,
        cleanup: bool = True,
        reason: str | None = None,
    ) -> ExecutionStatusView:
        """Stop an execution; with ``cleanup`` its completed steps are rolled back."""
        data = {"reason": reason, "cleanup": cleanup}
        execution = await self._control(
            principal, execution_id, Trigger.CANCEL, data, cancel_cleanup=cleanup
        )
        if execution.lease_owner is None:
            # No worker holds it (queued, parked, waiting): finish the cancel here.
            spec = await self._call(self._spec_of, execution)
            runs = await self._call(self.store.list_step_runs, execution_id)
            if cleanup and needs_rollback(spec, runs):
                await self._call(
                    self.store.transition_execution,
                    execution_id,
                    Trigger.BEGIN_ROLLBACK,
                    expected=_E.CANCELLED,
                    actor=principal.name,
                )  # a worker claims it to roll back, and frees its locks at the end
            else:
                await self._call(self.store.release_locks, execution_id, actor=principal.name)
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def pause_execution(self, principal: Principal, execution_id: str) -> ExecutionStatusView:
        """No new step starts; running ones finish. Resume with resume_execution."""
        await self._control(principal, execution_id, Trigger.PAUSE, {})
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def resume_execution(
        self, principal: Principal, execution_id: str
    ) -> ExecutionStatusView:
        await self._control(principal, execution_id, Trigger.RESUME, {})
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def retry_step(
        self, principal: Principal, execution_id: str, step_id: str
    ) -> ExecutionStatusView:
        """Run a failed step again and continue the execution from there."""
        await self._call(self.store.rerun_step, execution_id, step_id, actor=principal.name)
        self.wake(execution_id)
        return await self.get_workflow_status(execution_id)

    async def _control(
        self,
        principal: Principal,
        execution_id: str,
        trigger: Trigger,
        data: Mapping[str, Any],
        **changes: Any,
    ) -> Execution:
        """Apply an operator's transition from whatever the status is now (checked by the table)."""
        for _ in range(5):
            execution = await self._call(self.store.get_execution, execution_id)
            next_status(EXECUTION_MACHINE, execution.status, trigger, entity_id=execution_id)
            try:
                updated, _ = await self._call(
                    self.store.transition_execution,
                    execution_id,
                    trigger,
                    expected=execution.status,
                    actor=principal.name,
                    data=dict(data),
                    **changes,
                )
            except ConflictError:
                continue  # the status moved meanwhile: judge again from the new one
            return updated
        raise ConflictError(f"execution {execution_id} keeps changing; try again")


def status_view(
    spec: WorkflowSpec, execution: Execution, runs: list[StepRun]
) -> ExecutionStatusView:
    """The ``get_workflow_status`` shape from the records."""
    conductor = Conductor(
        spec,
        ExecutionFacts(
            execution.id, execution.workflow_name, execution.requested_by, execution.parameters
        ),
    )
    views = conductor.views(runs)
    steps = []
    for step in spec.steps:
        view = views[step.id]
        step_runs = [_run_view(run) for run in view.runs]
        if not view.runs:
            status = "pending"
        elif len(view.runs) == 1:
            status = str(view.runs[0].status)
        else:
            status = str(view.phase)
        steps.append(
            StepView(
                step_id=step.id,
                name=step.name or step.id,
                action=step.action,
                status=status,
                attempts=sum(run.attempt for run in view.runs),
                runs=step_runs,
            )
        )
    running = [s.step_id for s in steps if any(r.status == "running" for r in s.runs)]
    completed = sum(s.status in ("succeeded", "skipped", "rolled_back") for s in steps)
    done = execution.status in (_E.SUCCEEDED,)
    return ExecutionStatusView(
        execution_id=execution.id,
        workflow_name=execution.workflow_name,
        status=str(execution.status),
        progress=100.0 if done else progress(views),
        current_step=running[0] if running else None,
        current_steps=running,
        current_sub_task=execution.current_sub_task,
        steps_completed=completed,
        total_steps=len(spec.steps),
        requested_by=execution.requested_by,
        created_at=execution.created_at,
        started_at=execution.started_at,
        finished_at=execution.finished_at,
        duration_seconds=_duration(execution.started_at, execution.finished_at),
        error=dict(execution.error) if execution.error else None,
        steps=steps,
    )


def _run_view(run: StepRun) -> StepRunView:
    return StepRunView(
        item_key=run.item_key,
        target=run.target,
        status=str(run.status),
        attempts=run.attempt,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=_duration(run.started_at, run.finished_at),
        next_attempt_at=run.next_attempt_at,
        error=dict(run.error) if run.error else None,
    )


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)
