"""Domain records: what the store returns and the engine, service and tools work with. No I/O.

Records are frozen: a changed execution is a new record read back from the store, so nobody acts
on a status that was never persisted. Statuses live in :mod:`opsgate.engine.statuses` with their
transition tables; this module holds the records and the small enums that are not statuses.
Every ``*_at`` is an aware UTC datetime.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Generic, NamedTuple, TypeAlias, TypedDict, TypeVar

from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus, StepRunStatus, Trigger

JSONObject = Mapping[str, Any]
"""A JSON document with an object at the top, as decoded by :mod:`json`."""


def canonical_json(content: object) -> str:
    """One spelling per value (sorted keys, no spaces), so equal content hashes equally."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_digest(content: object) -> str:
    """The sha256 hex digest of the canonical JSON of ``content``."""
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


class ApprovalDecisionKind(StrEnum):
    """What one approver decided."""

    #: Counts towards the quorum.
    GRANTED = "granted"
    #: Rejects the gate: one authorised rejection is enough.
    REJECTED = "rejected"


class Channel(StrEnum):
    """Where a decision came from, for the audit trail."""

    #: An MCP tool call (``approve_step``, ``reject_step``).
    MCP = "mcp"
    #: The ``opsgate approve`` / ``opsgate reject`` commands.
    CLI = "cli"
    #: An MCP elicitation answered in the client that started the execution.
    ELICITATION = "elicitation"


class OnTimeout(StrEnum):
    """What a gate does when its deadline passes; never approve by default."""

    #: Fail closed: the approval expires and the step fails.
    REJECT = "reject"
    #: Hand the gate to ``escalate_to`` with a new deadline.
    ESCALATE = "escalate"


class OverlapPolicy(StrEnum):
    """What a schedule does when it fires while its previous execution still runs."""

    #: Do not start a new execution for this fire.
    SKIP = "skip"
    #: Start it pending; it runs after the previous one ends.
    QUEUE = "queue"
    #: Run both at once.
    ALLOW = "allow"
    #: Cancel the previous execution, then start the new one.
    CANCEL_PREVIOUS = "cancel_previous"


class MisfirePolicy(StrEnum):
    """What a schedule does with fire times missed while opsgate was down."""

    #: Drop the missed fires.
    SKIP = "skip"
    #: Run once for all the missed fires within the catch-up window.
    RUN_ONCE = "run_once"
    #: Run every missed fire within the catch-up window.
    RUN_ALL = "run_all"


class FireOutcome(StrEnum):
    """What happened when a schedule fired."""

    #: An execution was created.
    STARTED = "started"
    #: No execution: the overlap policy skipped it.
    SKIPPED = "skipped"
    #: No execution: the fire time was missed and the misfire policy dropped it.
    MISFIRED = "misfired"
    #: No execution: a policy denied it.
    DENIED = "denied"
    #: No execution: it could not be created (for example the blueprint is gone or invalid).
    FAILED = "failed"


class LockStatus(StrEnum):
    """Whether an execution holds a concurrency lock or waits in line for it."""

    #: Holds one of the lock's ``max_concurrent`` places.
    HELD = "held"
    #: Waits; promoted first come, first served when a holder releases.
    QUEUED = "queued"


class EventType(StrEnum):
    """What an event records; past tense, ``entity.what_happened``."""

    EXECUTION_CREATED = "execution.created"
    EXECUTION_STARTED = "execution.started"
    EXECUTION_WAITING_APPROVAL = "execution.waiting_approval"
    EXECUTION_PAUSED = "execution.paused"
    EXECUTION_RESUMED = "execution.resumed"
    EXECUTION_SUCCEEDED = "execution.succeeded"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled"
    EXECUTION_ROLLING_BACK = "execution.rolling_back"
    EXECUTION_ROLLED_BACK = "execution.rolled_back"
    EXECUTION_ROLLBACK_FAILED = "execution.rollback_failed"
    #: An operator reran a failed execution: it runs again from its failed steps.
    EXECUTION_RERUN = "execution.rerun"
    STEP_WAITING_APPROVAL = "step.waiting_approval"
    STEP_STARTED = "step.started"
    STEP_PROGRESSED = "step.progressed"
    STEP_RETRYING = "step.retrying"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    STEP_SKIPPED = "step.skipped"
    STEP_TIMED_OUT = "step.timed_out"
    STEP_CANCELLED = "step.cancelled"
    STEP_INTERRUPTED = "step.interrupted"
    STEP_ROLLED_BACK = "step.rolled_back"
    #: Its compensation failed for good; the step run is ``rollback_failed``.
    STEP_ROLLBACK_FAILED = "step.rollback_failed"
    #: Its compensation began (no status change: the step run stays ``succeeded`` until it ends).
    STEP_COMPENSATION_STARTED = "step.compensation_started"
    #: An attempt of its compensation failed and another one is due (no status change).
    STEP_COMPENSATION_RETRYING = "step.compensation_retrying"
    #: An operator asked to run a failed step run again; it is ``pending`` again, from attempt 1.
    STEP_RERUN_REQUESTED = "step.rerun_requested"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECISION_RECORDED = "approval.decision_recorded"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_ESCALATED = "approval.escalated"
    APPROVAL_SUPERSEDED = "approval.superseded"
    APPROVAL_CANCELLED = "approval.cancelled"
    SCHEDULE_CREATED = "schedule.created"
    SCHEDULE_UPDATED = "schedule.updated"
    SCHEDULE_DELETED = "schedule.deleted"
    SCHEDULE_FIRED = "schedule.fired"
    SCHEDULE_SKIPPED = "schedule.skipped"
    SCHEDULE_MISFIRED = "schedule.misfired"
    SCHEDULE_DENIED = "schedule.denied"
    SCHEDULE_FAILED = "schedule.failed"
    LOCK_ACQUIRED = "lock.acquired"
    LOCK_QUEUED = "lock.queued"
    LOCK_RELEASED = "lock.released"


_T = Trigger
_V = EventType

#: The event each accepted execution transition appends.
EXECUTION_EVENTS: Final[Mapping[Trigger, EventType]] = {
    _T.START: _V.EXECUTION_STARTED,
    _T.REQUEST_APPROVAL: _V.EXECUTION_WAITING_APPROVAL,
    _T.APPROVE: _V.EXECUTION_RESUMED,
    _T.PAUSE: _V.EXECUTION_PAUSED,
    _T.RESUME: _V.EXECUTION_RESUMED,
    _T.SUCCEED: _V.EXECUTION_SUCCEEDED,
    _T.FAIL: _V.EXECUTION_FAILED,
    _T.CANCEL: _V.EXECUTION_CANCELLED,
    _T.BEGIN_ROLLBACK: _V.EXECUTION_ROLLING_BACK,
    _T.FINISH_ROLLBACK: _V.EXECUTION_ROLLED_BACK,
    _T.FAIL_ROLLBACK: _V.EXECUTION_ROLLBACK_FAILED,
    _T.RERUN: _V.EXECUTION_RERUN,
}

#: The event each accepted step run transition appends.
STEP_RUN_EVENTS: Final[Mapping[Trigger, EventType]] = {
    _T.START: _V.STEP_STARTED,
    _T.REQUEST_APPROVAL: _V.STEP_WAITING_APPROVAL,
    _T.SUCCEED: _V.STEP_SUCCEEDED,
    _T.FAIL: _V.STEP_FAILED,
    _T.RETRY: _V.STEP_RETRYING,
    _T.TIME_OUT: _V.STEP_TIMED_OUT,
    _T.SKIP: _V.STEP_SKIPPED,
    _T.CANCEL: _V.STEP_CANCELLED,
    _T.INTERRUPT: _V.STEP_INTERRUPTED,
    _T.COMPENSATE: _V.STEP_ROLLED_BACK,
    _T.FAIL_ROLLBACK: _V.STEP_ROLLBACK_FAILED,
    _T.RERUN: _V.STEP_RERUN_REQUESTED,
}

#: The event each accepted approval transition appends.
APPROVAL_EVENTS: Final[Mapping[Trigger, EventType]] = {
    _T.APPROVE: _V.APPROVAL_GRANTED,
    _T.REJECT: _V.APPROVAL_REJECTED,
    _T.EXPIRE: _V.APPROVAL_EXPIRED,
    _T.ESCALATE: _V.APPROVAL_ESCALATED,
    _T.SUPERSEDE: _V.APPROVAL_SUPERSEDED,
    _T.CANCEL: _V.APPROVAL_CANCELLED,
}

#: The event each fire outcome appends to the schedule's log.
FIRE_EVENTS: Final[Mapping[FireOutcome, EventType]] = {
    FireOutcome.STARTED: _V.SCHEDULE_FIRED,
    FireOutcome.SKIPPED: _V.SCHEDULE_SKIPPED,
    FireOutcome.MISFIRED: _V.SCHEDULE_MISFIRED,
    FireOutcome.DENIED: _V.SCHEDULE_DENIED,
    FireOutcome.FAILED: _V.SCHEDULE_FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BlueprintSnapshot:
    """The exact blueprint an execution runs, whatever happens to the file later."""

    digest: str
    name: str
    version: str
    content: JSONObject
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One run of a blueprint snapshot with concrete parameters.

    ``parameters`` hold references (``env:NAME``) for secret parameters, never their values.
    ``last_seq`` is the seq of the execution's latest event. ``lease_owner`` and
    ``lease_expires_at`` say which worker drives it and until when; ``wake_at`` is when it next
    has something to do (a due retry, the end of a ``wait``; ``None``: now), so no worker claims
    it before. ``cancel_cleanup`` records that a cancel asked for the rollback plan to run.
    """

    id: str
    workflow_name: str
    blueprint_digest: str
    parameters: JSONObject
    status: ExecutionStatus
    requested_by: str
    idempotency_key: str | None
    plan_digest: str | None
    parent_execution_id: str | None
    schedule_id: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    wake_at: datetime | None
    cancel_cleanup: bool
    last_seq: int
    current_sub_task: str | None
    progress: float | None
    error: JSONObject | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewStepRun:
    """A step run to create: one step, or one item of a step that fans out over targets."""

    step_id: str
    item_key: str = ""
    item_index: int | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRun:
    """One step on one target (or fan-out item) inside an execution, across its attempts.

    ``attempt`` counts the attempts started so far; ``next_attempt_at`` is when a retrying run
    is due, persisted so that a restart keeps the back-off.
    """

    id: str
    execution_id: str
    step_id: str
    item_key: str
    item_index: int | None
    target: str | None
    status: StepRunStatus
    attempt: int
    next_attempt_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    outputs: JSONObject | None
    error: JSONObject | None
    created_at: datetime
    updated_at: datetime


class ExecutionChanges(TypedDict, total=False):
    """Execution fields a caller may set along with a transition or an event.

    The lease changes hands only through the store's claim, renew and release; a guarded write
    (``lease_owner=``) may extend its own lease with ``lease_expires_at``.
    """

    lease_expires_at: datetime | None
    wake_at: datetime | None
    cancel_cleanup: bool
    current_sub_task: str | None
    progress: float | None
    error: JSONObject | None
    deadline_at: datetime | None


class StepRunChanges(TypedDict, total=False):
    """Step run fields a caller may set along with a transition."""

    next_attempt_at: datetime | None
    outputs: JSONObject | None
    error: JSONObject | None


# -- changes: what a worker writes, several at a time in one transaction (``SQLStore.apply``) ---
#
# Each transition is a compare-and-set against ``expected`` that appends its event;
# ``lease_owner``, when given, also requires that the execution's lease is still held by that
# worker, so a worker whose lease was taken over writes nothing. ``data`` goes into the event,
# ``changes`` into the record.


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTransition:
    """Apply ``trigger`` to an execution that is still ``expected``."""

    execution_id: str
    trigger: Trigger
    expected: ExecutionStatus
    actor: str
    data: JSONObject | None = None
    lease_owner: str | None = None
    changes: ExecutionChanges = field(default_factory=lambda: ExecutionChanges())


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRunTransition:
    """Apply ``trigger`` to a step run that is still ``expected``."""

    step_run_id: str
    trigger: Trigger
    expected: StepRunStatus
    actor: str
    data: JSONObject | None = None
    lease_owner: str | None = None
    changes: StepRunChanges = field(default_factory=lambda: StepRunChanges())


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalTransition:
    """Decide an approval that is still ``expected`` (grant, reject, expire, ...)."""

    approval_id: str
    trigger: Trigger
    expected: ApprovalStatus
    actor: str
    data: JSONObject | None = None
    lease_owner: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """Append an event that changes no status (``step.progressed``, ``step.compensation_*``).

    ``changes`` update the execution in the statement that numbers the event.
    """

    execution_id: str
    type: EventType
    actor: str
    data: JSONObject | None = None
    step_id: str | None = None
    target: str | None = None
    attempt: int | None = None
    lease_owner: str | None = None
    changes: ExecutionChanges = field(default_factory=lambda: ExecutionChanges())


@dataclass(frozen=True, slots=True, kw_only=True)
class NewStepRuns:
    """Create pending step runs of an execution; runs that exist already are left as they are.

    Appends no event: a step run's first event is its first transition.
    """

    execution_id: str
    runs: tuple[NewStepRun, ...]
    lease_owner: str | None = None


#: One item of a batch written in one transaction.
Change: TypeAlias = (
    ExecutionTransition | StepRunTransition | ApprovalTransition | NewEvent | NewStepRuns
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Approvers:
    """Who may decide a gate: anyone with one of ``roles``, or one of ``principals``."""

    roles: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecision:
    """One principal's decision on an approval; decisions are never changed or deleted."""

    id: int
    approval_id: str
    principal: str
    decision: ApprovalDecisionKind
    comment: str | None
    channel: Channel
    response: JSONObject | None
    decided_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """One gate instance for one step of one execution, bound to the digest of that step.

    ``previous_approval_id`` links an escalated or superseded approval to its replacement.
    ``decisions`` are in the order they were made.
    """

    id: str
    execution_id: str
    step_id: str
    gate: str
    status: ApprovalStatus
    digest: str
    approvers: Approvers
    quorum: int
    allow_self_approval: bool
    response_schema: JSONObject | None
    deadline_at: datetime | None
    on_timeout: OnTimeout
    escalate_to: Approvers | None
    requested_by: str
    previous_approval_id: str | None
    created_at: datetime
    decided_at: datetime | None
    decisions: tuple[ApprovalDecision, ...] = field(default=())


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A cron expression in a timezone that starts executions of one workflow."""

    id: str
    workflow_name: str
    cron: str
    timezone: str
    parameters: JSONObject
    overlap_policy: OverlapPolicy
    misfire_policy: MisfirePolicy
    owner: str
    enabled: bool
    start_at: datetime | None
    end_at: datetime | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_outcome: FireOutcome | None
    catchup_window_seconds: int
    misfire_grace_seconds: int
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFire:
    """A schedule's fire to record in the transaction that creates the execution it starts.

    ``fire_at`` must still be the schedule's ``next_fire_at`` (compare-and-set), and is recorded
    under the unique (schedule, fire time) key: whichever scheduler commits first starts it, the
    others roll back. ``queue`` puts the execution in line on the schedule's lock, so it waits
    for the schedule's previous executions (overlap policies ``queue`` and ``cancel_previous``).
    """

    schedule_id: str
    fire_at: datetime
    next_fire_at: datetime | None
    queue: bool = False
    data: JSONObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFire:
    """The record that a schedule's fire time was handled, which makes it happen once."""

    id: int
    schedule_id: str
    fire_at: datetime
    outcome: FireOutcome
    execution_id: str | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One append-only entry of the log.

    Events of an execution are numbered ``seq`` 1, 2, 3 ... without gaps, so a reader can resume
    after the last seq it saw. Schedule events have no execution and no seq; ``id`` orders them.
    """

    id: int
    execution_id: str | None
    schedule_id: str | None
    seq: int | None
    type: EventType
    actor: str
    step_id: str | None
    target: str | None
    attempt: int | None
    data: JSONObject
    occurred_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LockHolding:
    """An execution's place on a concurrency lock key: held, or queued in arrival order."""

    key: str
    execution_id: str
    status: LockStatus
    max_concurrent: int
    enqueued_at: datetime
    acquired_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowMetrics:
    """How one workflow's executions went, over those created since some instant.

    Counts are by current status; ``active`` counts those not finished yet (pending, running,
    waiting for approval, paused, rolling back). ``success_rate`` is ``succeeded`` over the
    finished ones (``None`` before any finished). Durations run from ``started_at`` to
    ``finished_at`` of finished executions that started; percentiles interpolate linearly between
    the closest ranks (PostgreSQL's ``percentile_cont``). ``approval_wait_p50_seconds`` is the
    median time from an approval's request to its grant or rejection. ``None``: no data.
    """

    workflow_name: str
    total: int
    active: int
    succeeded: int
    failed: int
    cancelled: int
    rolled_back: int
    rollback_failed: int
    success_rate: float | None
    duration_p50_seconds: float | None
    duration_p95_seconds: float | None
    approval_wait_p50_seconds: float | None


ItemT = TypeVar("ItemT")


class Page(NamedTuple, Generic[ItemT]):
    """One page of a listing; pass ``next_cursor`` back for the next page (``None``: the end)."""

    items: list[ItemT]
    next_cursor: str | None
