"""The worker: claims executions through leases and drives each one to its end.

The imperative shell around the pure :class:`~opsgate.engine.conductor.Conductor`. For every
execution it holds, a runner asks the conductor what to do, persists each transition (with its
event, in one transaction, guarded by the lease), runs the actions of started steps in a task
group, and asks again when something changed. Nothing waits in memory for long: when only a
retry delay or a lock is left to wait for, the runner releases the lease with a ``wake_at`` and
the execution is a row until then.

Recovery is the same code path: a runner that takes over an execution whose lease expired finds
its ``running`` step runs orphaned; idempotent ones are re-run, the others end ``interrupted``
and fail the execution into its rollback path.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from opsgate.actions.base import StepContext, run_action
from opsgate.actions.registry import ActionRegistry
from opsgate.engine.conductor import Conductor, ExecutionFacts, Outcome, StepView, fan_out_items
from opsgate.engine.context import run_variables, step_outputs
from opsgate.engine.locks import lock_keys
from opsgate.engine.retry import Failure, next_attempt_at
from opsgate.engine.rollback import (
    FINALLY,
    ON_FAILURE,
    needs_rollback,
    pending_compensations,
    plan_actions,
    plan_step_id,
)
from opsgate.engine.statuses import EXECUTION_TERMINAL, ExecutionStatus, StepRunStatus, Trigger
from opsgate.errors import ConflictError, StepError, StoreError
from opsgate.expressions import ExpressionError, render_value
from opsgate.models import EventType, Execution, NewStepRun, StepRun
from opsgate.spec.model import CompensationSpec, RetrySpec, StepSpec, WorkflowSpec
from opsgate.stores.sql import SQLStore, utc_now

logger = logging.getLogger(__name__)

_E = ExecutionStatus
_S = StepRunStatus
T = TypeVar("T")

Clock = Callable[[], datetime]
TargetResolver = Callable[[WorkflowSpec, Mapping[str, Any]], list[dict[str, Any]]]

#: How long an execution whose runner failed unexpectedly rests before it is claimed again.
CRASH_BACKOFF_SECONDS = 5.0

#: How long a store call is retried when the database fails before the error is raised.
STORE_RETRY_SECONDS = 60.0

#: The statuses a worker claims: work to start, to continue, or to undo.
CLAIMABLE = (_E.PENDING, _E.RUNNING, _E.ROLLING_BACK)


def names_as_targets(spec: WorkflowSpec, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Targets without an inventory: the rendered ``targets`` names, comma-separated or a list.

    The inventory (``OPSGATE_INVENTORY``) replaces this with real hosts, addresses and labels.
    """
    if spec.targets is None:
        return []
    rendered = render_value(spec.targets, {"params": dict(params)})
    names = rendered.split(",") if isinstance(rendered, str) else list(rendered)
    return [{"name": str(name).strip()} for name in names if str(name).strip()]


class LeaseLost(Exception):
    """Another worker took the execution over; this runner must stop writing at once."""


class Worker:
    """Claims executions from the store and runs them, up to ``capacity`` at a time."""

    def __init__(
        self,
        store: SQLStore,
        registry: ActionRegistry,
        *,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        capacity: int = 64,
        clock: Clock = utc_now,
        draw: Callable[[], float] = random.random,
        targets: TargetResolver = names_as_targets,
        sleep: Callable[[float], Any] = anyio.sleep,
    ) -> None:
        self.store = store
        self.registry = registry
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.capacity = capacity
        self.clock = clock
        self.draw = draw
        self.resolve_targets = targets
        self.sleep = sleep
        self._runners: dict[str, ExecutionRunner] = {}
        self._wake = anyio.Event()
        self._specs: dict[str, WorkflowSpec] = {}

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method in a worker thread (the store is synchronous).

        A store error (the database locked past its busy timeout, a restarting server) is
        retried with a growing pause for up to ``STORE_RETRY_SECONDS``: a transaction that
        failed wrote nothing, and every write is a compare-and-set, so trying again is safe.
        """
        pause = 0.05
        started = time.monotonic()
        while True:
            try:
                return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))
            except StoreError as exc:
                if time.monotonic() - started > STORE_RETRY_SECONDS:
                    raise
                logger.warning("the database failed (%s); retrying in %.2fs", exc, pause)
            await anyio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def wake(self, execution_id: str | None = None) -> None:
        """Something changed (a new execution, a decision, a cancel): look again now."""
        runner = self._runners.get(execution_id) if execution_id else None
        if runner is not None:
            runner.poke()
        self._wake.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Claim and run executions until cancelled (or, with ``until_idle``, until no work is
        left that is due now and no runner is active: for tests and one-shot CLI runs)."""
        async with anyio.create_task_group() as group:
            while True:
                self._wake = anyio.Event()
                try:
                    claimed = await self._claim()
                except StoreError:
                    logger.exception("cannot claim executions; trying again")
                    await anyio.sleep(self.lease_seconds / 3)
                    continue
                for execution in claimed:
                    if execution.id in self._runners:
                        continue  # its own runner was late to renew; the claim renewed it
                    runner = ExecutionRunner(self, execution)
                    self._runners[execution.id] = runner
                    group.start_soon(self._run_one, runner)
                if claimed:
                    continue
                if until_idle and not self._runners:
                    due = await self.call(self.store.next_wake_at)
                    if due is None or due > self.clock():
                        group.cancel_scope.cancel()
                        return
                await self._sleep_until_due()

    async def _claim(self) -> list[Execution]:
        room = self.capacity - len(self._runners)
        if room <= 0:
            return []
        return await self.call(
            self.store.claim_executions,
            self.owner,
            lease_seconds=self.lease_seconds,
            limit=room,
            statuses=CLAIMABLE,
        )

    async def _sleep_until_due(self) -> None:
        due = await self.call(self.store.next_wake_at)
        timeout = self.lease_seconds / 3
        if due is not None:
            # At least a moment: work that is due but not claimable (a live lease) must not spin.
            timeout = min(timeout, max((due - self.clock()).total_seconds(), 0.01))
        with anyio.move_on_after(timeout):
            await self._wake.wait()

    async def _run_one(self, runner: ExecutionRunner) -> None:
        try:
            await runner.run()
        except LeaseLost:
            logger.warning("lost the lease of %s to another worker", runner.execution.id)
        except Exception:
            logger.exception("runner of execution %s crashed", runner.execution.id)
            await self._release_quietly(runner.execution.id)
        finally:
            self._runners.pop(runner.execution.id, None)
            self._wake.set()

    async def _release_quietly(self, execution_id: str) -> None:
        """After an unexpected error: give the execution back, not before a pause (no spin)."""
        try:
            await self.call(
                self.store.release_lease,
                execution_id,
                self.owner,
                wake_at=self.clock() + timedelta(seconds=CRASH_BACKOFF_SECONDS),
            )
        except ConflictError:
            pass

    def spec_of(self, digest: str) -> WorkflowSpec:
        """The blueprint snapshot an execution started with (cached by digest)."""
        spec = self._specs.get(digest)
        if spec is None:
            snapshot = self.store.get_snapshot(digest)
            spec = WorkflowSpec.model_validate(snapshot.content)
            self._specs[digest] = spec
        return spec


class ExecutionRunner:
    """Drives one claimed execution while its worker holds the lease."""

    def __init__(self, worker: Worker, execution: Execution) -> None:
        self.worker = worker
        self.execution = execution
        self.runs: dict[str, StepRun] = {}
        self.spec: WorkflowSpec
        self.conductor: Conductor
        self._changed = anyio.Event()
        self._attempts: anyio.abc.TaskGroup | None = None
        self._lost = False
        self._stale = False
        # Decisions and attempt outcomes are persisted one at a time, so that every decision
        # is taken on all the outcomes written before it (a batch stops exactly at its limit).
        self._writing = anyio.Lock()

    def poke(self) -> None:
        """Someone changed the execution (a cancel, a pause): re-read it and look again."""
        self._stale = True
        self._changed.set()

    async def _refresh(self) -> None:
        if self._stale:
            self._stale = False
            self.execution = await self.worker.call(
                self.worker.store.get_execution, self.execution.id
            )

    # ----------------------------------------------------------------- the main loop

    async def run(self) -> None:
        worker = self.worker
        self.spec = await worker.call(worker.spec_of, self.execution.blueprint_digest)
        targets = worker.resolve_targets(self.spec, self.execution.parameters)
        self.conductor = Conductor(
            self.spec,
            ExecutionFacts(
                execution_id=self.execution.id,
                workflow_name=self.execution.workflow_name,
                requested_by=self.execution.requested_by,
                params=self.execution.parameters,
                targets=targets,
            ),
        )
        for run in await worker.call(worker.store.list_step_runs, self.execution.id):
            self.runs[run.id] = run
        async with anyio.create_task_group() as keeper:
            keeper.start_soon(self._keep_lease)
            try:
                await self._phases()
            except ConflictError:
                # An operator's cancel or pause raced one of our writes: act on it.
                if self.execution.status is _E.CANCELLED:
                    await self._after_cancel()
                elif self.execution.status is _E.PAUSED:
                    await self._release()
                else:
                    raise
            finally:
                keeper.cancel_scope.cancel()

    async def _phases(self) -> None:
        if self.execution.status in EXECUTION_TERMINAL:
            await self._finish_abandoned()
            return
        await self._recover_orphans()
        if self.execution.status is _E.PENDING and not await self._start_execution():
            return
        if self.execution.status is _E.ROLLING_BACK:
            await self._roll_back()
        elif self.execution.status in (_E.RUNNING, _E.PAUSED, _E.CANCELLED):
            await self._drive()

    async def _drive(self) -> None:
        """The forward phase: ask, act, wait; until an outcome, a pause, a cancel or a wait."""
        async with anyio.create_task_group() as attempts:
            self._attempts = attempts
            while True:
                # A fresh event before looking: whatever ends from now on wakes the next wait.
                self._changed = anyio.Event()
                await self._refresh()
                if self.execution.status is _E.CANCELLED:
                    attempts.cancel_scope.cancel()
                    break
                if self._deadline_passed():
                    attempts.cancel_scope.cancel()
                    break
                accepting = self.execution.status is _E.RUNNING
                async with self._writing:
                    decision = self.conductor.decide(
                        list(self.runs.values()), self.worker.clock(), accepting=accepting
                    )
                    if decision.has_work:
                        await self._apply(
                            decision.create, decision.skip, decision.fail, decision.cancel
                        )
                        for run in decision.start:
                            await self._start_attempt(attempts, run)
                if decision.has_work:
                    continue
                if decision.outcome is not None:
                    await self._finish(decision.outcome)
                    return
                if not self._running():
                    await self._park(decision.wake_at)
                    return
                await self._wait(decision.wake_at)
        self._attempts = None
        await self._stop_after_cancel_scope()

    async def _stop_after_cancel_scope(self) -> None:
        """After the attempts were cancelled: by an operator's cancel, or by the deadline."""
        if self.execution.status is _E.CANCELLED:
            await self._after_cancel()
            return
        # The execution's deadline passed.
        await self._end_runs(Trigger.TIME_OUT, "the execution's timeout passed")
        await self._fail(
            {
                "type": "ExecutionTimeout",
                "message": f"the execution exceeded its timeout of {self.spec.timeout}",
            }
        )

    async def _finish_abandoned(self) -> None:
        """A worker died after ending the execution but before cleaning up: clean up now."""
        status = self.execution.status
        if status is _E.CANCELLED:
            await self._after_cancel()
        elif status is _E.FAILED and needs_rollback(self.spec, self._run_list()):
            await self._transition(Trigger.BEGIN_ROLLBACK, expected=_E.FAILED)
            await self._roll_back()
        else:
            await self._close()

    async def _after_cancel(self) -> None:
        """Close what the cancel left open; roll back if the operator asked for cleanup."""
        await self._end_runs(Trigger.CANCEL, "the execution was cancelled")
        if self.execution.cancel_cleanup and needs_rollback(self.spec, self._run_list()):
            await self._transition(Trigger.BEGIN_ROLLBACK, expected=_E.CANCELLED)
            await self._roll_back()
            return
        await self._close()

    # ----------------------------------------------------------------- leases

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its length; notice cancels and pauses by others."""
        worker = self.worker
        interval = min(worker.lease_seconds / 3, 2.0)
        while True:
            await anyio.sleep(interval)
            try:
                fresh = await worker.call(
                    worker.store.renew_lease,
                    self.execution.id,
                    worker.owner,
                    lease_seconds=worker.lease_seconds,
                )
            except ConflictError:
                self._lost = True
                self._changed.set()
                if self._attempts is not None:
                    self._attempts.cancel_scope.cancel()
                return
            if fresh.status is not self.execution.status:
                self.execution = fresh
                self._changed.set()

    async def _release(self, wake_at: datetime | None = None) -> None:
        await self.worker.call(
            self.worker.store.release_lease, self.execution.id, self.worker.owner, wake_at=wake_at
        )

    async def _park(self, wake_at: datetime | None) -> None:
        """Nothing runs: give the execution back as a row until ``wake_at`` or its deadline."""
        moments = [m for m in (wake_at, self.execution.deadline_at) if m is not None]
        await self._release(min(moments) if moments else None)

    # ----------------------------------------------------------------- persistence

    async def _transition(
        self, trigger: Trigger, *, expected: ExecutionStatus, **changes: Any
    ) -> Execution:
        self._check_lease()
        try:
            execution, _ = await self.worker.call(
                self.worker.store.transition_execution,
                self.execution.id,
                trigger,
                expected=expected,
                actor=self.worker.owner,
                lease_owner=self.worker.owner,
                **changes,
            )
        except ConflictError:
            await self._after_conflict()
            raise
        self.execution = execution
        return execution

    async def _after_conflict(self) -> None:
        """A compare-and-set lost: if the lease went to another worker, stop at once."""
        self.execution = await self.worker.call(self.worker.store.get_execution, self.execution.id)
        if self.execution.lease_owner != self.worker.owner:
            self._lost = True
            raise LeaseLost(self.execution.id)

    async def _step(
        self,
        run: StepRun,
        trigger: Trigger,
        *,
        data: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> StepRun:
        self._check_lease()
        try:
            fresh, _ = await self.worker.call(
                self.worker.store.transition_step_run,
                run.id,
                trigger,
                expected=run.status,
                actor=self.worker.owner,
                data=dict(data) if data else None,
                lease_owner=self.worker.owner,
                **changes,
            )
        except ConflictError:
            await self._after_conflict()
            raise
        self.runs[fresh.id] = fresh
        return fresh

    async def _create(self, new: Sequence[NewStepRun]) -> list[StepRun]:
        created = await self.worker.call(
            self.worker.store.create_step_runs, self.execution.id, list(new)
        )
        for run in created:
            self.runs[run.id] = run
        return created

    def _check_lease(self) -> None:
        if self._lost:
            raise LeaseLost(self.execution.id)

    # ----------------------------------------------------------------- applying decisions

    async def _start_execution(self) -> bool:
        """Take the blueprint's locks, then start; queued behind a holder, wait as a row."""
        queued = await self._take_locks()
        if queued and self.spec.concurrency and self.spec.concurrency.on_conflict == "reject":
            error = {
                "type": "LockConflict",
                "message": f"locks {', '.join(queued)} are held by other executions",
            }
            try:
                await self._transition(
                    Trigger.FAIL, expected=_E.PENDING, error=error, data={"error": error}
                )
            except ConflictError:
                pass  # the service refused it first (it is failed now): same outcome
            await self._close()
            return False
        if queued:
            await self._release()  # not claimable while queued; promoted when a holder ends
            return False
        deadline = self.worker.clock() + self.spec.timeout if self.spec.timeout else None
        await self._transition(Trigger.START, expected=_E.PENDING, deadline_at=deadline)
        return True

    async def _take_locks(self) -> list[str]:
        """Hold or queue for each lock key; the keys still queued for."""
        if self.spec.concurrency is None:
            return []
        queued = []
        for key in lock_keys(self.spec, self.execution.parameters):
            holding = await self.worker.call(
                self.worker.store.acquire_lock,
                key,
                self.execution.id,
                max_concurrent=self.spec.concurrency.max_concurrent,
                actor=self.worker.owner,
            )
            if holding.status == "queued":
                queued.append(key)
        return queued

    async def _apply(
        self,
        create: Sequence[NewStepRun],
        skip: Sequence[tuple[str, str]],
        fail: Sequence[Any],
        cancel: Sequence[StepRun],
    ) -> None:
        if create:
            await self._create(create)
        for step_id, reason in skip:
            [run] = await self._create([NewStepRun(step_id=step_id)])
            await self._step(run, Trigger.SKIP, data={"reason": reason})
        for failure in fail:
            error = {"message": failure.message, "type": failure.error_type, "retryable": False}
            pending = [
                r
                for r in self.runs.values()
                if r.step_id == failure.step_id and r.status is _S.PENDING
            ]
            for run in pending or await self._create([NewStepRun(step_id=failure.step_id)]):
                await self._step(run, Trigger.FAIL, data={"error": error}, error=error)
        for run in cancel:
            await self._step(
                self.runs[run.id],
                Trigger.CANCEL,
                data={"reason": "the step stopped after too many failures"},
            )

    async def _start_attempt(self, attempts: anyio.abc.TaskGroup, run: StepRun) -> None:
        started = await self._step(run, Trigger.START)
        attempts.start_soon(self._attempt, started)

    def _running(self) -> bool:
        return any(run.status is _S.RUNNING for run in self.runs.values())

    def _run_list(self) -> list[StepRun]:
        return list(self.runs.values())

    def _deadline_passed(self) -> bool:
        deadline = self.execution.deadline_at
        return deadline is not None and self.worker.clock() >= deadline

    async def _wait(self, wake_at: datetime | None) -> None:
        """Until an attempt ends, someone pokes, a retry falls due or the deadline passes."""
        moments = [m for m in (wake_at, self.execution.deadline_at) if m is not None]
        timeout = None
        if moments:
            timeout = max((min(moments) - self.worker.clock()).total_seconds(), 0.0)
        with anyio.move_on_after(timeout):
            await self._changed.wait()

    async def _end_runs(self, trigger: Trigger, reason: str) -> None:
        """Close every run that has not ended: running ones by ``trigger``, others cancelled."""
        error = {"message": reason, "type": "Cancelled" if trigger is Trigger.CANCEL else "Timeout"}
        for run in list(self.runs.values()):
            if run.status is _S.RUNNING:
                await self._step(run, trigger, data={"error": error}, error=error)
            elif run.status in (_S.PENDING, _S.RETRYING, _S.WAITING_APPROVAL):
                await self._step(run, Trigger.CANCEL, data={"reason": reason})

    # ----------------------------------------------------------------- one attempt

    async def _attempt(self, run: StepRun) -> None:
        """Run one attempt of a started run and persist how it ended."""
        step = self._step_spec(run.step_id)
        assert step is not None, run.step_id  # the conductor starts only blueprint steps
        variables = self._variables_for(run)
        failure: Failure | None = None
        try:
            outputs = await self._perform(step.action, step.with_, step.timeout, run, variables)
            published = step_outputs(step, outputs, variables)
        except StepError as exc:
            failure = _failure(exc)
        except ExpressionError as exc:
            failure = Failure(str(exc), "ExpressionError", False)
        try:
            async with self._writing:
                if failure is not None:
                    await self._attempt_failed(run, step.retry, failure)
                else:
                    await self._step(
                        self.runs[run.id],
                        Trigger.SUCCEED,
                        outputs=published,
                        data={"outputs": published},
                    )
        finally:
            self._changed.set()

    async def _perform(
        self,
        action_name: str,
        arguments: Mapping[str, Any],
        limit: timedelta | None,
        run: StepRun,
        variables: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Render the arguments and run the action once, within the time ``limit``."""
        action = self.worker.registry.implementation(action_name)
        rendered = render_value(dict(arguments), variables)
        ctx = StepContext(
            execution_id=self.execution.id,
            step_id=run.step_id,
            attempt=run.attempt,
            item_key=run.item_key,
            target=variables.get("target"),
            item=variables.get("item"),
            variables=variables,
            reporter=partial(self._report, run),
            clock=self.worker.clock,
        )
        if limit is None:
            return await run_action(action, rendered, ctx)
        try:
            with anyio.fail_after(limit.total_seconds()):
                return await run_action(action, rendered, ctx)
        except TimeoutError:
            raise StepError(
                f"the attempt exceeded the step's timeout of {limit}",
                retryable=True,
                error_type="Timeout",
            ) from None

    async def _attempt_failed(self, run: StepRun, retry: RetrySpec, failure: Failure) -> None:
        current = self.runs[run.id]
        now = self.worker.clock()
        due = next_attempt_at(retry, current.attempt, failure, now, self.worker.draw())
        error = failure.to_dict()
        if due is not None:
            delay = (due - now).total_seconds()
            await self._step(
                current,
                Trigger.RETRY,
                next_attempt_at=due,
                error=error,
                data={
                    "error": error,
                    "next_attempt_at": due.isoformat(),
                    "delay_seconds": round(delay, 3),
                },
            )
        else:
            trigger = Trigger.TIME_OUT if failure.timed_out else Trigger.FAIL
            await self._step(current, trigger, error=error, data={"error": error})

    async def _report(self, run: StepRun, sub_task: str) -> None:
        """An action's sub-task: an event and the execution's ``current_sub_task``."""
        self._check_lease()
        try:
            await self.worker.call(
                self.worker.store.append_event,
                self.execution.id,
                EventType.STEP_PROGRESSED,
                actor=self.worker.owner,
                step_id=run.step_id,
                target=run.target,
                attempt=run.attempt,
                data={"sub_task": sub_task},
                current_sub_task=sub_task,
                lease_owner=self.worker.owner,
            )
        except ConflictError:
            # The lease is gone: stop the attempts; the runner then stops writing.
            self._lost = True
            if self._attempts is not None:
                self._attempts.cancel_scope.cancel()
            self._changed.set()

    def _step_spec(self, step_id: str) -> StepSpec | None:
        """The blueprint step of a run; ``None`` for rollback-plan runs (``@phase.id``)."""
        return next((step for step in self.spec.steps if step.id == step_id), None)

    def _views(self) -> dict[str, StepView]:
        return self.conductor.views(self._run_list())

    def _variables_for(self, run: StepRun) -> dict[str, Any]:
        shared = self.conductor.variables(self._views(), self.worker.clock())
        step = self._step_spec(run.step_id)
        if step is None or step.for_each is None or run.item_index is None:
            return shared
        if step.for_each == "targets":
            target = self.conductor.facts.targets[run.item_index]
            return run_variables(shared, item=target, target=target)
        items = fan_out_items(step, shared)
        return run_variables(shared, item=items[run.item_index])

    # ----------------------------------------------------------------- endings

    async def _finish(self, outcome: Outcome) -> None:
        if outcome.succeeded:
            await self._run_plan(FINALLY)
            await self._transition(Trigger.SUCCEED, expected=_E.RUNNING, progress=100.0)
            await self._close()
            return
        await self._fail(
            {"type": "StepFailed", "message": outcome.reason, "step_id": outcome.step_id}
        )

    async def _fail(self, error: Mapping[str, Any]) -> None:
        """Fail the execution, then roll back when there is something to undo."""
        rollback = needs_rollback(self.spec, self._run_list())
        if not rollback:
            await self._run_plan(FINALLY)
        await self._transition(
            Trigger.FAIL,
            expected=self.execution.status,
            error=dict(error),
            data={"error": dict(error)},
        )
        if rollback:
            await self._transition(Trigger.BEGIN_ROLLBACK, expected=_E.FAILED)
            await self._roll_back()
            return
        await self._close()

    async def _close(self) -> None:
        """At a terminal status: free the locks (queued executions move up) and the lease."""
        await self.worker.call(
            self.worker.store.release_locks, self.execution.id, actor=self.worker.owner
        )
        await self._release()

    # ----------------------------------------------------------------- rollback

    async def _roll_back(self) -> None:
        """Compensations in order, then ``on_failure``, then ``finally``; resumable."""
        failed = False
        for compensation in pending_compensations(self.spec, self._run_list()):
            run = self.runs[compensation.run.id]
            variables = self._variables_for(run)
            variables["steps"] = dict(variables["steps"])
            variables["steps"][run.step_id] = {
                "status": str(run.status),
                "outputs": dict(run.outputs or {}),
            }
            ok = await self._compensate(run, compensation.spec, variables)
            failed = failed or not ok
        failed = not await self._run_plan(ON_FAILURE) or failed
        failed = not await self._run_plan(FINALLY) or failed
        trigger = Trigger.FAIL_ROLLBACK if failed else Trigger.FINISH_ROLLBACK
        await self._transition(trigger, expected=_E.ROLLING_BACK)
        await self._close()

    async def _compensate(
        self, run: StepRun, spec: CompensationSpec, variables: Mapping[str, Any]
    ) -> bool:
        """Undo one completed run, retrying as its compensation says; the run records how."""
        error = await self._with_retries(spec, run, variables)
        if error is None:
            await self._step(run, Trigger.COMPENSATE)
            return True
        await self._step(run, Trigger.FAIL_ROLLBACK, data={"error": error})
        return False

    async def _with_retries(
        self, spec: CompensationSpec, run: StepRun, variables: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Run a compensation or plan action until it succeeds or its attempts run out."""
        attempt = 1
        while True:
            try:
                await self._perform(spec.action, spec.with_, spec.timeout, run, variables)
                return None
            except (StepError, ExpressionError) as exc:
                failure = (
                    _failure(exc)
                    if isinstance(exc, StepError)
                    else Failure(str(exc), "ExpressionError", False)
                )
            now = self.worker.clock()
            due = next_attempt_at(spec.retry, attempt, failure, now, self.worker.draw())
            if due is None:
                return failure.to_dict()
            await self.worker.call(
                self.worker.store.append_event,
                self.execution.id,
                EventType.STEP_COMPENSATION_RETRYING,
                actor=self.worker.owner,
                step_id=run.step_id,
                target=run.target,
                attempt=attempt,
                data={"error": failure.to_dict(), "next_attempt_at": due.isoformat()},
                lease_owner=self.worker.owner,
            )
            await self.worker.sleep((due - now).total_seconds())
            attempt += 1

    async def _run_plan(self, phase: str) -> bool:
        """The blueprint's ``on_failure`` or ``finally`` actions, each tracked as a run."""
        ok = True
        for action in plan_actions(self.spec, phase):
            step_id = plan_step_id(phase, action)
            run = next((r for r in self.runs.values() if r.step_id == step_id), None)
            if run is None:
                [run] = await self._create([NewStepRun(step_id=step_id)])
            if run.status in (_S.SUCCEEDED, _S.FAILED):
                ok = ok and run.status is _S.SUCCEEDED
                continue
            if run.status in (_S.PENDING, _S.RETRYING):
                run = await self._step(run, Trigger.START)
            variables = self.conductor.variables(self._views(), self.worker.clock())
            error = await self._with_retries(action, run, variables)
            if error is None:
                await self._step(run, Trigger.SUCCEED)
            else:
                await self._step(run, Trigger.FAIL, error=error, data={"error": error})
                ok = False
        return ok

    # ----------------------------------------------------------------- recovery

    async def _recover_orphans(self) -> None:
        """Runs left ``running`` by a dead worker: re-run if idempotent, else interrupted."""
        orphans = [run for run in self.runs.values() if run.status is _S.RUNNING]
        if not orphans:
            return
        interrupted = False
        for run in orphans:
            step = self._step_spec(run.step_id)
            if step is None or step.idempotent or self.execution.status is _E.ROLLING_BACK:
                await self._step(
                    run,
                    Trigger.RETRY,
                    next_attempt_at=self.worker.clock(),
                    data={"reason": "its worker was lost; re-running it"},
                )
            else:
                error = {
                    "type": "Interrupted",
                    "retryable": False,
                    "message": "its worker was lost mid-attempt and the step is not "
                    "idempotent, so it is not run again",
                }
                await self._step(run, Trigger.INTERRUPT, error=error, data={"error": error})
                interrupted = True
        if interrupted:
            logger.warning("execution %s had interrupted steps", self.execution.id)


def _failure(exc: StepError) -> Failure:
    return Failure(str(exc), exc.error_type, exc.retryable, timed_out=exc.error_type == "Timeout")
