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

import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from opsgate.actions.base import Children, StepContext, render_arguments, run_action
from opsgate.actions.connections import Connections
from opsgate.actions.registry import ActionRegistry
from opsgate.engine.conductor import (
    Conductor,
    ExecutionFacts,
    Outcome,
    StepFailure,
    StepView,
    fan_out_items,
)
from opsgate.engine.context import run_variables, step_outputs
from opsgate.engine.gates import (
    GateCheck,
    check_gates,
    digests_for,
    granted_responses,
    response_schema,
)
from opsgate.engine.locks import lock_keys, policy_lock_key
from opsgate.engine.retry import Failure, next_attempt_at
from opsgate.engine.rollback import (
    FINALLY,
    ON_FAILURE,
    needs_rollback,
    pending_compensations,
    plan_actions,
    plan_step_id,
)
from opsgate.engine.statuses import (
    EXECUTION_MACHINE,
    EXECUTION_TERMINAL,
    STEP_RUN_MACHINE,
    ApprovalStatus,
    ExecutionStatus,
    StepRunStatus,
    Trigger,
    next_status,
)
from opsgate.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    OpsgateError,
    StepError,
    StoreError,
)
from opsgate.expressions import ExpressionError
from opsgate.inventory import names_as_targets
from opsgate.models import (
    Approval,
    Change,
    EventType,
    Execution,
    ExecutionChanges,
    ExecutionTransition,
    NewStepRun,
    NewStepRuns,
    StepRun,
    StepRunChanges,
    StepRunTransition,
)
from opsgate.policy import Gate, PolicyRequest, Verdict, evaluate_policies
from opsgate.secrets import secret_tokens
from opsgate.spec.model import CompensationSpec, RetrySpec, StepSpec, WorkflowSpec
from opsgate.spec.policies import PolicySet
from opsgate.stores.calls import call_store
from opsgate.stores.sql import CLAIMABLE, SQLStore, planned_step_runs, utc_now

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


class LeaseLost(Exception):
    """Another worker took the execution over; this runner must stop writing at once."""


@dataclasses.dataclass(slots=True)
class _Write:
    """One runner's changes waiting for the group commit (:meth:`Worker.write`)."""

    changes: list[Change]
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    records: list[Any] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


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
        policies: PolicySet | None = None,
        children: Callable[[Execution], Children] | None = None,
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
        self.policies = policies or PolicySet()
        #: Child executions for the ``workflow`` action, per parent (set by the runtime).
        self.children = children
        self._runners: dict[str, ExecutionRunner] = {}
        self._wake = anyio.Event()
        self._specs: dict[str, WorkflowSpec] = {}
        self._write_queue: list[_Write] = []
        self._leading = False
        # Whether a claim may find something (see run()), and what next_wake_at last said.
        self._look = True
        self._due: tuple[datetime | None] | None = None

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method (the store is synchronous): on SQLite here and now unless it
        would wait for another process's write lock, otherwise in a thread (:func:`call_store`).

        A store error (the database locked past its busy timeout, a restarting server) is
        retried with a growing pause for up to ``STORE_RETRY_SECONDS``: a transaction that
        failed wrote nothing, and every write is a compare-and-set, so trying again is safe.
        """
        pause = 0.05
        started = time.monotonic()
        while True:
            try:
                return await call_store(self.store, function, *args, **kwargs)
            except StoreError as exc:
                if time.monotonic() - started > STORE_RETRY_SECONDS:
                    raise
                logger.warning("the database failed (%s); retrying in %.2fs", exc, pause)
            await anyio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def write(self, changes: list[Change]) -> list[Any]:
        """Write a runner's changes in one transaction with those of the other runners that
        are waiting to write: the group commit, one fsync for many executions' transitions.

        The first runner to write leads: it writes every batch that arrives meanwhile, in
        groups, until none is left. Every runner of a group gets the group's records (each
        keeps its own). A group refused as a whole is written again one runner at a time, so
        that one runner's conflict stays its own error.
        """
        request = _Write(changes)
        self._write_queue.append(request)
        if not self._leading:
            self._leading = True
            try:
                # The others wait for their results: a cancelled leader still delivers them.
                with anyio.CancelScope(shield=True):
                    while self._write_queue:
                        # Let the runners that are ready now queue their writes too: on SQLite
                        # the write runs on the event loop (call_store), so nobody else could
                        # join the group while it is written.
                        await anyio.lowlevel.checkpoint()
                        group, self._write_queue = self._write_queue, []
                        await self._write_group(group)
            finally:
                self._leading = False
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.records

    async def _write_group(self, group: list[_Write]) -> None:
        """Write a group; every request ends with its records or its error (never raises: the
        leader goes on with the next group, and no runner waits forever)."""
        try:
            records = await self.call(self.store.write, [c for w in group for c in w.changes])
            for request in group:
                request.records = records
        except OpsgateError as exc:
            for request in group:
                request.error = exc
            if len(group) > 1:
                for request in group:
                    request.error = None
                    try:
                        request.records = await self.call(self.store.write, request.changes)
                    except Exception as alone:
                        request.error = alone
        except Exception as exc:
            for request in group:
                request.error = exc
        finally:
            for request in group:
                request.done.set()

    def wake(self, execution_id: str | None = None) -> None:
        """Something changed (a new execution, a decision, a cancel): look again now."""
        runner = self._runners.get(execution_id) if execution_id else None
        if runner is not None:
            runner.poke()
        self._something_changed()

    def _something_changed(self) -> None:
        self._look = True
        self._due = None
        self._wake.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Claim and run executions until cancelled (or, with ``until_idle``, until no work is
        left that is due now and no runner is active: for tests and one-shot CLI runs).

        A claim that found less than it had room for took everything claimable: the worker
        claims again only once something changed (:meth:`wake`, a runner that ended other than
        quietly, a slot freed while work waited) or at its periodic look, which also finds the
        work of other processes and expired leases.
        """
        self._something_changed()
        async with anyio.create_task_group() as group:
            while True:
                self._wake = anyio.Event()
                if self._look:
                    room = self.capacity - len(self._runners)
                    try:
                        claimed = await self._claim(room)
                    except StoreError:
                        logger.exception("cannot claim executions; trying again")
                        await anyio.sleep(self.lease_seconds / 3)
                        continue
                    self._look = len(claimed) >= room
                    for execution in claimed:
                        if execution.id in self._runners:
                            continue  # its own runner was late to renew; the claim renewed it
                        runner = ExecutionRunner(self, execution)
                        self._runners[execution.id] = runner
                        group.start_soon(self._run_one, runner)
                    if claimed:
                        self._due = None
                        continue
                if until_idle and not self._runners:
                    due = await self._next_wake_at()
                    if due is None or due > self.clock():
                        group.cancel_scope.cancel()
                        return
                await self._sleep_until_due()

    async def _claim(self, room: int) -> list[Execution]:
        if room <= 0:
            return []
        return await self.call(
            self.store.claim_executions,
            self.owner,
            lease_seconds=self.lease_seconds,
            limit=room,
            statuses=CLAIMABLE,
        )

    async def _next_wake_at(self) -> datetime | None:
        """The store's next_wake_at, read again only once something changed."""
        if self._due is None:
            self._due = (await self.call(self.store.next_wake_at),)
        return self._due[0]

    async def _sleep_until_due(self) -> None:
        due = await self._next_wake_at()
        timeout = self.lease_seconds / 3
        if due is not None:
            # At least a moment: work that is due but not claimable (a live lease) must not spin.
            timeout = min(timeout, max((due - self.clock()).total_seconds(), 0.01))
        with anyio.move_on_after(timeout) as scope:
            await self._wake.wait()
        if scope.cancelled_caught:  # the periodic look, or something fell due
            self._something_changed()

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
            if runner.ended_quietly and not self._look:
                self._wake.set()  # nothing new to claim, but until_idle may be done
            else:
                self._something_changed()

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

    def cached_spec(self, digest: str) -> WorkflowSpec | None:
        """The snapshot's spec if :meth:`spec_of` read it already (no thread hop needed)."""
        return self._specs.get(digest)

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
        #: Steps whose gates are not known to be cleared; checked when they would start.
        self.gated: set[str] = set()
        #: The approvals the last gate check left pending: what a park waits for.
        self._awaited: frozenset[str] = frozenset()
        self._changed = anyio.Event()
        self._attempts: anyio.abc.TaskGroup | None = None
        self._lost = False
        self._stale = False
        # Decisions and attempt outcomes are persisted one at a time, so that every decision
        # is taken on all the outcomes written before it (a batch stops exactly at its limit).
        self._writing = anyio.Lock()
        #: Deferred changes (see "Deferring" above :meth:`_flush`), written with the next change
        #: that is not deferred.
        self._queued: list[Change] = []
        self._committing = 0
        #: Ended and gave the lease back without making other work claimable (no lock freed).
        self.ended_quietly = False
        #: Whether the execution can have approvals or locks for :meth:`_close` to end (known
        #: once its blueprint and policies are read; until then, assume it can).
        self._may_have_approvals = True
        self._may_hold_locks = True
        #: The places a policy's ``max_concurrent`` allows the executions of this blueprint.
        self._policy_places: int | None = None
        # One connection per target for the whole execution (SSH), closed when the runner stops.
        self.connections = Connections()

    def poke(self) -> None:
        """Someone changed the execution (a cancel, a pause): re-read it and look again."""
        self._stale = True
        self._changed.set()

    async def _refresh(self) -> None:
        if self._stale:
            await self._flush()
            self._stale = False
            self.execution = await self.worker.call(
                self.worker.store.get_execution, self.execution.id
            )

    # ----------------------------------------------------------------- the main loop

    async def run(self) -> None:
        worker = self.worker
        digest = self.execution.blueprint_digest
        cached = worker.cached_spec(digest)
        self.spec = await worker.call(worker.spec_of, digest) if cached is None else cached
        queued_fire = self.execution.schedule_id is not None  # may hold its schedule's lock
        self._may_hold_locks = queued_fire or self.spec.concurrency is not None
        try:
            targets = worker.resolve_targets(self.spec, self.execution.parameters)
        except (ConfigurationError, NotFoundError, ExpressionError) as exc:
            await self._unresolvable(exc)
            return
        verdict = self._verdict(targets)
        self._policy_places = verdict.limits.max_concurrent
        self._may_hold_locks = self._may_hold_locks or self._policy_places is not None
        self.gated = {step.id for step in self.spec.steps if verdict.gates_for(step.id)}
        self._may_have_approvals = bool(self.gated)
        self.conductor = Conductor(
            self.spec,
            ExecutionFacts(
                execution_id=self.execution.id,
                workflow_name=self.execution.workflow_name,
                requested_by=self.execution.requested_by,
                params=secret_tokens(self.spec, self.execution.parameters),
                targets=targets,
                max_parallel=verdict.limits.max_parallel,
            ),
        )
        if self.execution.status is not _E.PENDING:  # runs are created once it has started
            for run in await worker.call(worker.store.list_step_runs, self.execution.id):
                self.runs[run.id] = run
        if self.gated:
            approvals = await worker.call(
                worker.store.list_approvals, execution_id=self.execution.id
            )
            self.conductor.approvals = granted_responses(approvals)
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
                await self.connections.aclose()

    async def _unresolvable(self, exc: Exception) -> None:
        """The targets cannot be resolved (the inventory changed since it was planned): fail,
        rather than be claimed again and again; nothing that needs the targets can run or be
        undone, which the error says."""
        status = self.execution.status
        if status in EXECUTION_TERMINAL or status is _E.ROLLING_BACK:
            logger.error("execution %s: its targets cannot be resolved: %s", self.execution.id, exc)
            await self._release(self.worker.clock() + timedelta(seconds=CRASH_BACKOFF_SECONDS))
            return
        error = {
            "type": "TargetsUnresolvable",
            "retryable": False,
            "message": f"its targets could not be resolved: {exc}; nothing more ran and "
            "nothing was undone (both need the targets): fix the inventory and run it again",
        }
        await self._transition(Trigger.FAIL, expected=status, error=error, data={"error": error})
        await self._close()

    async def _phases(self) -> None:
        if self.execution.status in EXECUTION_TERMINAL:
            await self._finish_abandoned()
            return
        await self._recover_orphans()
        if self.execution.status is _E.PENDING and not await self._start_execution():
            return
        if self.execution.status is _E.ROLLING_BACK:
            await self._roll_back()
        elif self.execution.status in (_E.RUNNING, _E.WAITING_APPROVAL, _E.PAUSED, _E.CANCELLED):
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
                accepting = self.execution.status in (_E.RUNNING, _E.WAITING_APPROVAL)
                gate_wake: datetime | None = None
                async with self._writing:
                    decision = self.conductor.decide(
                        list(self.runs.values()),
                        self.worker.clock(),
                        accepting=accepting,
                        gated=self.gated,
                    )
                    if decision.has_work:
                        await self._apply(
                            decision.create, decision.skip, decision.fail, decision.cancel
                        )
                        if decision.start and self.execution.status is _E.WAITING_APPROVAL:
                            await self._transition(Trigger.APPROVE, expected=_E.WAITING_APPROVAL)
                        await self._start_attempts(attempts, decision.start)
                    if decision.gate:
                        changed, gate_wake = await self._check_gates(decision.gate)
                        if changed:
                            continue
                if decision.has_work:
                    continue
                if decision.outcome is not None:
                    await self._finish(decision.outcome)
                    return
                wake_at = _earliest(decision.wake_at, gate_wake)
                if not self._running():
                    if decision.gate and self.execution.status is _E.RUNNING:
                        await self._transition(Trigger.REQUEST_APPROVAL, expected=_E.RUNNING)
                    await self._park(wake_at, self._awaited if decision.gate else frozenset())
                    return
                await self._wait(wake_at)
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
            # Our own writes in the making are not a change by someone else.
            mine = self._queued or self._committing
            if fresh.status is not self.execution.status and not mine:
                self.execution = fresh
                self._changed.set()

    async def _release(
        self, wake_at: datetime | None = None, awaited: frozenset[str] = frozenset()
    ) -> None:
        """Give the lease back, in the transaction that writes what is still deferred."""
        await self._commit(release=True, wake_at=wake_at, awaited=awaited)

    async def _park(self, wake_at: datetime | None, awaited: frozenset[str]) -> None:
        """Nothing runs: give the execution back as a row until ``wake_at`` or its deadline,
        or at once if one of the ``awaited`` approvals was decided since the gate check."""
        moments = [m for m in (wake_at, self.execution.deadline_at) if m is not None]
        await self._release(min(moments) if moments else None, awaited)

    # ----------------------------------------------------------------- persistence

    async def _transition(
        self, trigger: Trigger, *, expected: ExecutionStatus, defer: bool = False, **changes: Any
    ) -> Execution:
        """Apply ``trigger`` to the execution, with the changes still deferred; ``defer`` it
        too when the next write can carry it (see "Deferring" above :meth:`_flush`)."""
        self._check_lease()
        data = changes.pop("data", None)
        new = next_status(EXECUTION_MACHINE, expected, trigger, entity_id=self.execution.id)
        self._queued.append(
            ExecutionTransition(
                execution_id=self.execution.id,
                trigger=trigger,
                expected=expected,
                actor=self.worker.owner,
                data=data,
                lease_owner=self.worker.owner,
                changes=cast(ExecutionChanges, changes),
            )
        )
        self.execution = dataclasses.replace(self.execution, status=new, **changes)
        if not defer:
            await self._flush()
        return self.execution

    async def _after_conflict(self) -> None:
        """A compare-and-set lost: if the lease went to another worker, stop at once.

        The records are read again: what was deferred after the refused change was not written.
        Runs whose outcome an attempt deferred meanwhile keep it.
        """
        self.execution, runs = await self.worker.call(
            self.worker.store.execution_status, self.execution.id
        )
        later = self._deferred_runs()
        self.runs = {run.id: self.runs.get(run.id, run) if run.id in later else run for run in runs}
        if self.execution.lease_owner != self.worker.owner:
            self._lost = True
            raise LeaseLost(self.execution.id)

    async def _step(
        self,
        run: StepRun,
        trigger: Trigger,
        *,
        data: Mapping[str, Any] | None = None,
        defer: bool = False,
        **changes: Any,
    ) -> StepRun:
        """Apply ``trigger`` to a step run, as :meth:`_transition` does to the execution."""
        self._check_lease()
        new = next_status(STEP_RUN_MACHINE, run.status, trigger, entity_id=run.id)
        self._queued.append(
            StepRunTransition(
                step_run_id=run.id,
                trigger=trigger,
                expected=run.status,
                actor=self.worker.owner,
                data=dict(data) if data else None,
                lease_owner=self.worker.owner,
                changes=cast(StepRunChanges, changes),
            )
        )
        self.runs[run.id] = dataclasses.replace(run, status=new, **changes)
        if not defer:
            await self._flush()
        return self.runs[run.id]

    async def _create(self, new: Sequence[NewStepRun], *, defer: bool = False) -> list[StepRun]:
        """Create pending runs (those this runner knows already stay as they are)."""
        self._check_lease()
        self._queued.append(
            NewStepRuns(
                execution_id=self.execution.id, runs=tuple(new), lease_owner=self.worker.owner
            )
        )
        planned = planned_step_runs(self.execution.id, new, self.worker.clock())
        created = [self.runs.setdefault(run.id, run) for run in planned]
        if not defer:
            await self._flush()
        return [self.runs[run.id] for run in created]

    # Deferring: a change the runner has decided is kept in memory (``self.runs`` and
    # ``self.execution`` show it already) and written in one transaction with the next change
    # that is not deferred: "step k succeeded, step k+1 created and started" is one commit.
    # Only what nobody can see yet is deferred, and everything is written before an action
    # starts, before the runner waits or reads, and when it gives the lease back; a crash
    # in between loses what the crash would have lost a moment earlier (a run that was
    # running is still running in the database, and recovery decides about it).

    async def _flush(self) -> None:
        """Write the deferred changes now, in one transaction."""
        if self._queued:
            await self._commit()

    async def _commit(
        self,
        *,
        release: bool = False,
        wake_at: datetime | None = None,
        awaited: frozenset[str] = frozenset(),
    ) -> None:
        """Write the deferred changes (and give the lease back with them, with ``release``)."""
        batch, self._queued = self._queued, []
        self._check_lease()
        self._committing += 1
        try:
            try:
                written = await self._write(batch, release, wake_at, awaited)
            except ConflictError:
                if len(batch) < 2:
                    raise
                # One change was refused, so none was written: write them one at a time, as
                # if none had been deferred, so that those before the refused one are kept.
                for change in batch:
                    self._adopt(await self._write([change], False, None, frozenset()))
                written = await self._write([], release, wake_at, awaited)
        except ConflictError:
            await self._after_conflict()
            raise
        finally:
            self._committing -= 1
        self._adopt(written)

    async def _write(
        self,
        batch: list[Change],
        release: bool,
        wake_at: datetime | None,
        awaited: frozenset[str],
    ) -> list[Any]:
        store, owner = self.worker.store, self.worker.owner
        if release:
            released = await self.worker.call(
                store.release_lease,
                self.execution.id,
                owner,
                wake_at=wake_at,
                changes=batch,
                awaited=awaited,
            )
            return [released]
        return await self.worker.write(batch)

    def _deferred_runs(self) -> set[str]:
        return {c.step_run_id for c in self._queued if isinstance(c, StepRunTransition)}

    def _adopt(self, records: Sequence[Any]) -> None:
        """Take the records as written, unless a later change of theirs is deferred."""
        later = self._deferred_runs()
        mine = self.execution.id
        for record in records:
            if isinstance(record, StepRun):
                if record.execution_id == mine and record.id not in later:
                    self.runs[record.id] = record
            elif isinstance(record, Execution) and record.id == mine:
                if not any(isinstance(c, ExecutionTransition) for c in self._queued):
                    self.execution = record

    def _check_lease(self) -> None:
        if self._lost:
            raise LeaseLost(self.execution.id)

    # ----------------------------------------------------------------- applying decisions

    async def _start_execution(self) -> bool:
        """Take the locks, then start; queued behind a holder, wait as a row."""
        queued = await self._take_locks()
        policy_key = policy_lock_key(self.spec.name)
        conflicts = [key for key in queued if key != policy_key]  # a policy's place is waited for
        if conflicts and self.spec.concurrency and self.spec.concurrency.on_conflict == "reject":
            error = {
                "type": "LockConflict",
                "message": f"locks {', '.join(conflicts)} are held by other executions",
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
        await self._transition(Trigger.START, expected=_E.PENDING, deadline_at=deadline, defer=True)
        return True

    async def _take_locks(self) -> list[str]:
        """Hold or queue for each lock key; the keys still queued for.

        The blueprint's keys first (the service took them already when it created the
        execution), then a policy's place, only once they are all held: an execution holding a
        place never waits for anything, so no two executions can each hold what the other
        waits for.
        """
        if self.spec.concurrency is None and self._policy_places is None:
            return []
        await self._flush()
        queued = []
        if self.spec.concurrency is not None:
            most = self.spec.concurrency.max_concurrent
            keys = lock_keys(self.spec, self.execution.parameters)
            queued = [key for key in keys if not await self._hold(key, most)]
        if not queued and self._policy_places is not None:
            key = policy_lock_key(self.spec.name)
            if not await self._hold(key, self._policy_places):
                queued.append(key)
        return queued

    async def _hold(self, key: str, places: int) -> bool:
        """Hold one of ``places`` on ``key``, or queue for one (``False``)."""
        holding = await self.worker.call(
            self.worker.store.acquire_lock,
            key,
            self.execution.id,
            max_concurrent=places,
            actor=self.worker.owner,
        )
        return holding.status != "queued"

    async def _apply(
        self,
        create: Sequence[NewStepRun],
        skip: Sequence[tuple[str, str]],
        fail: Sequence[Any],
        cancel: Sequence[StepRun],
    ) -> None:
        if create:
            await self._create(create, defer=True)
        for step_id, reason in skip:
            [run] = await self._create([NewStepRun(step_id=step_id)], defer=True)
            await self._step(run, Trigger.SKIP, data={"reason": reason})
        for failure in fail:
            error = {"message": failure.message, "type": failure.error_type, "retryable": False}
            pending = [
                r
                for r in self.runs.values()
                if r.step_id == failure.step_id and r.status in (_S.PENDING, _S.WAITING_APPROVAL)
            ]
            for run in pending or await self._create([NewStepRun(step_id=failure.step_id)]):
                await self._step(run, Trigger.FAIL, data={"error": error}, error=error)
        for run in cancel:
            await self._step(
                self.runs[run.id],
                Trigger.CANCEL,
                data={"reason": "the step stopped after too many failures"},
            )

    async def _start_attempts(self, attempts: anyio.abc.TaskGroup, runs: Sequence[StepRun]) -> None:
        """Start runs: their transitions (and what was deferred) in one commit, then their
        attempts; no action runs before its start is written."""
        if not runs:
            return
        for run in runs:
            await self._step(run, Trigger.START, defer=True)
        await self._flush()
        for run in runs:
            attempts.start_soon(self._attempt, self.runs[run.id])

    def _running(self) -> bool:
        return any(run.status is _S.RUNNING for run in self.runs.values())

    def _run_list(self) -> list[StepRun]:
        return list(self.runs.values())

    def _deadline_passed(self) -> bool:
        deadline = self.execution.deadline_at
        return deadline is not None and self.worker.clock() >= deadline

    async def _wait(self, wake_at: datetime | None) -> None:
        """Until an attempt ends, someone pokes, a retry falls due or the deadline passes."""
        await self._flush()
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

    # ----------------------------------------------------------------- approval gates

    def _verdict(self, targets: Sequence[Mapping[str, Any]]) -> Verdict:
        requester = self.execution.requested_by
        return evaluate_policies(
            self.worker.policies,
            PolicyRequest(
                blueprint=self.spec,
                params=self.execution.parameters,
                principal=requester,
                roles=self.worker.policies.roles.roles_of(requester),
                targets=targets,
                now=self.worker.clock(),
            ),
        )

    async def _check_gates(self, step_ids: Sequence[str]) -> tuple[bool, datetime | None]:
        """Right before gated steps would start: the policies again, then their approvals.

        Returns whether something changed that the conductor must see (a step cleared or
        failed) and the earliest approval deadline to wake up for.
        """
        await self._flush()
        now = self.worker.clock()
        verdict = self._verdict(self.conductor.facts.targets)
        approvals = await self.worker.call(
            self.worker.store.list_approvals, execution_id=self.execution.id
        )
        changed, wake = False, None
        awaited: set[str] = set()
        for step_id in step_ids:
            denials = verdict.denials_for(step_id)
            if denials:
                message = "Denied by policy: " + " ".join(v.explain() for v in denials)
                await self._apply((), (), [StepFailure(step_id, message, "PolicyDenied")], ())
                changed = True
                continue
            gates = verdict.gates_for(step_id)
            check = check_gates(gates, approvals, self._digests(gates), now)
            ended = {a.id for a in (*check.supersede, *check.expire, *check.escalate)}
            approvals += await self._write_gates(check)
            awaited |= {a.id for a in approvals if a.status is ApprovalStatus.PENDING} - ended
            self.conductor.approvals = granted_responses(approvals)
            if check.refused is not None:
                failure = StepFailure(step_id, check.refused, "ApprovalRefused")
                await self._apply((), (), [failure], ())
                changed = True
            elif check.cleared:
                self.gated.discard(step_id)
                changed = True
            else:
                for run in [r for r in self.runs.values() if r.step_id == step_id]:
                    if run.status is _S.PENDING:
                        await self._step(run, Trigger.REQUEST_APPROVAL)
                opened = min((o.deadline_at for o in check.open), default=None)
                wake = _earliest(wake, _earliest(opened, check.wake_at))
        self._awaited = frozenset(awaited)
        return changed, wake

    def _digests(self, gates: Sequence[Gate]) -> dict[str, str]:
        return digests_for(
            self.spec.steps,
            sorted({gate.step_key for gate in gates}),
            self.execution.parameters,
            self.conductor.facts.targets,
            self._run_list(),
        )

    async def _write_gates(self, check: GateCheck) -> list[Approval]:
        """Persist what a gate check found; the approvals it opened."""
        store, owner = self.worker.store, self.worker.owner
        for approval, trigger in (
            *((a, Trigger.SUPERSEDE) for a in check.supersede),
            *((a, Trigger.EXPIRE) for a in check.expire),
            *((a, Trigger.ESCALATE) for a in check.escalate),
        ):
            await self.worker.call(
                store.transition_approval,
                approval.id,
                trigger,
                expected=ApprovalStatus.PENDING,
                actor=owner,
                lease_owner=owner,
            )
        opened = []
        for opening in check.open:
            gate = opening.gate
            approval, _ = await self.worker.call(
                store.create_approval,
                execution_id=self.execution.id,
                step_id=gate.step_key,
                gate=gate.name,
                digest=self._digests([gate])[gate.step_key],
                approvers=opening.approvers,
                quorum=gate.spec.quorum,
                allow_self_approval=gate.spec.allow_self_approval,
                requested_by=self.execution.requested_by,
                on_timeout=opening.on_timeout,
                actor=owner,
                deadline_at=opening.deadline_at,
                escalate_to=opening.escalate_to,
                response_schema=response_schema(gate.spec),
                previous_approval_id=opening.previous.id if opening.previous else None,
            )
            opened.append(approval)
        return opened

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
                        defer=True,  # written with whatever the runner does next
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
        rendered = render_arguments(action, arguments, variables)
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
            connections=self.connections,
            children=self.worker.children(self.execution) if self.worker.children else None,
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
            await self._transition(Trigger.SUCCEED, expected=_E.RUNNING, progress=100.0, defer=True)
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
        """At a terminal status: close open approvals, free the locks (queued executions move
        up) and the lease; skipping what the execution cannot have."""
        store, owner = self.worker.store, self.worker.owner
        if self._may_have_approvals:
            await self._flush()
            await self.worker.call(store.cancel_open_approvals, self.execution.id, actor=owner)
        if self._may_hold_locks:
            await self._flush()
            await self.worker.call(store.release_locks, self.execution.id, actor=owner)
        await self._release()
        self.ended_quietly = not self._may_hold_locks

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


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    moments = [m for m in (first, second) if m is not None]
    return min(moments) if moments else None
