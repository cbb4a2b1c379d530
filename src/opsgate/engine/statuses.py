"""Statuses of executions, step runs and approvals, and the only transitions allowed between them.

Each machine is one table ``(current status, trigger) -> new status``; :func:`next_status` refuses
every pair the table does not list. The store persists the result by compare-and-set and appends
one event per accepted transition, so these tables are the whole truth about what may happen.

"Terminal" means the forward run is over: nothing will start again on its own. Two kinds of
transition leave a terminal status: the rollback path (``begin_rollback`` from
``failed``/``cancelled``, ``compensate`` and ``fail_rollback`` from ``succeeded``), because
compensation happens after the fact; and an operator's ``rerun`` of a failed step run or execution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Generic, TypeVar

from opsgate.errors import InvalidTransitionError


class ExecutionStatus(StrEnum):
    """Where one run of a blueprint stands."""

    #: Created and persisted; no worker has started it yet (or it waits for a lock).
    PENDING = "pending"
    #: A worker holds its lease and is running steps.
    RUNNING = "running"
    #: Stopped at an approval gate; holds no worker, only a row.
    WAITING_APPROVAL = "waiting_approval"
    #: Paused by an operator: running steps finish, no new step starts.
    PAUSED = "paused"
    #: Every step ended well.
    SUCCEEDED = "succeeded"
    #: A step failed, a gate was rejected or expired, or the deadline passed.
    FAILED = "failed"
    #: Cancelled by an operator before it ended.
    CANCELLED = "cancelled"
    #: Compensations of completed steps are running, in reverse completion order.
    ROLLING_BACK = "rolling_back"
    #: Every compensation succeeded.
    ROLLED_BACK = "rolled_back"
    #: At least one compensation failed; the others still ran.
    ROLLBACK_FAILED = "rollback_failed"


class StepRunStatus(StrEnum):
    """Where one step on one target stands inside an execution."""

    #: Waiting for its dependencies, its turn in ``max_parallel``, or a worker.
    PENDING = "pending"
    #: Its gate has an approval that is not decided yet.
    WAITING_APPROVAL = "waiting_approval"
    #: An attempt is in progress.
    RUNNING = "running"
    #: An attempt failed with a retryable error; the next one is due at ``next_attempt_at``.
    RETRYING = "retrying"
    #: The action returned its outputs.
    SUCCEEDED = "succeeded"
    #: The action failed for good (retries exhausted, a non-retryable error, a rejected gate).
    FAILED = "failed"
    #: Not run: its ``when:`` was false or a dependency did not succeed.
    SKIPPED = "skipped"
    #: Stopped because the execution was cancelled.
    CANCELLED = "cancelled"
    #: The last attempt exceeded the step's ``timeout``.
    TIMED_OUT = "timed_out"
    #: Its worker died mid-attempt and the step is not idempotent, so it is not run again.
    INTERRUPTED = "interrupted"
    #: It succeeded and its compensation has since undone it.
    ROLLED_BACK = "rolled_back"
    #: It succeeded and its compensation failed for good; what it did is still in place.
    ROLLBACK_FAILED = "rollback_failed"


class ApprovalStatus(StrEnum):
    """Where one gate instance stands; every status but ``pending`` is final."""

    #: Waiting for decisions until its deadline.
    PENDING = "pending"
    #: The quorum of distinct approvers granted it.
    GRANTED = "granted"
    #: An authorised approver rejected it.
    REJECTED = "rejected"
    #: The deadline passed with ``on_timeout: reject``: fails closed.
    EXPIRED = "expired"
    #: The deadline passed with ``on_timeout: escalate``: a new approval replaces it.
    ESCALATED = "escalated"
    #: The plan changed, so its digest no longer matches; a new approval replaces it.
    SUPERSEDED = "superseded"
    #: Its execution was cancelled or failed before a decision.
    CANCELLED = "cancelled"


class Trigger(StrEnum):
    """The names of transitions; each machine's table says where each one applies."""

    #: Begin work (an execution, or one attempt of a step run).
    START = "start"
    #: Stop at an approval gate.
    REQUEST_APPROVAL = "request_approval"
    #: The gate was granted.
    APPROVE = "approve"
    #: The gate was rejected.
    REJECT = "reject"
    #: A gate's deadline passed and it fails closed.
    EXPIRE = "expire"
    #: A gate's deadline passed and it moves on to other approvers.
    ESCALATE = "escalate"
    #: A changed plan invalidated a gate.
    SUPERSEDE = "supersede"
    #: An operator paused the execution.
    PAUSE = "pause"
    #: An operator resumed a paused execution.
    RESUME = "resume"
    #: The work ended well.
    SUCCEED = "succeed"
    #: The work ended badly.
    FAIL = "fail"
    #: An operator or the execution's end stopped the work.
    CANCEL = "cancel"
    #: An attempt failed with a retryable error and attempts remain.
    RETRY = "retry"
    #: An attempt exceeded its timeout and no attempts remain.
    TIME_OUT = "time_out"
    #: A step run is not needed (condition false, dependency not succeeded).
    SKIP = "skip"
    #: A worker died during a non-idempotent attempt.
    INTERRUPT = "interrupt"
    #: A completed step run was undone by its compensation.
    COMPENSATE = "compensate"
    #: Start running compensations after a failure or a cancel.
    BEGIN_ROLLBACK = "begin_rollback"
    #: Every compensation succeeded.
    FINISH_ROLLBACK = "finish_rollback"
    #: A compensation failed for good (of a step run), or at least one did (of an execution).
    FAIL_ROLLBACK = "fail_rollback"
    #: An operator asked to run a failed step run, or a failed execution, again.
    RERUN = "rerun"


StatusT = TypeVar("StatusT", ExecutionStatus, StepRunStatus, ApprovalStatus)


@dataclass(frozen=True, slots=True)
class Machine(Generic[StatusT]):
    """One state machine: the entity it governs and its transition table."""

    entity: str
    transitions: Mapping[tuple[StatusT, Trigger], StatusT]


_E = ExecutionStatus
EXECUTION_MACHINE: Final[Machine[ExecutionStatus]] = Machine(
    "execution",
    {
        (_E.PENDING, Trigger.START): _E.RUNNING,
        (_E.PENDING, Trigger.FAIL): _E.FAILED,
        (_E.PENDING, Trigger.CANCEL): _E.CANCELLED,
        (_E.RUNNING, Trigger.REQUEST_APPROVAL): _E.WAITING_APPROVAL,
        (_E.RUNNING, Trigger.PAUSE): _E.PAUSED,
        (_E.RUNNING, Trigger.SUCCEED): _E.SUCCEEDED,
        (_E.RUNNING, Trigger.FAIL): _E.FAILED,
        (_E.RUNNING, Trigger.CANCEL): _E.CANCELLED,
        (_E.WAITING_APPROVAL, Trigger.APPROVE): _E.RUNNING,
        # A rejected or expired gate, or the deadline passing while it waits.
        (_E.WAITING_APPROVAL, Trigger.FAIL): _E.FAILED,
        (_E.WAITING_APPROVAL, Trigger.CANCEL): _E.CANCELLED,
        (_E.PAUSED, Trigger.RESUME): _E.RUNNING,
        # The deadline still applies while paused.
        (_E.PAUSED, Trigger.FAIL): _E.FAILED,
        (_E.PAUSED, Trigger.CANCEL): _E.CANCELLED,
        # An operator reruns the failed steps (``retry_step``). Only a failure that nothing has
        # undone yet: after a rollback, running again would build on undone work.
        (_E.FAILED, Trigger.RERUN): _E.RUNNING,
        (_E.FAILED, Trigger.BEGIN_ROLLBACK): _E.ROLLING_BACK,
        (_E.CANCELLED, Trigger.BEGIN_ROLLBACK): _E.ROLLING_BACK,
        # No cancel, pause or deadline while rolling back: stopping a rollback halfway leaves a
        # half-undone system that neither the forward run nor the rollback plan describes. Each
        # compensation has its own timeout, so a rollback always ends.
        (_E.ROLLING_BACK, Trigger.FINISH_ROLLBACK): _E.ROLLED_BACK,
        (_E.ROLLING_BACK, Trigger.FAIL_ROLLBACK): _E.ROLLBACK_FAILED,
    },
)

_S = StepRunStatus
STEP_RUN_MACHINE: Final[Machine[StepRunStatus]] = Machine(
    "step run",
    {
        (_S.PENDING, Trigger.START): _S.RUNNING,
        (_S.PENDING, Trigger.REQUEST_APPROVAL): _S.WAITING_APPROVAL,
        (_S.PENDING, Trigger.SKIP): _S.SKIPPED,
        # It could not even start: its condition or fan-out failed to evaluate, or its gate
        # cannot be served.
        (_S.PENDING, Trigger.FAIL): _S.FAILED,
        (_S.PENDING, Trigger.CANCEL): _S.CANCELLED,
        # Started once its approval is granted.
        (_S.WAITING_APPROVAL, Trigger.START): _S.RUNNING,
        # Its approval was rejected or expired.
        (_S.WAITING_APPROVAL, Trigger.FAIL): _S.FAILED,
        (_S.WAITING_APPROVAL, Trigger.CANCEL): _S.CANCELLED,
        (_S.RUNNING, Trigger.SUCCEED): _S.SUCCEEDED,
        (_S.RUNNING, Trigger.FAIL): _S.FAILED,
        (_S.RUNNING, Trigger.RETRY): _S.RETRYING,
        (_S.RUNNING, Trigger.TIME_OUT): _S.TIMED_OUT,
        (_S.RUNNING, Trigger.CANCEL): _S.CANCELLED,
        (_S.RUNNING, Trigger.INTERRUPT): _S.INTERRUPTED,
        (_S.RETRYING, Trigger.START): _S.RUNNING,
        # The execution's deadline passed while the next attempt was due.
        (_S.RETRYING, Trigger.FAIL): _S.FAILED,
        (_S.RETRYING, Trigger.CANCEL): _S.CANCELLED,
        # Compensation: the status stays ``succeeded`` while it runs and retries (events only).
        (_S.SUCCEEDED, Trigger.COMPENSATE): _S.ROLLED_BACK,
        (_S.SUCCEEDED, Trigger.FAIL_ROLLBACK): _S.ROLLBACK_FAILED,
        # An operator's ``retry_step``: the run starts afresh, from attempt 1.
        (_S.FAILED, Trigger.RERUN): _S.PENDING,
        (_S.TIMED_OUT, Trigger.RERUN): _S.PENDING,
        (_S.INTERRUPTED, Trigger.RERUN): _S.PENDING,
        (_S.CANCELLED, Trigger.RERUN): _S.PENDING,
    },
)

_A = ApprovalStatus
APPROVAL_MACHINE: Final[Machine[ApprovalStatus]] = Machine(
    "approval",
    {
        (_A.PENDING, Trigger.APPROVE): _A.GRANTED,
        (_A.PENDING, Trigger.REJECT): _A.REJECTED,
        (_A.PENDING, Trigger.EXPIRE): _A.EXPIRED,
        (_A.PENDING, Trigger.ESCALATE): _A.ESCALATED,
        (_A.PENDING, Trigger.SUPERSEDE): _A.SUPERSEDED,
        (_A.PENDING, Trigger.CANCEL): _A.CANCELLED,
    },
)

EXECUTION_TERMINAL: Final = frozenset(
    {_E.SUCCEEDED, _E.FAILED, _E.CANCELLED, _E.ROLLED_BACK, _E.ROLLBACK_FAILED}
)
STEP_RUN_TERMINAL: Final = frozenset(
    {
        _S.SUCCEEDED,
        _S.FAILED,
        _S.SKIPPED,
        _S.CANCELLED,
        _S.TIMED_OUT,
        _S.INTERRUPTED,
        _S.ROLLED_BACK,
        _S.ROLLBACK_FAILED,
    }
)
APPROVAL_TERMINAL: Final = frozenset(set(ApprovalStatus) - {_A.PENDING})


def next_status(
    machine: Machine[StatusT], current: StatusT, trigger: Trigger, *, entity_id: str
) -> StatusT:
    """The status ``trigger`` leads to from ``current``; anything the table omits is refused."""
    try:
        return machine.transitions[current, trigger]
    except KeyError:
        raise InvalidTransitionError(machine.entity, entity_id, current, trigger) from None
