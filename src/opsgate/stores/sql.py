"""The SQL store: everything opsgate keeps, on SQLite or PostgreSQL, in one code path.

Each public method is one transaction and returns domain records (:mod:`opsgate.models`).
Statements are SQLAlchemy Core on the tables of :mod:`opsgate.stores.tables`: a status change is
on the hot path, and an ORM session costs several times the commit itself.

A status change is a compare-and-set, ``UPDATE ... WHERE id = :id AND status = :expected``,
checked first against the machine's transition table; losing the race is a
:class:`ConflictError` and changes nothing. Every accepted transition appends exactly one event
in the same transaction. An execution's events are numbered 1, 2, 3 ... without gaps from its
``last_seq`` column: incrementing it takes the execution's row lock, so events of one execution
are numbered in commit order, and a transaction that rolls back gives its number back.

Workers own executions through leases (``lease_owner``, ``lease_expires_at``), taken by
:meth:`SQLStore.claim_executions`. A write given ``lease_owner=`` is *guarded*: it also requires
that the execution's lease is still that worker's, so a worker whose lease was taken over writes
nothing. :meth:`SQLStore.apply` writes several changes (of several executions) in one
transaction, the group commit of the worker's hot path; the single-change methods are batches of
one through the same code.

Lock order, to keep PostgreSQL free of deadlocks: the execution row first (by numbering the
event), then the step run or approval row; a batch of several changes locks all its executions
first, in id order.

Methods are synchronous; async callers go through :func:`opsgate.stores.calls.call_store` (on
SQLite, on the event loop unless the call would wait for a lock; otherwise in a thread).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypedDict, TypeVar, Unpack

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

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
    StatusT,
    StepRunStatus,
    Trigger,
    next_status,
)
from opsgate.errors import ConflictError, NotFoundError, OpsgateError
from opsgate.models import (
    APPROVAL_EVENTS,
    EXECUTION_EVENTS,
    FIRE_EVENTS,
    STEP_RUN_EVENTS,
    Approval,
    ApprovalDecision,
    ApprovalDecisionKind,
    ApprovalTransition,
    Approvers,
    BlueprintSnapshot,
    Change,
    Channel,
    Event,
    EventType,
    Execution,
    ExecutionChanges,
    ExecutionTransition,
    FireOutcome,
    JSONObject,
    LockHolding,
    LockStatus,
    MisfirePolicy,
    NewEvent,
    NewFire,
    NewStepRun,
    NewStepRuns,
    OnTimeout,
    OverlapPolicy,
    Page,
    Schedule,
    ScheduleFire,
    StepRun,
    StepRunChanges,
    StepRunTransition,
    WorkflowMetrics,
    canonical_json,
    content_digest,
)
from opsgate.stores.database import READ_ONLY, KeptConnections, create_engine_for, store_error
from opsgate.stores.migrate import upgrade
from opsgate.stores.prepared import Prepared, execute_many, prepare
from opsgate.stores.tables import (
    UTCDateTime,
    approval_decisions,
    approvals,
    blueprint_snapshots,
    events,
    executions,
    locks,
    schedule_fires,
    schedules,
    step_runs,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Clock = Callable[[], datetime]
MAX_PAGE_SIZE = 500
#: The statuses in which an execution needs a worker: to start, to go on, to check its gates (a
#: decision was made or a deadline passed), to finish its rollback.
CLAIMABLE: Final = (
    ExecutionStatus.PENDING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.WAITING_APPROVAL,
    ExecutionStatus.ROLLING_BACK,
)
#: An execution in these statuses picks up step runs made pending again on its own.
_ACTIVE: Final = frozenset(
    {
        ExecutionStatus.PENDING,
        ExecutionStatus.RUNNING,
        ExecutionStatus.WAITING_APPROVAL,
        ExecutionStatus.PAUSED,
    }
)

RecordT = TypeVar("RecordT", bound="DataclassInstance")
#: The actor of the events the scheduler's fires append.
_SCHEDULER: Final = "scheduler"


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class ScheduleChanges(TypedDict, total=False):
    """Schedule fields :meth:`SQLStore.update_schedule` may change."""

    cron: str
    timezone: str
    parameters: JSONObject
    overlap_policy: OverlapPolicy
    misfire_policy: MisfirePolicy
    enabled: bool
    start_at: datetime | None
    end_at: datetime | None
    next_fire_at: datetime | None
    catchup_window_seconds: int
    misfire_grace_seconds: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Kind(Generic[StatusT]):
    """What the shared compare-and-set needs to know about one kind of record.

    ``stamps`` gives the bookkeeping columns set by a transition to a status (the transition's
    time is the ``_NOW`` parameter); ``subject`` gives the event's columns (execution, step,
    target, attempt) and its data from the updated row.
    """

    table: sa.Table
    machine: Machine[StatusT]
    events: Mapping[Trigger, EventType]
    stamps: Callable[[StatusT, Trigger], dict[str, Any]]
    subject: Callable[[sa.Row[Any], JSONObject], dict[str, Any]]


#: The time of a hot-path statement, bound when it runs (see :func:`_run`).
_NOW: Final = sa.bindparam("b_now", type_=UTCDateTime())


def _execution_stamps(new: ExecutionStatus, trigger: Trigger) -> dict[str, Any]:
    # The event's seq comes from this same UPDATE (RETURNING last_seq).
    values: dict[str, Any] = {"updated_at": _NOW, "last_seq": executions.c.last_seq + 1}
    if new is ExecutionStatus.RUNNING:
        values["started_at"] = sa.func.coalesce(executions.c.started_at, _NOW)
    # Leaving a terminal status (a rollback, a rerun) means it is not finished any more.
    values["finished_at"] = _NOW if new in EXECUTION_TERMINAL else None
    if trigger is Trigger.RERUN:
        values["error"] = None
    return values


def _step_run_stamps(new: StepRunStatus, trigger: Trigger) -> dict[str, Any]:
    values: dict[str, Any] = {"updated_at": _NOW}
    if new is StepRunStatus.RUNNING:
        values["started_at"] = sa.func.coalesce(step_runs.c.started_at, _NOW)
        values["attempt"] = step_runs.c.attempt + 1
        values["next_attempt_at"] = None
    if trigger is Trigger.RERUN:
        # A rerun starts afresh: attempts (and so the retry budget) count from 1 again; the
        # earlier attempts stay in the event log.
        values.update(attempt=0, started_at=None, next_attempt_at=None, outputs=None, error=None)
    values["finished_at"] = _NOW if new in STEP_RUN_TERMINAL else None
    return values


def _approval_stamps(new: ApprovalStatus, _trigger: Trigger) -> dict[str, Any]:
    return {"decided_at": _NOW} if new in APPROVAL_TERMINAL else {}


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """One transition, checked against its table: the compare-and-set still to run."""

    kind: _Kind[Any]
    entity_id: str
    trigger: Trigger
    expected: ExecutionStatus | StepRunStatus | ApprovalStatus
    new: ExecutionStatus | StepRunStatus | ApprovalStatus
    actor: str
    data: JSONObject
    owner: str | None
    changes: Mapping[str, Any]


_EXECUTION = _Kind(
    executions,
    EXECUTION_MACHINE,
    EXECUTION_EVENTS,
    _execution_stamps,
    lambda row, data: {"execution_id": row.id, "data": data},
)
_STEP_RUN = _Kind(
    step_runs,
    STEP_RUN_MACHINE,
    STEP_RUN_EVENTS,
    _step_run_stamps,
    lambda row, data: {
        "execution_id": row.execution_id,
        "step_id": row.step_id,
        "target": row.target,
        "attempt": row.attempt,
        "data": {"step_run_id": row.id, **data},
    },
)
_APPROVAL = _Kind(
    approvals,
    APPROVAL_MACHINE,
    APPROVAL_EVENTS,
    _approval_stamps,
    lambda row, data: {
        "execution_id": row.execution_id,
        "step_id": row.step_id,
        "data": {"approval_id": row.id, **data},
    },
)


class SQLStore:
    """opsgate's records on SQLite (one node) or PostgreSQL (several replicas).

    ``clock`` stamps every ``created_at``, ``updated_at`` and event time; tests inject their own.
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        self._kept = KeptConnections(engine)
        # Snapshots this store has saved or read: immutable and never deleted, so each is
        # written once per process, not once per execution.
        self._snapshots: dict[str, BlueprintSnapshot] = {}

    @classmethod
    def open(cls, url: str, *, clock: Clock = utc_now) -> SQLStore:
        """A store on the database at ``url`` (see :func:`create_engine_for`)."""
        return cls(create_engine_for(url), clock=clock)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def migrate(self) -> str:
        """Upgrade the schema to the newest revision; returns that revision."""
        return upgrade(self._engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self._kept.close()
        self._engine.dispose()

    # -- blueprint snapshots -------------------------------------------------------------------

    def save_snapshot(self, name: str, version: str, content: JSONObject) -> BlueprintSnapshot:
        """Keep ``content`` under its digest; saving the same content again changes nothing."""
        digest = content_digest(content)
        known = self._snapshots.get(digest)
        if known is not None:
            return known
        values = {
            "digest": digest,
            "name": name,
            "version": version,
            "content": dict(content),
            "created_at": self._clock(),
        }
        with self._transaction() as conn:
            _insert_rows(conn, blueprint_snapshots, [values], unique=("digest",))
            snapshot = _snapshot_in(conn, digest)
        return self._snapshots.setdefault(digest, snapshot)

    def get_snapshot(self, digest: str) -> BlueprintSnapshot:
        known = self._snapshots.get(digest)
        if known is not None:
            return known
        with self._transaction(read_only=True) as conn:
            snapshot = _snapshot_in(conn, digest)
        return self._snapshots.setdefault(digest, snapshot)

    # -- executions ----------------------------------------------------------------------------

    def create_execution(
        self,
        *,
        workflow_name: str,
        blueprint_digest: str,
        parameters: JSONObject,
        requested_by: str,
        idempotency_key: str | None = None,
        plan_digest: str | None = None,
        parent_execution_id: str | None = None,
        schedule_id: str | None = None,
        deadline_at: datetime | None = None,
        fire: NewFire | None = None,
        locks: Sequence[tuple[str, int]] = (),
        refuse_queued: bool = False,
    ) -> tuple[Execution, bool]:
        """Create a pending execution and its ``execution.created`` event (seq 1).

        ``locks`` (keys and their places) are held or queued for in the same transaction
        (:meth:`acquire_lock`), so that no worker can claim the execution before they are. With
        ``refuse_queued`` (a blueprint's ``on_conflict: reject``), an execution that would queue
        for one of them gives its places up and fails at once, still in that transaction, with a
        ``LockConflict`` error naming the keys: no worker can start it meanwhile.

        With an ``idempotency_key``, repeating the same request (same principal, key, blueprint
        and parameters) returns the execution created the first time, and ``False`` as second
        item; the same key with another blueprint or other parameters is a :class:`ConflictError`.
        With a ``fire``, the schedule's fire is recorded in the same transaction (see
        :class:`NewFire`); a fire that is already recorded, or no longer the schedule's next, is a
        :class:`ConflictError` and creates nothing: this is what makes a fire start exactly once.
        """
        now = self._clock()
        execution_id = _new_id("exe")
        if fire is not None:
            schedule_id = fire.schedule_id
        values = {
            "id": execution_id,
            "workflow_name": workflow_name,
            "blueprint_digest": blueprint_digest,
            "parameters": dict(parameters),
            "status": ExecutionStatus.PENDING,
            "requested_by": requested_by,
            "idempotency_key": idempotency_key,
            "plan_digest": plan_digest,
            "parent_execution_id": parent_execution_id,
            "schedule_id": schedule_id,
            "last_seq": 1,
            "created_at": now,
            "deadline_at": deadline_at,
            "updated_at": now,
        }
        unique = ("requested_by", "idempotency_key")
        with self._transaction() as conn:
            inserted = _insert_rows(conn, executions, [values], unique=unique, returning=True)
            row = inserted[0] if inserted else None
            if row is None:
                existing = conn.execute(
                    sa.select(executions).where(
                        executions.c.requested_by == requested_by,
                        executions.c.idempotency_key == idempotency_key,
                    )
                ).one()
                _check_same_request(existing, blueprint_digest, parameters)
                return _record(Execution, existing), False
            _insert_event(
                conn,
                execution_id=execution_id,
                seq=1,
                event_type=EventType.EXECUTION_CREATED,
                actor=requested_by,
                occurred_at=now,
                data={
                    "workflow_name": workflow_name,
                    "blueprint_digest": blueprint_digest,
                    "parameters": dict(parameters),
                    "idempotency_key": idempotency_key,
                    "plan_digest": plan_digest,
                    "parent_execution_id": parent_execution_id,
                    "schedule_id": schedule_id,
                },
            )
            holdings = [
                _acquire_lock(conn, key, execution_id, places, requested_by, now)
                for key, places in locks
            ]
            if fire is not None:
                _record_fire(conn, fire, FireOutcome.STARTED, execution_id, _SCHEDULER, now)
                if fire.queue:
                    key = f"schedule:{fire.schedule_id}"
                    _acquire_lock(conn, key, execution_id, 1, _SCHEDULER, now)
            queued = [holding.key for holding in holdings if holding.status == LockStatus.QUEUED]
            if queued and refuse_queued:  # a refused fire is still recorded: it was decided
                _release_locks(conn, execution_id, requested_by, now)
                error = {
                    "type": "LockConflict",
                    "message": f"locks {', '.join(queued)} are held by other executions",
                }
                refusal = ExecutionTransition(
                    execution_id=execution_id,
                    trigger=Trigger.FAIL,
                    expected=ExecutionStatus.PENDING,
                    actor=requested_by,
                    data={"error": error},
                    changes={"error": error},
                )
                [(row, _event)] = self._write(conn, [refusal])
                assert row is not None
                return _record(Execution, row), True
            if locks or fire is not None:
                row = _get_row(conn, executions, "execution", execution_id)
            return _record(Execution, row), True

    def get_execution(self, execution_id: str) -> Execution:
        with self._transaction(read_only=True) as conn:
            return _record(Execution, _get_row(conn, executions, "execution", execution_id))

    def list_executions(
        self,
        *,
        workflow_name: str | None = None,
        status: ExecutionStatus | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Execution]:
        """Executions, newest first, a page at a time (keyset pagination: stable under inserts)."""
        _check_limit(limit)
        query = sa.select(executions)
        if workflow_name is not None:
            query = query.where(executions.c.workflow_name == workflow_name)
        if status is not None:
            query = query.where(executions.c.status == status)
        if cursor is not None:
            created_at, last_id = _decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    executions.c.created_at < created_at,
                    sa.and_(executions.c.created_at == created_at, executions.c.id < last_id),
                )
            )
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc())
        with self._transaction(read_only=True) as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
        items = [_record(Execution, row) for row in rows[:limit]]
        next_cursor = _encode_cursor(items[-1]) if len(rows) > limit else None
        return Page(items, next_cursor)

    def transition_execution(
        self,
        execution_id: str,
        trigger: Trigger,
        *,
        expected: ExecutionStatus,
        actor: str,
        data: JSONObject | None = None,
        lease_owner: str | None = None,
        **changes: Unpack[ExecutionChanges],
    ) -> tuple[Execution, Event]:
        """Apply ``trigger`` if the execution is still ``expected``; append its event.

        ``started_at`` is stamped on the first start and ``finished_at`` on reaching a terminal
        status (and cleared on leaving one). With ``lease_owner``, only while that worker holds the
        execution's lease. :class:`InvalidTransitionError` if the table refuses the transition,
        :class:`ConflictError` if the execution is no longer ``expected`` or the lease is lost.
        """
        change = ExecutionTransition(
            execution_id=execution_id,
            trigger=trigger,
            expected=expected,
            actor=actor,
            data=data,
            lease_owner=lease_owner,
            changes=changes,
        )
        with self._transaction() as conn:
            [(row, event)] = self._write(conn, [change])
            assert row is not None and event is not None
            return _record(Execution, row), event

    def execution_status(self, execution_id: str) -> tuple[Execution, list[StepRun]]:
        """An execution and its step runs (in :meth:`list_step_runs` order), read together."""
        with self._transaction(read_only=True, snapshot=True) as conn:
            execution = _get_row(conn, executions, "execution", execution_id)
            rows = conn.execute(_step_runs_of(execution_id)).all()
        return _record(Execution, execution), [_record(StepRun, row) for row in rows]

    # -- leases --------------------------------------------------------------------------------

    def claim_executions(
        self,
        owner: str,
        *,
        lease_seconds: float,
        limit: int,
        statuses: Collection[ExecutionStatus] = CLAIMABLE,
    ) -> list[Execution]:
        """Take the leases of up to ``limit`` executions that need a worker, oldest first.

        Claimable: in one of ``statuses``, lease free (no owner, no expiry, or expired at or
        before now), awake (``wake_at`` unset or at or before now), and, when pending, not queued
        for a concurrency lock (it becomes claimable when promoted). Two workers never claim the
        same execution: PostgreSQL skips rows another claim has locked (``SKIP LOCKED``); SQLite
        runs one writer at a time. Claiming changes no status and appends no event.
        """
        _check_lease(lease_seconds)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        now = self._clock()
        params = {
            "b_now": now,
            "b_limit": limit,
            "v_owner": owner,
            "v_expires": now + timedelta(seconds=lease_seconds),
        }
        with self._transaction() as conn:
            shown = tuple(statuses)
            rows = _run(conn, ("claim", shown), lambda: _claim(shown), params)
        claimed = [_record(Execution, row) for row in rows]
        return sorted(claimed, key=lambda execution: (execution.created_at, execution.id))

    def renew_lease(self, execution_id: str, owner: str, *, lease_seconds: float) -> Execution:
        """Extend ``owner``'s lease to now + ``lease_seconds``; returns the execution as it is now.

        The record shows changes made by others meanwhile (a cancel, a pause): act on its status.
        An expired lease that nobody claimed yet is still ``owner``'s. :class:`ConflictError` when
        the lease is someone else's or was released: stop driving the execution.
        """
        _check_lease(lease_seconds)
        now = self._clock()
        with self._transaction() as conn:
            return _record(
                Execution,
                _update_leased(
                    conn,
                    execution_id,
                    owner,
                    "renew the lease of",
                    {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now},
                ),
            )

    def release_lease(
        self,
        execution_id: str,
        owner: str,
        *,
        wake_at: datetime | None = None,
        changes: Sequence[Change] = (),
        awaited: Collection[str] = (),
    ) -> Execution:
        """Give up ``owner``'s lease; no worker claims the execution again before ``wake_at``.

        ``wake_at`` ``None`` makes it claimable at once. ``changes`` are written first, in the
        same transaction (as :meth:`apply` writes them): a worker's last transitions and the
        release cost one commit. ``awaited`` are the approvals the worker parks the execution
        for: when one of them was decided since the worker read it, the decision's wake-up
        (:meth:`wake_execution`) came while the lease was held and must not be overwritten, so
        the execution stays claimable now. :class:`ConflictError` when the lease is no longer
        ``owner``'s or a change is refused; then nothing is written.
        """
        with self._transaction() as conn:
            if changes:
                self._write(conn, changes, events_read=False)
            if wake_at is not None and awaited and _any_decided(conn, awaited):
                wake_at = None
            return _record(
                Execution,
                _update_leased(
                    conn,
                    execution_id,
                    owner,
                    "release the lease of",
                    {
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "wake_at": wake_at,
                        "updated_at": self._clock(),
                    },
                ),
            )

    def next_wake_at(self, *, statuses: Collection[ExecutionStatus] = CLAIMABLE) -> datetime | None:
        """When :meth:`claim_executions` next finds something: a worker may sleep until then.

        The earliest instant at which an execution in ``statuses`` is both awake and free of a
        lease (a lease expiring counts: its worker may have died); now when one is claimable
        already; ``None`` when none will be without a new write (which the writer signals).
        Pending executions queued for a lock are left out, like in the claim.
        """
        now = self._clock()
        with self._transaction(read_only=True) as conn:
            shown = tuple(statuses)
            [(candidates, waiting, earliest)] = _run(
                conn, ("next wake", shown), lambda: _next_wake(shown), {}
            )
        if candidates == 0:
            return None
        if waiting < candidates:  # one is neither asleep nor leased
            return now
        assert isinstance(earliest, datetime)
        return max(earliest, now)

    # -- step runs -----------------------------------------------------------------------------

    def create_step_runs(
        self, execution_id: str, runs: Sequence[NewStepRun], *, lease_owner: str | None = None
    ) -> list[StepRun]:
        """Create pending step runs; runs that exist already are returned as they are.

        Creating the same runs again (a worker replaying after a crash) is harmless. With
        ``lease_owner``, only while that worker holds the execution's lease.
        """
        change = NewStepRuns(execution_id=execution_id, runs=tuple(runs), lease_owner=lease_owner)
        with self._transaction() as conn:
            self._write(conn, [change])
            rows = conn.execute(
                sa.select(step_runs).where(step_runs.c.execution_id == execution_id)
            ).all()
        by_key = {(row.step_id, row.item_key): row for row in rows}
        return [_record(StepRun, by_key[run.step_id, run.item_key]) for run in runs]

    def get_step_run(self, step_run_id: str) -> StepRun:
        with self._transaction(read_only=True) as conn:
            return _record(StepRun, _get_row(conn, step_runs, "step run", step_run_id))

    def list_step_runs(self, execution_id: str) -> list[StepRun]:
        """The step runs of an execution, by creation time, then step and item."""
        with self._transaction(read_only=True) as conn:
            _get_row(conn, executions, "execution", execution_id)
            rows = conn.execute(_step_runs_of(execution_id)).all()
        return [_record(StepRun, row) for row in rows]

    def transition_step_run(
        self,
        step_run_id: str,
        trigger: Trigger,
        *,
        expected: StepRunStatus,
        actor: str,
        data: JSONObject | None = None,
        lease_owner: str | None = None,
        **changes: Unpack[StepRunChanges],
    ) -> tuple[StepRun, Event]:
        """Apply ``trigger`` if the step run is still ``expected``; append its event.

        Each start counts an attempt and clears ``next_attempt_at``; ``started_at`` is the first
        start, ``finished_at`` is stamped on reaching a terminal status. A rerun makes the run
        pending afresh: no attempts, no times, outputs or error. With ``lease_owner``, only while
        that worker holds the lease of the step run's execution.
        """
        change = StepRunTransition(
            step_run_id=step_run_id,
            trigger=trigger,
            expected=expected,
            actor=actor,
            data=data,
            lease_owner=lease_owner,
            changes=changes,
        )
        with self._transaction() as conn:
            [(row, event)] = self._write(conn, [change])
            assert row is not None and event is not None
            return _record(StepRun, row), event

    def rerun_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        actor: str,
        locks: Sequence[tuple[str, int]] = (),
    ) -> tuple[Execution, list[StepRun]]:
        """An operator's ``retry_step``: make the step's ended-badly runs pending again.

        Runs that failed, timed out, were interrupted or cancelled start afresh (attempts count
        from 1 again; the event keeps the status and attempts they had). A failed execution runs
        again with them (``execution.rerun``, after their events), in the same transaction, and
        takes its ``locks`` (keys and places) back there: it gave them up when it failed, and if
        another execution holds one now, :class:`ConflictError` and nothing is written. An
        execution that is still active just picks them up. :class:`NotFoundError` for a step
        without runs, :class:`ConflictError` when none of its runs can be rerun,
        :class:`InvalidTransitionError` when the execution cannot run again (succeeded, cancelled,
        rolling back or rolled back).
        """
        rerunnable = {
            status for status, trigger in STEP_RUN_MACHINE.transitions if trigger is Trigger.RERUN
        }
        with self._transaction() as conn:
            execution = _get_row(conn, executions, "execution", execution_id)
            runs = conn.execute(_step_runs_of(execution_id)).all()
            mine = [run for run in runs if run.step_id == step_id]
            if not mine:
                raise NotFoundError(
                    f"step of execution {execution_id}", step_id, {run.step_id for run in runs}
                )
            again = [run for run in mine if run.status in rerunnable]
            if not again:
                statuses = ", ".join(sorted({str(run.status) for run in mine}))
                raise ConflictError(
                    f"step {step_id} of execution {execution_id} has no run to rerun (its runs "
                    f"are {statuses}); only failed, timed-out, interrupted or cancelled runs can "
                    "be rerun: read the execution's status to see what it is doing"
                )
            changes: list[Change] = [
                StepRunTransition(
                    step_run_id=run.id,
                    trigger=Trigger.RERUN,
                    expected=run.status,
                    actor=actor,
                    data={"previous_status": run.status, "previous_attempts": run.attempt},
                )
                for run in again
            ]
            if execution.status not in _ACTIVE:
                # Last, so that the row it returns has the execution's final last_seq.
                changes.append(
                    ExecutionTransition(
                        execution_id=execution_id,
                        trigger=Trigger.RERUN,
                        expected=execution.status,
                        actor=actor,
                        data={"step_id": step_id},
                        changes={"wake_at": None},
                    )
                )
            rows = [row for row, _event in self._write(conn, changes) if row is not None]
            runs_again = len(rows) > len(again)
            if runs_again:
                execution = rows.pop()
            if runs_again and locks:
                _take_back_locks(conn, execution_id, locks, actor, self._clock())
            if not runs_again or locks:  # its last_seq moved with the later events
                execution = _get_row(conn, executions, "execution", execution_id)
        return _record(Execution, execution), [_record(StepRun, row) for row in rows]

    # -- events --------------------------------------------------------------------------------

    def append_event(
        self,
        execution_id: str,
        event_type: EventType,
        *,
        actor: str,
        data: JSONObject | None = None,
        step_id: str | None = None,
        target: str | None = None,
        attempt: int | None = None,
        lease_owner: str | None = None,
        **changes: Unpack[ExecutionChanges],
    ) -> Event:
        """Append an event that changes no status (``step.progressed``, ``lock.*``).

        ``changes`` update the execution in the same statement that numbers the event, for
        instance ``current_sub_task`` and ``progress`` with ``step.progressed``. With
        ``lease_owner``, only while that worker holds the execution's lease.
        """
        change = NewEvent(
            execution_id=execution_id,
            type=event_type,
            actor=actor,
            data=data,
            step_id=step_id,
            target=target,
            attempt=attempt,
            lease_owner=lease_owner,
            changes=changes,
        )
        with self._transaction() as conn:
            [(_row, event)] = self._write(conn, [change])
            assert event is not None
            return event

    def apply(self, changes: Sequence[Change]) -> list[Event]:
        """Write ``changes`` in one transaction, in order; their events, in order.

        The group commit of a worker driving many executions: each transition is still a
        compare-and-set with its event, and each execution's events are still numbered without
        gaps, in the order of ``changes``. All or nothing: when one change is refused
        (:class:`InvalidTransitionError` before anything is written, :class:`ConflictError` or
        :class:`NotFoundError` on the way), nothing of the batch is written and the error names
        the change by its position. :class:`NewStepRuns` appends no event.
        """
        if not changes:
            return []
        with self._transaction() as conn:
            written = self._write(conn, changes)
        return [event for _row, event in written if event is not None]

    def write(self, changes: Sequence[Change]) -> list[Execution | StepRun | Approval]:
        """Write ``changes`` in one transaction, as :meth:`apply` does; the records written.

        In order: each transition's record as it is after the batch's own change, then the runs
        of each :class:`NewStepRuns` (as they are now, created here or before) that no transition
        of the batch returned already. This is how a worker learns the stamps (attempts, times)
        of the transitions it wrote together.
        """
        if not changes:
            return []
        with self._transaction() as conn:
            written = self._write(conn, changes, events_read=False)
            records: list[Execution | StepRun | Approval] = []
            for change, (row, _event) in zip(changes, written, strict=True):
                if row is None:  # not a transition
                    continue
                if isinstance(change, ExecutionTransition):
                    records.append(_record(Execution, row))
                elif isinstance(change, StepRunTransition):
                    records.append(_record(StepRun, row))
                elif isinstance(change, ApprovalTransition):
                    records += _approvals_with_decisions(conn, [row])
            returned = {record.id for record in records}
            ids = [
                run_id
                for change in changes
                if isinstance(change, NewStepRuns)
                for run in change.runs
                if (run_id := step_run_id(change.execution_id, run.step_id, run.item_key))
                not in returned
            ]
            if ids:
                query = ("step run by id",)
                found = _run(conn, query, _step_run_by_id, *({"b_id": i} for i in ids))
                records += [_record(StepRun, row) for row in found]
        return records

    def list_events(
        self, execution_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Event]:
        """The execution's events with ``seq > after_seq``, in order."""
        _check_limit(limit)
        with self._transaction(read_only=True) as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.execution_id == execution_id, events.c.seq > after_seq)
                .order_by(events.c.seq)
                .limit(limit)
            ).all()
            if not rows:
                _get_row(conn, executions, "execution", execution_id)
        return [_record(Event, row) for row in rows]

    # -- approvals -----------------------------------------------------------------------------

    def create_approval(
        self,
        *,
        execution_id: str,
        step_id: str,
        digest: str,
        approvers: Approvers,
        gate: str = "approval",
        quorum: int,
        allow_self_approval: bool,
        requested_by: str,
        on_timeout: OnTimeout,
        actor: str,
        deadline_at: datetime | None = None,
        escalate_to: Approvers | None = None,
        response_schema: JSONObject | None = None,
        previous_approval_id: str | None = None,
    ) -> tuple[Approval, Event]:
        """Open a pending approval for a step, with its ``approval.requested`` event."""
        now = self._clock()
        approval_id = _new_id("apr")
        with self._transaction() as conn:
            seq = _next_seq(conn, execution_id, now, {})
            row = conn.execute(
                sa.insert(approvals)
                .values(
                    id=approval_id,
                    execution_id=execution_id,
                    step_id=step_id,
                    gate=gate,
                    status=ApprovalStatus.PENDING,
                    digest=digest,
                    approvers=_approvers_document(approvers),
                    quorum=quorum,
                    allow_self_approval=allow_self_approval,
                    response_schema=None if response_schema is None else dict(response_schema),
                    deadline_at=deadline_at,
                    on_timeout=on_timeout,
                    escalate_to=None if escalate_to is None else _approvers_document(escalate_to),
                    requested_by=requested_by,
                    previous_approval_id=previous_approval_id,
                    created_at=now,
                )
                .returning(*approvals.c)
            ).one()
            event = _insert_event(
                conn,
                execution_id=execution_id,
                seq=seq,
                event_type=EventType.APPROVAL_REQUESTED,
                actor=actor,
                occurred_at=now,
                step_id=step_id,
                data={
                    "approval_id": approval_id,
                    "gate": gate,
                    "approvers": _approvers_document(approvers),
                    "quorum": quorum,
                    "deadline_at": None if deadline_at is None else deadline_at.isoformat(),
                    "previous_approval_id": previous_approval_id,
                },
            )
            return _approvals_with_decisions(conn, [row])[0], event

    def get_approval(self, approval_id: str) -> Approval:
        """An approval with its decisions."""
        with self._transaction(read_only=True) as conn:
            row = _get_row(conn, approvals, "approval", approval_id)
            return _approvals_with_decisions(conn, [row])[0]

    def list_approvals(
        self, *, status: ApprovalStatus | None = None, execution_id: str | None = None
    ) -> list[Approval]:
        """Approvals with their decisions, oldest first."""
        query = sa.select(approvals).order_by(approvals.c.created_at, approvals.c.id)
        if status is not None:
            query = query.where(approvals.c.status == status)
        if execution_id is not None:
            query = query.where(approvals.c.execution_id == execution_id)
        with self._transaction(read_only=True) as conn:
            return _approvals_with_decisions(conn, conn.execute(query).all())

    def add_decision(
        self,
        approval_id: str,
        *,
        principal: str,
        decision: ApprovalDecisionKind,
        channel: Channel,
        comment: str | None = None,
        response: JSONObject | None = None,
    ) -> ApprovalDecision:
        """Record one principal's decision on a pending approval, with its event.

        Decisions are append-only: the same principal making the same decision again returns the
        first record. A decided approval takes no more decisions (:class:`ConflictError`).
        Whether the principal may decide, and whether the quorum is reached, is the caller's
        business; decisions and transitions of one execution's approvals take turns.
        """
        now = self._clock()
        with self._transaction() as conn:
            # Lock the execution row first, as every writer of its events does: the approval's
            # transitions take it too, so the status read next stays true until commit.
            locked = conn.execute(
                sa.select(executions.c.id)
                .where(
                    executions.c.id
                    == sa.select(approvals.c.execution_id)
                    .where(approvals.c.id == approval_id)
                    .scalar_subquery()
                )
                .with_for_update()
            ).scalar_one_or_none()
            if locked is None:
                raise NotFoundError("approval", approval_id)
            approval = _get_row(conn, approvals, "approval", approval_id)
            existing = conn.execute(
                sa.select(approval_decisions).where(
                    approval_decisions.c.approval_id == approval_id,
                    approval_decisions.c.principal == principal,
                    approval_decisions.c.decision == decision,
                )
            ).one_or_none()
            if existing is not None:
                return _record(ApprovalDecision, existing)
            if approval.status is not ApprovalStatus.PENDING:
                raise ConflictError(
                    f"approval {approval_id} is already {approval.status} and takes no more "
                    "decisions; list the pending approvals to find the current one"
                )
            seq = _next_seq(conn, approval.execution_id, now, {})
            row = conn.execute(
                sa.insert(approval_decisions)
                .values(
                    approval_id=approval_id,
                    principal=principal,
                    decision=decision,
                    comment=comment,
                    channel=channel,
                    response=None if response is None else dict(response),
                    decided_at=now,
                )
                .returning(*approval_decisions.c)
            ).one()
            _insert_event(
                conn,
                execution_id=approval.execution_id,
                seq=seq,
                event_type=EventType.APPROVAL_DECISION_RECORDED,
                actor=principal,
                occurred_at=now,
                step_id=approval.step_id,
                data={
                    "approval_id": approval_id,
                    "decision": decision,
                    "channel": channel,
                    "comment": comment,
                },
            )
            return _record(ApprovalDecision, row)

    def transition_approval(
        self,
        approval_id: str,
        trigger: Trigger,
        *,
        expected: ApprovalStatus,
        actor: str,
        data: JSONObject | None = None,
        lease_owner: str | None = None,
    ) -> tuple[Approval, Event]:
        """Decide an approval (grant, reject, expire, ...) if it is still ``expected``."""
        change = ApprovalTransition(
            approval_id=approval_id,
            trigger=trigger,
            expected=expected,
            actor=actor,
            data=data,
            lease_owner=lease_owner,
        )
        with self._transaction() as conn:
            [(row, event)] = self._write(conn, [change])
            assert row is not None and event is not None
            return _approvals_with_decisions(conn, [row])[0], event

    def wake_execution(self, execution_id: str) -> None:
        """Make a parked execution claimable now (a decision was made); no status change."""
        with self._transaction() as conn:
            conn.execute(
                sa.update(executions).where(executions.c.id == execution_id).values(wake_at=None)
            )

    def cancel_open_approvals(self, execution_id: str, *, actor: str) -> list[Approval]:
        """Cancel the pending approvals of an ended execution, each with its event."""
        with self._transaction() as conn:
            pending = conn.execute(
                sa.select(approvals.c.id).where(
                    approvals.c.execution_id == execution_id,
                    approvals.c.status == ApprovalStatus.PENDING,
                )
            ).scalars()
            changes = [
                ApprovalTransition(
                    approval_id=approval_id,
                    trigger=Trigger.CANCEL,
                    expected=ApprovalStatus.PENDING,
                    actor=actor,
                    data={"reason": "its execution ended"},
                )
                for approval_id in pending
            ]
            if not changes:
                return []
            rows = [row for row, _ in self._write(conn, changes) if row is not None]
            return _approvals_with_decisions(conn, rows)

    # -- schedules -----------------------------------------------------------------------------

    def create_schedule(
        self,
        *,
        workflow_name: str,
        cron: str,
        timezone: str,
        parameters: JSONObject,
        owner: str,
        overlap_policy: OverlapPolicy,
        misfire_policy: MisfirePolicy,
        catchup_window_seconds: int,
        next_fire_at: datetime | None,
        enabled: bool = True,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        misfire_grace_seconds: int = 60,
        idempotency_key: str | None = None,
    ) -> Schedule:
        """Save a schedule with its ``schedule.created`` event; the caller computes the times.

        With an ``idempotency_key`` already used by ``owner``, nothing is saved and the schedule
        saved the first time is returned (compare it with the request: :meth:`find_schedule`).
        """
        now = self._clock()
        values = {
            "workflow_name": workflow_name,
            "cron": cron,
            "timezone": timezone,
            "parameters": dict(parameters),
            "owner": owner,
            "overlap_policy": overlap_policy,
            "misfire_policy": misfire_policy,
            "catchup_window_seconds": catchup_window_seconds,
            "next_fire_at": next_fire_at,
            "enabled": enabled,
            "start_at": start_at,
            "end_at": end_at,
            "misfire_grace_seconds": misfire_grace_seconds,
            "idempotency_key": idempotency_key,
        }
        with self._transaction() as conn:
            row = conn.execute(
                _insert(conn, schedules)
                .values(id=_new_id("sch"), created_at=now, updated_at=now, **values)
                .on_conflict_do_nothing(index_elements=["owner", "idempotency_key"])
                .returning(*schedules.c)
            ).one_or_none()
            if row is None:
                row = conn.execute(
                    sa.select(schedules).where(
                        schedules.c.owner == owner, schedules.c.idempotency_key == idempotency_key
                    )
                ).one()
                return _record(Schedule, row)
            _insert_schedule_event(conn, row.id, EventType.SCHEDULE_CREATED, owner, now, values)
            return _record(Schedule, row)

    def find_schedule(self, owner: str, idempotency_key: str) -> Schedule | None:
        """The schedule ``owner`` created with ``idempotency_key``, deleted or not, if any."""
        with self._transaction(read_only=True) as conn:
            row = conn.execute(
                sa.select(schedules).where(
                    schedules.c.owner == owner, schedules.c.idempotency_key == idempotency_key
                )
            ).one_or_none()
            return None if row is None else _record(Schedule, row)

    def due_schedules(self, now: datetime, *, limit: int = 100) -> list[Schedule]:
        """Enabled schedules whose next fire is at or before ``now``, most overdue first.

        Served by ``ix_schedules_due``: the scheduler never reads the schedules that are not due.
        """
        query = (
            sa.select(schedules)
            .where(
                schedules.c.enabled.is_(True),
                schedules.c.next_fire_at <= now,
                schedules.c.deleted_at.is_(None),
            )
            .order_by(schedules.c.next_fire_at, schedules.c.id)
            .limit(limit)
        )
        with self._transaction(read_only=True) as conn:
            return [_record(Schedule, row) for row in conn.execute(query).all()]

    def next_schedule_fire_at(self) -> datetime | None:
        """The earliest next fire of any enabled schedule: when the scheduler must look again."""
        query = sa.select(sa.func.min(schedules.c.next_fire_at)).where(
            schedules.c.enabled.is_(True), schedules.c.deleted_at.is_(None)
        )
        with self._transaction(read_only=True) as conn:
            found = conn.execute(query).scalar_one_or_none()
        if found is None:
            return None
        # min() bypasses the column type: SQLite hands back naive UTC text.
        found = datetime.fromisoformat(found) if isinstance(found, str) else found
        return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)

    def active_schedule_executions(self, schedule_id: str) -> list[Execution]:
        """The executions a schedule started that have not ended, oldest first (overlap)."""
        query = (
            sa.select(executions)
            .where(
                executions.c.schedule_id == schedule_id,
                executions.c.status.not_in(EXECUTION_TERMINAL),
            )
            .order_by(executions.c.created_at, executions.c.id)
        )
        with self._transaction(read_only=True) as conn:
            return [_record(Execution, row) for row in conn.execute(query).all()]

    def get_schedule(self, schedule_id: str) -> Schedule:
        """A schedule that exists and is not deleted."""
        with self._transaction(read_only=True) as conn:
            return _record(Schedule, _live_schedule(conn, schedule_id))

    def list_schedules(self, *, workflow_name: str | None = None) -> list[Schedule]:
        """Schedules that are not deleted, oldest first."""
        query = (
            sa.select(schedules)
            .where(schedules.c.deleted_at.is_(None))
            .order_by(schedules.c.created_at, schedules.c.id)
        )
        if workflow_name is not None:
            query = query.where(schedules.c.workflow_name == workflow_name)
        with self._transaction(read_only=True) as conn:
            return [_record(Schedule, row) for row in conn.execute(query).all()]

    def update_schedule(
        self, schedule_id: str, *, actor: str, **changes: Unpack[ScheduleChanges]
    ) -> Schedule:
        """Change a schedule; the ``schedule.updated`` event lists the new values."""
        now = self._clock()
        with self._transaction() as conn:
            _live_schedule(conn, schedule_id)
            row = conn.execute(
                sa.update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(updated_at=now, **changes)
                .returning(*schedules.c)
            ).one()
            _insert_schedule_event(
                conn, schedule_id, EventType.SCHEDULE_UPDATED, actor, now, dict(changes)
            )
            return _record(Schedule, row)

    def delete_schedule(self, schedule_id: str, *, actor: str) -> Schedule:
        """Delete a schedule softly: it never fires again, and its history keeps pointing at it."""
        now = self._clock()
        with self._transaction() as conn:
            _live_schedule(conn, schedule_id)
            row = conn.execute(
                sa.update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(deleted_at=now, enabled=False, next_fire_at=None, updated_at=now)
                .returning(*schedules.c)
            ).one()
            _insert_schedule_event(conn, schedule_id, EventType.SCHEDULE_DELETED, actor, now, {})
            return _record(Schedule, row)

    def record_fire(
        self,
        schedule_id: str,
        fire_at: datetime,
        outcome: FireOutcome,
        *,
        next_fire_at: datetime | None,
        execution_id: str | None = None,
        actor: str = "scheduler",
        data: JSONObject | None = None,
    ) -> ScheduleFire:
        """Record that ``fire_at`` was handled, and move the schedule on to ``next_fire_at``.

        A fire time is recorded once, and only while it is the schedule's ``next_fire_at`` and
        the schedule is enabled: otherwise this is a :class:`ConflictError` (another scheduler
        handled it, or someone changed the schedule meanwhile) and nothing is written. ``data``
        goes into the event. Fires that start an execution are recorded by
        :meth:`create_execution` (``fire=``), in the transaction that creates it.
        """
        now = self._clock()
        fire = NewFire(
            schedule_id=schedule_id, fire_at=fire_at, next_fire_at=next_fire_at, data=data or {}
        )
        with self._transaction() as conn:
            _live_schedule(conn, schedule_id)
            return _record_fire(conn, fire, outcome, execution_id, actor, now)

    # -- concurrency locks ---------------------------------------------------------------------

    def acquire_lock(
        self, key: str, execution_id: str, *, max_concurrent: int = 1, actor: str
    ) -> LockHolding:
        """Hold one of ``max_concurrent`` places on ``key``, or queue for one.

        The queue is first come, first served: a newcomer queues behind waiting executions even
        when a place is free. Asking again returns the execution's current place unchanged. An
        execution that has ended is refused (:class:`ConflictError`): its locks were released.
        """
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent of lock {key!r} must be at least 1")
        now = self._clock()
        with self._transaction() as conn:
            return _acquire_lock(conn, key, execution_id, max_concurrent, actor, now)

    def release_locks(self, execution_id: str, *, actor: str) -> list[LockHolding]:
        """Give up every lock place (held or queued) of an execution; returns the promotions.

        Each freed place goes to the longest-waiting execution of that key, whose
        ``lock.acquired`` event is appended here too, so the caller only has to wake them.
        """
        now = self._clock()
        with self._transaction() as conn:
            return _release_locks(conn, execution_id, actor, now)

    # -- read models ---------------------------------------------------------------------------

    def workflow_metrics(
        self, workflow_name: str | None = None, since: datetime | None = None
    ) -> list[WorkflowMetrics]:
        """How each workflow's executions created at or after ``since`` went, by workflow name.

        Counts are grouped in SQL; percentiles are computed here from the fetched durations, the
        same way on both databases. A named workflow without executions gets a record of zeros.
        """
        scope: list[sa.ColumnElement[bool]] = []
        if workflow_name is not None:
            scope.append(executions.c.workflow_name == workflow_name)
        if since is not None:
            scope.append(executions.c.created_at >= since)
        name = executions.c.workflow_name
        with self._transaction(read_only=True, snapshot=True) as conn:
            counts = conn.execute(
                sa.select(name, executions.c.status, sa.func.count())
                .where(*scope)
                .group_by(name, executions.c.status)
            ).all()
            durations = conn.execute(
                sa.select(name, executions.c.started_at, executions.c.finished_at).where(
                    *scope,
                    executions.c.status.in_(EXECUTION_TERMINAL),
                    executions.c.started_at.is_not(None),
                    executions.c.finished_at.is_not(None),
                )
            ).all()
            waits = conn.execute(
                sa.select(name, approvals.c.created_at, approvals.c.decided_at)
                .join_from(approvals, executions, approvals.c.execution_id == executions.c.id)
                .where(
                    *scope,
                    approvals.c.status.in_([ApprovalStatus.GRANTED, ApprovalStatus.REJECTED]),
                    approvals.c.decided_at.is_not(None),
                )
            ).all()
        by_status: dict[str, dict[ExecutionStatus, int]] = defaultdict(dict)
        for workflow, status, count in counts:
            by_status[workflow][status] = count
        if workflow_name is not None:
            by_status.setdefault(workflow_name, {})
        seconds: dict[str, list[float]] = defaultdict(list)
        for workflow, started_at, finished_at in durations:
            seconds[workflow].append((finished_at - started_at).total_seconds())
        waited: dict[str, list[float]] = defaultdict(list)
        for workflow, created_at, decided_at in waits:
            waited[workflow].append((decided_at - created_at).total_seconds())
        return [
            _metrics(workflow, by_status[workflow], seconds[workflow], waited[workflow])
            for workflow in sorted(by_status)
        ]

    # -- shared machinery ----------------------------------------------------------------------

    @contextmanager
    def _transaction(
        self, *, read_only: bool = False, snapshot: bool = False
    ) -> Iterator[sa.Connection]:
        """One transaction; driver failures become a :class:`StoreError` saying what to check.

        Read-only transactions skip SQLite's write lock (``BEGIN DEFERRED``). ``snapshot`` makes
        every statement see the same committed state: SQLite's transactions always do; on
        PostgreSQL it takes ``REPEATABLE READ`` instead of one snapshot per statement.
        """
        try:
            kept = self._kept.get()
            with self._engine.connect() if kept is None else nullcontext(kept) as conn:
                if conn.get_execution_options().get(READ_ONLY, False) != read_only:
                    conn.execution_options(**{READ_ONLY: read_only})
                if snapshot and conn.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise store_error(exc, self._engine) from exc

    def _write(
        self, conn: sa.Connection, changes: Sequence[Change], *, events_read: bool = True
    ) -> list[tuple[sa.Row[Any] | None, Event | None]]:
        """Write ``changes`` inside ``conn``'s transaction: each one's row and event, in order.

        Every transition is checked against its table before anything is written. The events
        are inserted together at the end (one pipeline on PostgreSQL). Without
        ``events_read`` they are not read back (their records are ``None``): the worker's
        batches keep only the rows, and reading every event back cost a tenth of a batch.
        """
        plans = [_plan(change) for change in changes]
        now = self._clock()
        if len(changes) > 1:
            _lock_executions(conn, changes)
        written: list[tuple[sa.Row[Any] | None, dict[str, Any] | None]] = []
        leased: set[tuple[str, str]] = set()
        for position, (change, plan) in enumerate(zip(changes, plans, strict=True), start=1):
            try:
                if plan is not None:
                    row, event = _transition(conn, plan, now)
                    written.append((row, event))
                    if plan.owner is not None:
                        leased.add((event["execution_id"], plan.owner))
                else:
                    written.append((None, _write_other(conn, change, now, leased)))
            except ConflictError as exc:
                if len(changes) == 1:
                    raise
                raise ConflictError(
                    f"change {position} of {len(changes)} ({_describe(change)}) was refused, so "
                    f"nothing of the batch was written: {exc}"
                ) from exc
        values = [event for _row, event in written if event is not None]
        if not events_read:
            if values:
                _insert_rows(conn, events, values)
            return [(row, None) for row, _event in written]
        inserted = iter(_insert_events(conn, values))
        return [(row, None if event is None else next(inserted)) for row, event in written]


# -- helpers: one statement or one conversion each ----------------------------------------------


def _plan(change: Change) -> _Plan | None:
    """The checked plan of a transition (:class:`InvalidTransitionError` if the table refuses
    it); ``None`` for a change that is not a transition."""
    if isinstance(change, ExecutionTransition):
        return _checked(_EXECUTION, change.execution_id, change.expected, change, change.changes)
    if isinstance(change, StepRunTransition):
        return _checked(_STEP_RUN, change.step_run_id, change.expected, change, change.changes)
    if isinstance(change, ApprovalTransition):
        return _checked(_APPROVAL, change.approval_id, change.expected, change, {})
    return None


def _checked(
    kind: _Kind[StatusT],
    entity_id: str,
    expected: StatusT,
    change: ExecutionTransition | StepRunTransition | ApprovalTransition,
    changes: Mapping[str, Any],
) -> _Plan:
    new = next_status(kind.machine, expected, change.trigger, entity_id=entity_id)
    return _Plan(
        kind,
        entity_id,
        change.trigger,
        expected,
        new,
        change.actor,
        change.data or {},
        change.lease_owner,
        changes,
    )


def _transition(
    conn: sa.Connection, plan: _Plan, now: datetime
) -> tuple[sa.Row[Any], dict[str, Any]]:
    """The compare-and-set of a status (guarded by the lease when ``plan.owner`` is set), and
    the values of its event."""
    kind, table = plan.kind, plan.kind.table
    keys = tuple(sorted(plan.changes))
    # For an execution, one statement: the guard, the compare-and-set and the event's seq
    # (last_seq + 1). Any other row numbers the event first, through its execution's row (an
    # execution row is always locked before its children), which also checks the guard.
    guarded = table is executions and plan.owner is not None
    shape = ("cas", table.name, plan.new, plan.trigger, keys, guarded)

    def cas() -> sa.Update:
        return _compare_and_set(kind, plan.new, plan.trigger, keys, guarded)

    params = {f"v_{key}": value for key, value in plan.changes.items()}
    params.update(b_id=plan.entity_id, b_expected=plan.expected, b_now=now)
    row: sa.Row[Any] | None = None
    if table is executions:
        if guarded:
            params["b_owner"] = plan.owner
        row = _one_or_none(_run(conn, shape, cas, params))
        seq = None if row is None else row.last_seq
    else:
        seq = _take_seq(conn, now, {}, plan.owner, child=(table, plan.entity_id))
        if seq is not None:
            row = _one_or_none(_run(conn, shape, cas, params))
    if row is None:
        raise _refusal(conn, plan)
    event = _event_values(
        seq=seq,
        event_type=kind.events[plan.trigger],
        actor=plan.actor,
        occurred_at=now,
        **kind.subject(row, plan.data),
    )
    return row, event


def _compare_and_set(
    kind: _Kind[Any], new: Any, trigger: Trigger, keys: Sequence[str], guarded: bool
) -> sa.Update:
    """``UPDATE ... WHERE id = :b_id AND status = :b_expected [AND lease_owner = :b_owner]``
    setting ``new``, the stamps, and the caller's ``keys`` (parameters ``v_<key>``)."""
    table = kind.table
    values: dict[str, Any] = {key: sa.bindparam(f"v_{key}") for key in keys}
    values.update(kind.stamps(new, trigger), status=new)
    statement = sa.update(table).where(
        table.c.id == sa.bindparam("b_id"), table.c.status == sa.bindparam("b_expected")
    )
    if guarded:
        statement = statement.where(executions.c.lease_owner == sa.bindparam("b_owner"))
    return statement.values(values).returning(*table.c)


def _refusal(conn: sa.Connection, plan: _Plan) -> OpsgateError:
    """Why a compare-and-set updated nothing: not found, the lease lost, or the status moved."""
    table, entity = plan.kind.table, plan.kind.machine.entity
    query = sa.select(table.c.status, executions.c.id, executions.c.lease_owner)
    if table is not executions:
        query = query.join_from(table, executions, table.c.execution_id == executions.c.id)
    found = conn.execute(query.where(table.c.id == plan.entity_id)).one_or_none()
    if found is None:
        return NotFoundError(entity, plan.entity_id)
    current, execution_id, holder = found
    action = f"{plan.trigger} {entity} {plan.entity_id}"
    if plan.owner is not None and holder != plan.owner:
        return _lease_lost(action, execution_id, plan.owner, holder)
    return ConflictError(
        f"cannot {action}: it is now {current}, not {plan.expected}; read it again and decide "
        "from its current status"
    )


def _lease_lost(action: str, execution_id: str, owner: str, holder: str | None) -> ConflictError:
    now = "nobody holds it now" if holder is None else f"{holder} holds it now"
    return ConflictError(
        f"cannot {action}: {owner} does not hold the lease of execution {execution_id} ({now}); "
        "it was taken over or released, so stop driving the execution and write nothing more"
    )


def _write_other(
    conn: sa.Connection, change: Change, now: datetime, leased: Collection[tuple[str, str]] = ()
) -> dict[str, Any] | None:
    """A change that is not a transition: an event's values, or ``None`` for new step runs.

    ``leased`` are the (execution, owner) pairs whose lease an earlier guarded write of the
    transaction checked, and whose execution row it holds locked until commit.
    """
    if isinstance(change, NewEvent):
        seq = _take_seq(
            conn, now, change.changes, change.lease_owner, execution_id=change.execution_id
        )
        if seq is None:
            action = f"append {change.type}"
            raise _execution_refusal(conn, change.execution_id, change.lease_owner, action)
        return _event_values(
            execution_id=change.execution_id,
            seq=seq,
            event_type=change.type,
            actor=change.actor,
            occurred_at=now,
            data=change.data,
            step_id=change.step_id,
            target=change.target,
            attempt=change.attempt,
        )
    assert isinstance(change, NewStepRuns), f"not a change: {change!r}"
    if (change.execution_id, change.lease_owner) not in leased:
        guarded = change.lease_owner is not None
        params = {"b_id": change.execution_id}
        found = _one_or_none(_run(conn, ("lease of", guarded), lambda: _lease_of(guarded), params))
        if found is None:
            raise NotFoundError("execution", change.execution_id)
        if change.lease_owner is not None and found.lease_owner != change.lease_owner:
            action = f"create step runs of execution {change.execution_id}"
            raise _lease_lost(action, change.execution_id, change.lease_owner, found.lease_owner)
    if change.runs:
        planned = planned_step_runs(change.execution_id, change.runs, now)
        values = [_new_run_values(run) for run in planned]
        unique = ("execution_id", "step_id", "item_key")
        _insert_rows(conn, step_runs, values, unique=unique)
    return None


def _new_run_values(run: StepRun) -> dict[str, Any]:
    """A new run's columns; those it has no value for yet stay SQL NULL (not JSON null)."""
    return {
        "id": run.id,
        "execution_id": run.execution_id,
        "step_id": run.step_id,
        "item_key": run.item_key,
        "item_index": run.item_index,
        "target": run.target,
        "status": run.status,
        "attempt": run.attempt,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def _step_run_by_id() -> sa.Select[Any]:
    return sa.select(step_runs).where(step_runs.c.id == sa.bindparam("b_id"))


def _lease_of(guarded: bool) -> sa.Select[Any]:
    """The lease owner of execution ``:b_id``; when ``guarded``, locked until commit, so the
    lease cannot change hands before the rest of the transaction is written."""
    query = sa.select(executions.c.lease_owner).where(executions.c.id == sa.bindparam("b_id"))
    return query.with_for_update(key_share=True) if guarded else query


def planned_step_runs(
    execution_id: str, runs: Sequence[NewStepRun], now: datetime
) -> list[StepRun]:
    """The records that creating ``runs`` at ``now`` writes (unless they exist already).

    A step run's id follows from its execution, step and item, so a worker knows the ids of the
    runs it creates and can start them in the transaction that creates them.
    """
    return [
        StepRun(
            id=step_run_id(execution_id, run.step_id, run.item_key),
            execution_id=execution_id,
            step_id=run.step_id,
            item_key=run.item_key,
            item_index=run.item_index,
            target=run.target,
            status=StepRunStatus.PENDING,
            attempt=0,
            next_attempt_at=None,
            started_at=None,
            finished_at=None,
            outputs=None,
            error=None,
            created_at=now,
            updated_at=now,
        )
        for run in runs
    ]


def step_run_id(execution_id: str, step_id: str, item_key: str) -> str:
    """The id of a step run: unique as (execution, step, item) is, and known before it is
    written."""
    name = json.dumps([execution_id, step_id, item_key])
    return f"sr_{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}"


def _execution_refusal(
    conn: sa.Connection, execution_id: str, owner: str | None, action: str
) -> OpsgateError:
    """Why a write to an execution's row updated nothing: not found, or the lease lost."""
    found = conn.execute(
        sa.select(executions.c.lease_owner).where(executions.c.id == execution_id)
    ).one_or_none()
    if found is None:
        return NotFoundError("execution", execution_id)
    assert owner is not None, "without a guard, an existing execution is always updated"
    return _lease_lost(f"{action} to execution {execution_id}", execution_id, owner, found[0])


def _describe(change: Change) -> str:
    """A change in a few words, for the error that names it."""
    if isinstance(change, ExecutionTransition):
        return f"{change.trigger} execution {change.execution_id}"
    if isinstance(change, StepRunTransition):
        return f"{change.trigger} step run {change.step_run_id}"
    if isinstance(change, ApprovalTransition):
        return f"{change.trigger} approval {change.approval_id}"
    if isinstance(change, NewEvent):
        return f"{change.type} event of execution {change.execution_id}"
    return f"new step runs of execution {change.execution_id}"


def _lock_executions(conn: sa.Connection, changes: Sequence[Change]) -> None:
    """Lock every execution a batch writes to, in id order, before writing anything.

    Two batches that touch the same executions in different orders would otherwise wait for each
    other on PostgreSQL. SQLite needs nothing: ``BEGIN IMMEDIATE`` runs one writer at a time.
    """
    if conn.dialect.name != "postgresql":
        return
    direct = {
        change.execution_id
        for change in changes
        if isinstance(change, ExecutionTransition | NewEvent | NewStepRuns)
    }
    step_run_ids = [c.step_run_id for c in changes if isinstance(c, StepRunTransition)]
    approval_ids = [c.approval_id for c in changes if isinstance(c, ApprovalTransition)]
    if len(direct) < 2 and not step_run_ids and not approval_ids:
        return
    params = {
        "b_executions": sorted(direct),
        "b_step_runs": step_run_ids,
        "b_approvals": approval_ids,
    }
    _run(conn, "lock executions", _locking, params)


def _locking() -> sa.Select[Any]:
    """PostgreSQL: lock the executions ``:b_executions`` and those of the step runs
    ``:b_step_runs`` and approvals ``:b_approvals`` (arrays: one statement for any count)."""

    def one_of(name: str) -> sa.ColumnElement[Any]:
        return sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.String)))

    wanted = sa.or_(
        executions.c.id == one_of("b_executions"),
        executions.c.id.in_(
            sa.select(step_runs.c.execution_id).where(step_runs.c.id == one_of("b_step_runs"))
        ),
        executions.c.id.in_(
            sa.select(approvals.c.execution_id).where(approvals.c.id == one_of("b_approvals"))
        ),
    )
    return (
        sa.select(executions.c.id)
        .where(wanted)
        .order_by(executions.c.id)
        .with_for_update(key_share=True)
    )


def _any_decided(conn: sa.Connection, approval_ids: Collection[str]) -> bool:
    """Whether any of the approvals is no longer pending."""
    decided = sa.select(approvals.c.id).where(
        approvals.c.id.in_(list(approval_ids)), approvals.c.status != ApprovalStatus.PENDING
    )
    return conn.execute(decided.limit(1)).first() is not None


def _update_leased(
    conn: sa.Connection, execution_id: str, owner: str, action: str, values: Mapping[str, Any]
) -> Any:
    """Update an execution whose lease ``owner`` holds (its updated row); the lease lost is a
    conflict."""
    keys = tuple(sorted(values))

    def statement() -> sa.Update:
        return (
            sa.update(executions)
            .where(
                executions.c.id == sa.bindparam("b_id"),
                executions.c.lease_owner == sa.bindparam("b_owner"),
            )
            .values({key: sa.bindparam(f"v_{key}") for key in keys})
            .returning(*executions.c)
        )

    params = {f"v_{key}": value for key, value in values.items()}
    params.update(b_id=execution_id, b_owner=owner)
    row = _one_or_none(_run(conn, ("leased", keys), statement, params))
    if row is None:
        found = conn.execute(
            sa.select(executions.c.lease_owner).where(executions.c.id == execution_id)
        ).one_or_none()
        if found is None:
            raise NotFoundError("execution", execution_id)
        raise _lease_lost(f"{action} execution {execution_id}", execution_id, owner, found[0])
    return row


def _check_lease(lease_seconds: float) -> None:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")


def _not_queued_for_a_lock() -> sa.ColumnElement[bool]:
    """Not a pending execution waiting in line for a concurrency lock."""
    queued = sa.exists().where(
        locks.c.execution_id == executions.c.id, locks.c.status == LockStatus.QUEUED
    )
    return sa.or_(executions.c.status != ExecutionStatus.PENDING, ~queued)


def _claim(statuses: Collection[ExecutionStatus]) -> sa.Update:
    """Take the leases of up to ``:b_limit`` claimable executions, oldest first."""
    chosen = (
        sa.select(executions.c.id)
        .where(_claimable(statuses))
        .order_by(executions.c.created_at, executions.c.id)
        .limit(sa.bindparam("b_limit"))
        # FOR NO KEY UPDATE: an UPDATE's own lock, which lets others insert events meanwhile.
        .with_for_update(skip_locked=True, key_share=True, of=executions)
    )
    return (
        sa.update(executions)
        .where(executions.c.id.in_(chosen))
        .values(
            lease_owner=sa.bindparam("v_owner"),
            lease_expires_at=sa.bindparam("v_expires"),
            updated_at=_NOW,
        )
        .returning(*executions.c)
    )


def _claimable(statuses: Collection[ExecutionStatus]) -> sa.ColumnElement[bool]:
    """In ``statuses``, free of a live lease, awake, and not queued for a lock; or abandoned
    (at ``:b_now``)."""
    lease_free = sa.or_(
        executions.c.lease_owner.is_(None),
        # A lease without an expiry could never be reclaimed: it counts as expired.
        executions.c.lease_expires_at.is_(None),
        executions.c.lease_expires_at <= _NOW,
    )
    return sa.or_(
        sa.and_(
            _status_in(statuses),
            lease_free,
            sa.or_(executions.c.wake_at.is_(None), executions.c.wake_at <= _NOW),
            _not_queued_for_a_lock(),
        ),
        sa.and_(_abandoned(), lease_free),
    )


def _next_wake(statuses: Collection[ExecutionStatus]) -> sa.Select[Any]:
    """How many executions in ``statuses`` (or abandoned) there are, how many of them are
    asleep or leased, and the earliest instant one of those becomes claimable."""
    owned = sa.and_(
        executions.c.lease_owner.is_not(None), executions.c.lease_expires_at.is_not(None)
    )
    # The later of wake_at and the lease's expiry; NULL when neither is in the way.
    claimable_at = sa.case(
        (~owned, executions.c.wake_at),
        (
            sa.or_(
                executions.c.wake_at.is_(None),
                executions.c.wake_at < executions.c.lease_expires_at,
            ),
            executions.c.lease_expires_at,
        ),
        else_=executions.c.wake_at,
    )
    return sa.select(sa.func.count(), sa.func.count(claimable_at), sa.func.min(claimable_at)).where(
        sa.or_(
            sa.and_(_status_in(statuses), _not_queued_for_a_lock()),
            _abandoned(),
        )
    )


def _status_in(statuses: Collection[ExecutionStatus]) -> sa.ColumnElement[bool]:
    """``status IN (...)`` with one parameter per status, fixed in the text: SQLAlchemy's
    ``in_()`` of a list expands at every run, which a prepared statement cannot."""
    kind = executions.c.status.type
    return executions.c.status.in_([sa.bindparam(None, status, type_=kind) for status in statuses])


def _abandoned() -> sa.ColumnElement[bool]:
    """Ended, yet still leased: its worker died between the ending and the clean-up (rolling
    back after a failure or a cancel, releasing locks). A worker claims it to finish that."""
    return sa.and_(_status_in(EXECUTION_TERMINAL), executions.c.lease_owner.is_not(None))


def _step_runs_of(execution_id: str) -> sa.Select[Any]:
    """An execution's step runs, by creation time, then step and item."""
    return (
        sa.select(step_runs)
        .where(step_runs.c.execution_id == execution_id)
        .order_by(step_runs.c.created_at, step_runs.c.step_id, step_runs.c.item_key)
    )


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (PostgreSQL's ``percentile_cont``)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _metrics(
    workflow_name: str,
    counts: Mapping[ExecutionStatus, int],
    durations: Sequence[float],
    approval_waits: Sequence[float],
) -> WorkflowMetrics:
    finished = sum(counts.get(status, 0) for status in EXECUTION_TERMINAL)
    succeeded = counts.get(ExecutionStatus.SUCCEEDED, 0)
    total = sum(counts.values())
    return WorkflowMetrics(
        workflow_name=workflow_name,
        total=total,
        active=total - finished,
        succeeded=succeeded,
        failed=counts.get(ExecutionStatus.FAILED, 0),
        cancelled=counts.get(ExecutionStatus.CANCELLED, 0),
        rolled_back=counts.get(ExecutionStatus.ROLLED_BACK, 0),
        rollback_failed=counts.get(ExecutionStatus.ROLLBACK_FAILED, 0),
        success_rate=succeeded / finished if finished else None,
        duration_p50_seconds=_percentile(durations, 0.5),
        duration_p95_seconds=_percentile(durations, 0.95),
        approval_wait_p50_seconds=_percentile(approval_waits, 0.5),
    )


def _new_id(prefix: str) -> str:
    """A random id whose prefix tells what it names (``exe_``, ``sr_``, ``apr_``, ``sch_``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


#: Hot-path statements by shape and database, see :func:`_run`.
_PREPARED: dict[tuple[Hashable, str, str], Prepared] = {}


def _run(
    conn: sa.Connection,
    key: Hashable,
    build: Callable[[], sa.ClauseElement],
    *many: Mapping[str, Any],
) -> list[Any]:
    """Run the hot-path statement of this shape once per parameter set; the rows it returned.

    The statement is built and compiled for the connection's database on first use and then
    run on the driver's cursor (:mod:`opsgate.stores.prepared`): building a statement on every
    call cost 0.25-0.65 ms of Python, and SQLAlchemy's execution of a cached one 0.05 ms, against
    0.01 ms for the cursor (docs/performance.md). ``key`` names everything the statement's text
    depends on (which columns it sets, whether a lease guards it); values come as ``bindparam()``
    parameters.
    """
    dialect = conn.dialect
    shape = (key, dialect.name, dialect.driver)
    prepared = _PREPARED.get(shape)
    if prepared is None:
        prepared = _PREPARED.setdefault(shape, prepare(build(), dialect))
    return execute_many(conn, prepared, many)


def _insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    many: Sequence[Mapping[str, Any]],
    *,
    unique: Sequence[str] = (),
    returning: bool = False,
) -> list[Any]:
    """``INSERT ... [ON CONFLICT (unique) DO NOTHING] [RETURNING *]`` of each of ``many`` (rows
    with the same columns), as typed text that SQLite and PostgreSQL both accept; the rows
    inserted, when ``returning``.

    SQLAlchemy's own ``on_conflict_do_nothing()`` has no cache key, so it was compiled on
    every call (about 1.5 ms, once per step on the hot path); text is compiled once.
    """
    keys = tuple(many[0])

    def build() -> sa.TextClause | sa.TextualSelect:
        quote = conn.dialect.identifier_preparer.quote
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(key) for key in keys)}) "
            f"VALUES ({', '.join(f':{key}' for key in keys)})"
        )
        if unique:
            sql += f" ON CONFLICT ({', '.join(quote(key) for key in unique)}) DO NOTHING"
        if returning:
            sql += f" RETURNING {', '.join(quote(column.name) for column in table.c)}"
        text = sa.text(sql).bindparams(
            *(sa.bindparam(key, type_=table.c[key].type) for key in keys)
        )
        return text.columns(*table.c) if returning else text

    key = ("insert", table.name, keys, tuple(unique), returning)
    return _run(conn, key, build, *many)


def _insert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``ON CONFLICT DO NOTHING`` on the connection's database."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _record(cls: type[RecordT], row: Any, **overrides: Any) -> RecordT:
    """The domain record of a row (SQLAlchemy's, or a prepared statement's named tuple):
    columns by field name, plus fields that are not columns."""
    mapping = row._mapping if isinstance(row, sa.Row) else row._asdict()
    names = (name for name in _field_names(cls) if name not in overrides)
    return cls(**{name: mapping[name] for name in names}, **overrides)


@functools.cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _one_or_none(rows: Sequence[Any]) -> Any:
    """The only row, or ``None``; a key lookup or compare-and-set returns at most one."""
    assert len(rows) <= 1, f"{len(rows)} rows where at most one was possible"
    return rows[0] if rows else None


def _get_row(conn: sa.Connection, table: sa.Table, entity: str, entity_id: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(table).where(table.c.id == entity_id)).one_or_none()
    if row is None:
        raise NotFoundError(entity, entity_id)
    return row


def _snapshot_in(conn: sa.Connection, digest: str) -> BlueprintSnapshot:
    row = conn.execute(
        sa.select(blueprint_snapshots).where(blueprint_snapshots.c.digest == digest)
    ).one_or_none()
    if row is None:
        raise NotFoundError("blueprint snapshot", digest)
    return _record(BlueprintSnapshot, row)


def _check_same_request(
    existing: sa.Row[Any], blueprint_digest: str, parameters: JSONObject
) -> None:
    """An idempotency key may only be repeated with exactly the request it was first used for."""
    if existing.blueprint_digest != blueprint_digest:
        difference = f"blueprint {existing.blueprint_digest}, not {blueprint_digest}"
    elif canonical_json(existing.parameters) != canonical_json(parameters):
        difference = "other parameters"
    else:
        return
    raise ConflictError(
        f"idempotency key {existing.idempotency_key!r} of {existing.requested_by} was already "
        f"used for execution {existing.id} with {difference}; repeat the original request "
        "exactly, or use a new key for a new request"
    )


def _take_seq(
    conn: sa.Connection,
    now: datetime,
    changes: Mapping[str, Any],
    owner: str | None = None,
    *,
    execution_id: str | None = None,
    child: tuple[sa.Table, str] | None = None,
) -> int | None:
    """Take the execution's next event seq (locking its row until commit), applying ``changes``.

    The execution is ``execution_id``, or the one of ``child`` (a table and a row id). With
    ``owner``, only while that worker holds the lease. ``None`` when no execution was updated.
    """
    parent = None if child is None else child[0]
    keys = tuple(sorted(changes))
    guarded = owner is not None
    shape = ("seq", None if parent is None else parent.name, keys, guarded)
    params = {f"v_{key}": value for key, value in changes.items()}
    params.update(b_id=execution_id if child is None else child[1], b_now=now)
    if guarded:
        params["b_owner"] = owner
    row = _one_or_none(_run(conn, shape, lambda: _numbering(parent, keys, guarded), params))
    return None if row is None else int(row.last_seq)


def _numbering(parent: sa.Table | None, keys: Sequence[str], guarded: bool) -> sa.Update:
    """``UPDATE executions SET last_seq = last_seq + 1 ... RETURNING last_seq`` for the
    execution ``:b_id``, or for the execution of the ``parent`` row ``:b_id``."""
    execution: sa.ColumnElement[Any] = sa.bindparam("b_id")
    if parent is not None:
        execution = (
            sa.select(parent.c.execution_id)
            .where(parent.c.id == sa.bindparam("b_id"))
            .scalar_subquery()
        )
    statement = sa.update(executions).where(executions.c.id == execution)
    if guarded:
        statement = statement.where(executions.c.lease_owner == sa.bindparam("b_owner"))
    values: dict[str, Any] = {key: sa.bindparam(f"v_{key}") for key in keys}
    values.update(last_seq=executions.c.last_seq + 1, updated_at=_NOW)
    return statement.values(values).returning(executions.c.last_seq)


def _next_seq(
    conn: sa.Connection, execution_id: str, now: datetime, changes: Mapping[str, Any]
) -> int:
    """Take the execution's next event seq (locking its row until commit), applying ``changes``."""
    seq = _take_seq(conn, now, changes, execution_id=execution_id)
    if seq is None:
        raise NotFoundError("execution", execution_id)
    return seq


def _event_values(
    *,
    event_type: EventType,
    actor: str,
    occurred_at: datetime,
    execution_id: str | None = None,
    seq: int | None = None,
    schedule_id: str | None = None,
    data: JSONObject | None = None,
    step_id: str | None = None,
    target: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """Every column of an event row but its id."""
    return {
        "execution_id": execution_id,
        "schedule_id": schedule_id,
        "seq": seq,
        "type": event_type,
        "actor": actor,
        "step_id": step_id,
        "target": target,
        "attempt": attempt,
        "data": dict(data or {}),
        "occurred_at": occurred_at,
    }


def _insert_events(conn: sa.Connection, values: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Insert events; their records, in the order of ``values``."""
    if not values:
        return []
    return [_record(Event, row) for row in _insert_rows(conn, events, values, returning=True)]


def _insert_event(
    conn: sa.Connection,
    *,
    event_type: EventType,
    actor: str,
    occurred_at: datetime,
    execution_id: str | None = None,
    seq: int | None = None,
    schedule_id: str | None = None,
    data: JSONObject | None = None,
    step_id: str | None = None,
    target: str | None = None,
) -> Event:
    """Insert one event outside a batch."""
    values = _event_values(
        event_type=event_type,
        actor=actor,
        occurred_at=occurred_at,
        execution_id=execution_id,
        seq=seq,
        schedule_id=schedule_id,
        data=data,
        step_id=step_id,
        target=target,
    )
    [event] = _insert_events(conn, [values])
    return event


def _insert_schedule_event(
    conn: sa.Connection,
    schedule_id: str,
    event_type: EventType,
    actor: str,
    now: datetime,
    values: Mapping[str, Any],
) -> None:
    data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
    _insert_event(
        conn,
        schedule_id=schedule_id,
        event_type=event_type,
        actor=actor,
        occurred_at=now,
        data=data,
    )


def _record_fire(
    conn: sa.Connection,
    fire: NewFire,
    outcome: FireOutcome,
    execution_id: str | None,
    actor: str,
    now: datetime,
) -> ScheduleFire:
    """Record one fire under its unique key and move its schedule on (compare-and-set on the
    schedule's ``next_fire_at``), with the outcome's event; :class:`ConflictError` if either
    fails, so that the whole transaction rolls back."""
    row = conn.execute(
        _insert(conn, schedule_fires)
        .values(
            schedule_id=fire.schedule_id,
            fire_at=fire.fire_at,
            outcome=outcome,
            execution_id=execution_id,
            recorded_at=now,
        )
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_at"])
        .returning(*schedule_fires.c)
    ).one_or_none()
    if row is None:
        raise ConflictError(
            f"schedule {fire.schedule_id} already recorded its fire at "
            f"{fire.fire_at.isoformat()}; another scheduler handled it, so do not start it again"
        )
    moved = conn.execute(
        sa.update(schedules)
        .where(
            schedules.c.id == fire.schedule_id,
            schedules.c.next_fire_at == fire.fire_at,
            schedules.c.enabled.is_(True),
            schedules.c.deleted_at.is_(None),
        )
        .values(
            last_fire_at=fire.fire_at,
            last_outcome=outcome,
            next_fire_at=fire.next_fire_at,
            updated_at=now,
        )
    ).rowcount
    if moved != 1:
        raise ConflictError(
            f"schedule {fire.schedule_id} is no longer due at {fire.fire_at.isoformat()} (it "
            "was changed, paused, deleted or fired meanwhile); read it again before firing"
        )
    data = {
        **fire.data,
        "fire_at": fire.fire_at,
        "execution_id": execution_id,
        "next_fire_at": fire.next_fire_at,
    }
    _insert_schedule_event(conn, fire.schedule_id, FIRE_EVENTS[outcome], actor, now, data)
    return _record(ScheduleFire, row)


def _live_schedule(conn: sa.Connection, schedule_id: str) -> sa.Row[Any]:
    row = conn.execute(
        sa.select(schedules).where(schedules.c.id == schedule_id, schedules.c.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        raise NotFoundError("schedule", schedule_id)
    return row


def _approvers_document(approvers: Approvers) -> dict[str, list[str]]:
    return {"roles": list(approvers.roles), "principals": list(approvers.principals)}


def _approvers(document: Mapping[str, Any]) -> Approvers:
    return Approvers(
        roles=tuple(document.get("roles", ())), principals=tuple(document.get("principals", ()))
    )


def _approvals_with_decisions(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[Approval]:
    """Approval records with their decisions, read in one more query."""
    decisions: dict[str, list[ApprovalDecision]] = {row.id: [] for row in rows}
    if rows:
        decision_rows = conn.execute(
            sa.select(approval_decisions)
            .where(approval_decisions.c.approval_id.in_(list(decisions)))
            .order_by(approval_decisions.c.id)
        ).all()
        for decision in decision_rows:
            decisions[decision.approval_id].append(_record(ApprovalDecision, decision))
    return [
        _record(
            Approval,
            row,
            approvers=_approvers(row.approvers),
            escalate_to=None if row.escalate_to is None else _approvers(row.escalate_to),
            decisions=tuple(decisions[row.id]),
        )
        for row in rows
    ]


def _serialize_on_lock_key(conn: sa.Connection, key: str) -> None:
    """Make lock operations on one key take turns until commit.

    SQLite needs nothing: ``BEGIN IMMEDIATE`` already holds the database's write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0))))


def _acquire_lock(
    conn: sa.Connection,
    key: str,
    execution_id: str,
    max_concurrent: int,
    actor: str,
    now: datetime,
) -> LockHolding:
    """:meth:`SQLStore.acquire_lock` inside ``conn``'s transaction."""
    _serialize_on_lock_key(conn, key)
    status = conn.execute(
        sa.select(executions.c.status).where(executions.c.id == execution_id)
    ).scalar_one_or_none()
    if status is None:
        raise NotFoundError("execution", execution_id)
    if status in EXECUTION_TERMINAL:
        # Taken now, it would never be released: the execution's release ran already.
        raise ConflictError(
            f"cannot lock {key!r} for execution {execution_id}: it is {status} already, and an "
            "ended execution holds no locks"
        )
    existing = conn.execute(
        sa.select(locks).where(locks.c.key == key, locks.c.execution_id == execution_id)
    ).one_or_none()
    if existing is not None:
        return _record(LockHolding, existing)
    held, queued = _lock_counts(conn, key)
    status = LockStatus.HELD if held < max_concurrent and not queued else LockStatus.QUEUED
    row = conn.execute(
        sa.insert(locks)
        .values(
            key=key,
            execution_id=execution_id,
            status=status,
            max_concurrent=max_concurrent,
            enqueued_at=now,
            acquired_at=now if status is LockStatus.HELD else None,
        )
        .returning(*locks.c)
    ).one()
    if status is LockStatus.HELD:
        _lock_event(conn, execution_id, EventType.LOCK_ACQUIRED, actor, key, now)
    else:
        _lock_event(conn, execution_id, EventType.LOCK_QUEUED, actor, key, now, _waiting_for(key))
    return _record(LockHolding, row)


def _take_back_locks(
    conn: sa.Connection,
    execution_id: str,
    locks: Sequence[tuple[str, int]],
    actor: str,
    now: datetime,
) -> None:
    """Hold every one of ``locks`` for an execution that runs again, or refuse it."""
    holdings = [_acquire_lock(conn, key, execution_id, places, actor, now) for key, places in locks]
    queued = [holding.key for holding in holdings if holding.status == LockStatus.QUEUED]
    if queued:
        raise ConflictError(
            f"execution {execution_id} cannot run again now: locks {', '.join(queued)} are "
            "held by other executions; retry the step once they finish"
        )


def _release_locks(
    conn: sa.Connection, execution_id: str, actor: str, now: datetime
) -> list[LockHolding]:
    """:meth:`SQLStore.release_locks` inside ``conn``'s transaction."""
    places = conn.execute(
        sa.select(locks.c.key, locks.c.status)
        .where(locks.c.execution_id == execution_id)
        .order_by(locks.c.key)
    ).all()
    # Every key first, in sorted order, before any execution row is locked: so two releases,
    # or a release and an acquire, never wait for each other in opposite orders.
    for key, _status in places:
        _serialize_on_lock_key(conn, key)
    promoted: list[LockHolding] = []
    for key, status in places:
        conn.execute(
            sa.delete(locks).where(locks.c.key == key, locks.c.execution_id == execution_id)
        )
        waited = ExecutionChanges(current_sub_task=None) if status == LockStatus.QUEUED else None
        _lock_event(conn, execution_id, EventType.LOCK_RELEASED, actor, key, now, waited)
        promoted += _promote_queued(conn, key, actor, now)
    return promoted


def _waiting_for(key: str) -> ExecutionChanges:
    """What a pending execution queued for ``key`` shows as its sub-task."""
    return ExecutionChanges(current_sub_task=f"waiting for lock {key}, held by others")


def _lock_counts(conn: sa.Connection, key: str) -> tuple[int, int]:
    """How many executions hold ``key``, and how many wait for it."""
    rows = conn.execute(
        sa.select(locks.c.status, sa.func.count())
        .where(locks.c.key == key)
        .group_by(locks.c.status)
    ).tuples()
    counts = dict(rows.all())
    return counts.get(LockStatus.HELD, 0), counts.get(LockStatus.QUEUED, 0)


def _lock_event(
    conn: sa.Connection,
    execution_id: str,
    event_type: EventType,
    actor: str,
    key: str,
    now: datetime,
    changes: ExecutionChanges | None = None,
) -> None:
    _insert_event(
        conn,
        execution_id=execution_id,
        seq=_next_seq(conn, execution_id, now, changes or {}),
        event_type=event_type,
        actor=actor,
        occurred_at=now,
        data={"key": key},
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")


def _encode_cursor(last: Execution) -> str:
    position = json.dumps([last.created_at.isoformat(), last.id])
    return base64.urlsafe_b64encode(position.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_text, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None or not isinstance(last_id, str):
            raise ValueError("not a position written by list_executions")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(
            f"invalid cursor {cursor!r}: pass the next_cursor of the previous page unchanged, "
            "or no cursor for the first page"
        ) from exc
    return created_at, last_id


def _promote_queued(conn: sa.Connection, key: str, actor: str, now: datetime) -> list[LockHolding]:
    """Give free places on ``key`` to the waiting executions, in arrival order.

    A queued execution that ended meanwhile (cancelled while it waited) gives up its place.
    """
    held, _ = _lock_counts(conn, key)
    queue = conn.execute(
        sa.select(locks, executions.c.status.label("execution_status"))
        .join_from(locks, executions, locks.c.execution_id == executions.c.id)
        .where(locks.c.key == key, locks.c.status == LockStatus.QUEUED)
        .order_by(locks.c.id)
    ).all()
    promoted = []
    for waiting in queue:
        if waiting.execution_status in EXECUTION_TERMINAL:
            conn.execute(sa.delete(locks).where(locks.c.id == waiting.id))
            _lock_event(conn, waiting.execution_id, EventType.LOCK_RELEASED, actor, key, now)
            continue
        if held >= waiting.max_concurrent:
            break
        row = conn.execute(
            sa.update(locks)
            .where(locks.c.id == waiting.id)
            .values(status=LockStatus.HELD, acquired_at=now)
            .returning(*locks.c)
        ).one()
        other = conn.execute(
            sa.select(locks.c.key)
            .where(
                locks.c.execution_id == waiting.execution_id, locks.c.status == LockStatus.QUEUED
            )
            .order_by(locks.c.key)
            .limit(1)
        ).scalar()
        done = ExecutionChanges(current_sub_task=None) if other is None else _waiting_for(other)
        _lock_event(conn, waiting.execution_id, EventType.LOCK_ACQUIRED, actor, key, now, done)
        promoted.append(_record(LockHolding, row))
        held += 1
    return promoted
