"""The database tables, as SQLModel classes with a ``Row`` suffix, and their column types.

Only the store touches these; everything else works with the records of :mod:`opsgate.models`.
The store writes with SQLAlchemy Core on ``Row.__table__`` (see :func:`table_of`): the ORM
session costs several times a raw commit on the hot path.

Column types that differ between the databases are decided here, once:

- enums are stored as their values in plain strings (never a PostgreSQL ENUM of member names,
  and no CHECK constraint, so adding a member needs no table rebuild on SQLite);
- datetimes go in and come out as aware UTC on both databases (:class:`UTCDateTime`);
- JSON documents are JSONB on PostgreSQL and JSON text on SQLite.

No ``from __future__ import annotations`` here: SQLModel reads the annotations at class creation.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from opsgate.engine.statuses import ApprovalStatus, ExecutionStatus, StepRunStatus
from opsgate.models import (
    ApprovalDecisionKind,
    Channel,
    EventType,
    FireOutcome,
    LockStatus,
    MisfirePolicy,
    OnTimeout,
    OverlapPolicy,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: opsgate's own metadata, so that Alembic compares exactly opsgate's tables.
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on both databases; a naive datetime is refused.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC text and given its UTC zone back when read.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: opsgate stores aware times only; "
                "pass datetime.now(UTC) or a datetime with a tzinfo"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def value_enum(enum: type[StrEnum], length: int = 32) -> sa.Enum:
    """A string column holding the enum's values (``"waiting_approval"``), not member names."""
    return sa.Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        validate_strings=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
    )


JSONDocument = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
#: An autoincrementing 64-bit key; SQLite only autoincrements an ``INTEGER PRIMARY KEY``.
BigIdentity = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ID = sa.String(40)
NAME = sa.String(200)
DIGEST = sa.String(64)


class _Row(SQLModel, registry=registry(metadata=metadata)):
    """Base of opsgate's tables: binds them to :data:`metadata` instead of SQLModel's global one."""


class BlueprintSnapshotRow(_Row, table=True):
    __tablename__ = "blueprint_snapshots"

    digest: str = Field(primary_key=True, sa_type=DIGEST)
    name: str = Field(sa_type=NAME, index=True)
    version: str = Field(sa_type=sa.String(64))
    content: dict[str, Any] = Field(sa_type=JSONDocument)
    created_at: datetime = Field(sa_type=UTCDateTime())


class ScheduleRow(_Row, table=True):
    __tablename__ = "schedules"
    __table_args__ = (
        sa.Index("ix_schedules_due", "enabled", "next_fire_at"),
        # schedule_workflow(idempotency_key=...): one schedule per owner and key.
        sa.Index("ix_schedules_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )

    id: str = Field(primary_key=True, sa_type=ID)
    workflow_name: str = Field(sa_type=NAME, index=True)
    cron: str = Field(sa_type=sa.String(200))
    timezone: str = Field(sa_type=sa.String(64))
    parameters: dict[str, Any] = Field(sa_type=JSONDocument)
    overlap_policy: OverlapPolicy = Field(sa_type=value_enum(OverlapPolicy))
    misfire_policy: MisfirePolicy = Field(sa_type=value_enum(MisfirePolicy))
    owner: str = Field(sa_type=NAME)
    enabled: bool
    start_at: datetime | None = Field(sa_type=UTCDateTime())
    end_at: datetime | None = Field(sa_type=UTCDateTime())
    next_fire_at: datetime | None = Field(sa_type=UTCDateTime())
    last_fire_at: datetime | None = Field(sa_type=UTCDateTime())
    last_outcome: FireOutcome | None = Field(sa_type=value_enum(FireOutcome))
    catchup_window_seconds: int
    #: A fire this late is still on time; later ones are misfires.
    misfire_grace_seconds: int = Field(default=60, sa_column_kwargs={"server_default": "60"})
    idempotency_key: str | None = Field(default=None, sa_type=NAME)
    created_at: datetime = Field(sa_type=UTCDateTime())
    updated_at: datetime = Field(sa_type=UTCDateTime())
    #: Schedules are deleted softly: their fires, executions and events keep pointing at them.
    deleted_at: datetime | None = Field(sa_type=UTCDateTime())


class ExecutionRow(_Row, table=True):
    __tablename__ = "executions"
    __table_args__ = (
        sa.UniqueConstraint("requested_by", "idempotency_key"),
        # Claiming: runnable statuses whose lease is missing or expired, and that are awake.
        sa.Index("ix_executions_claim", "status", "lease_expires_at"),
        sa.Index("ix_executions_wake", "status", "wake_at"),
        # Listing, newest first, with keyset pagination on (created_at, id).
        sa.Index("ix_executions_created", "created_at", "id"),
        sa.Index("ix_executions_workflow_created", "workflow_name", "created_at", "id"),
        sa.Index("ix_executions_status_created", "status", "created_at", "id"),
        # Overlap policies: is an execution of this schedule still active?
        sa.Index("ix_executions_schedule", "schedule_id", "status"),
    )

    id: str = Field(primary_key=True, sa_type=ID)
    workflow_name: str = Field(sa_type=NAME)
    blueprint_digest: str = Field(foreign_key="blueprint_snapshots.digest", sa_type=DIGEST)
    parameters: dict[str, Any] = Field(sa_type=JSONDocument)
    status: ExecutionStatus = Field(sa_type=value_enum(ExecutionStatus))
    requested_by: str = Field(sa_type=NAME)
    idempotency_key: str | None = Field(sa_type=NAME)
    plan_digest: str | None = Field(sa_type=DIGEST)
    parent_execution_id: str | None = Field(foreign_key="executions.id", sa_type=ID, index=True)
    schedule_id: str | None = Field(foreign_key="schedules.id", sa_type=ID)
    lease_owner: str | None = Field(sa_type=NAME)
    lease_expires_at: datetime | None = Field(sa_type=UTCDateTime())
    #: When the execution next has something to do (a due retry, a ``wait``); NULL: now.
    wake_at: datetime | None = Field(sa_type=UTCDateTime())
    #: A cancel asked for the rollback plan to run.
    cancel_cleanup: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    last_seq: int
    current_sub_task: str | None = Field(sa_type=sa.Text)
    progress: float | None
    error: dict[str, Any] | None = Field(sa_type=JSONDocument)
    created_at: datetime = Field(sa_type=UTCDateTime())
    started_at: datetime | None = Field(sa_type=UTCDateTime())
    finished_at: datetime | None = Field(sa_type=UTCDateTime())
    deadline_at: datetime | None = Field(sa_type=UTCDateTime(), index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime())


class StepRunRow(_Row, table=True):
    __tablename__ = "step_runs"
    __table_args__ = (
        sa.UniqueConstraint("execution_id", "step_id", "item_key"),
        # Retries that are due.
        sa.Index("ix_step_runs_due", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, sa_type=ID)
    execution_id: str = Field(foreign_key="executions.id", ondelete="CASCADE", sa_type=ID)
    step_id: str = Field(sa_type=NAME)
    #: The fan-out item (usually the target name); empty for a step that does not fan out.
    item_key: str = Field(sa_type=sa.String(255))
    item_index: int | None
    target: str | None = Field(sa_type=sa.String(255))
    status: StepRunStatus = Field(sa_type=value_enum(StepRunStatus))
    attempt: int
    next_attempt_at: datetime | None = Field(sa_type=UTCDateTime())
    started_at: datetime | None = Field(sa_type=UTCDateTime())
    finished_at: datetime | None = Field(sa_type=UTCDateTime())
    outputs: dict[str, Any] | None = Field(sa_type=JSONDocument)
    error: dict[str, Any] | None = Field(sa_type=JSONDocument)
    created_at: datetime = Field(sa_type=UTCDateTime())
    updated_at: datetime = Field(sa_type=UTCDateTime())


class ApprovalRow(_Row, table=True):
    __tablename__ = "approvals"
    __table_args__ = (
        # Deadline sweeps and the pending list.
        sa.Index("ix_approvals_status_deadline", "status", "deadline_at"),
        sa.Index("ix_approvals_status_created", "status", "created_at", "id"),
        sa.Index("ix_approvals_execution", "execution_id", "step_id"),
    )

    id: str = Field(primary_key=True, sa_type=ID)
    execution_id: str = Field(foreign_key="executions.id", ondelete="CASCADE", sa_type=ID)
    step_id: str = Field(sa_type=NAME)
    #: Which gate of the step: ``approval`` (the blueprint's) or ``policy:<rule id>``.
    gate: str = Field(
        default="approval", sa_type=NAME, sa_column_kwargs={"server_default": "approval"}
    )
    status: ApprovalStatus = Field(sa_type=value_enum(ApprovalStatus))
    #: The digest of the step this approval is bound to; a changed plan supersedes it.
    digest: str = Field(sa_type=DIGEST)
    approvers: dict[str, Any] = Field(sa_type=JSONDocument)
    quorum: int
    allow_self_approval: bool
    response_schema: dict[str, Any] | None = Field(sa_type=JSONDocument)
    deadline_at: datetime | None = Field(sa_type=UTCDateTime())
    on_timeout: OnTimeout = Field(sa_type=value_enum(OnTimeout))
    escalate_to: dict[str, Any] | None = Field(sa_type=JSONDocument)
    requested_by: str = Field(sa_type=NAME)
    previous_approval_id: str | None = Field(foreign_key="approvals.id", sa_type=ID)
    created_at: datetime = Field(sa_type=UTCDateTime())
    decided_at: datetime | None = Field(sa_type=UTCDateTime())


class ApprovalDecisionRow(_Row, table=True):
    __tablename__ = "approval_decisions"
    __table_args__ = (sa.UniqueConstraint("approval_id", "principal", "decision"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIdentity)
    approval_id: str = Field(foreign_key="approvals.id", ondelete="CASCADE", sa_type=ID)
    principal: str = Field(sa_type=NAME)
    decision: ApprovalDecisionKind = Field(sa_type=value_enum(ApprovalDecisionKind))
    comment: str | None = Field(sa_type=sa.Text)
    channel: Channel = Field(sa_type=value_enum(Channel))
    response: dict[str, Any] | None = Field(sa_type=JSONDocument)
    decided_at: datetime = Field(sa_type=UTCDateTime())


class ScheduleFireRow(_Row, table=True):
    __tablename__ = "schedule_fires"
    __table_args__ = (sa.UniqueConstraint("schedule_id", "fire_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIdentity)
    schedule_id: str = Field(foreign_key="schedules.id", sa_type=ID)
    fire_at: datetime = Field(sa_type=UTCDateTime())
    outcome: FireOutcome = Field(sa_type=value_enum(FireOutcome))
    execution_id: str | None = Field(foreign_key="executions.id", ondelete="SET NULL", sa_type=ID)
    recorded_at: datetime = Field(sa_type=UTCDateTime())


class EventRow(_Row, table=True):
    __tablename__ = "events"
    __table_args__ = (
        # Gapless numbering per execution; also the index for reading an execution's log.
        sa.UniqueConstraint("execution_id", "seq"),
        sa.CheckConstraint("(execution_id IS NULL) = (seq IS NULL)", name="seq_with_execution"),
        sa.Index("ix_events_schedule", "schedule_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIdentity)
    execution_id: str | None = Field(foreign_key="executions.id", ondelete="CASCADE", sa_type=ID)
    schedule_id: str | None = Field(foreign_key="schedules.id", sa_type=ID)
    seq: int | None
    type: EventType = Field(sa_type=value_enum(EventType, length=64))
    actor: str = Field(sa_type=NAME)
    step_id: str | None = Field(sa_type=NAME)
    target: str | None = Field(sa_type=sa.String(255))
    attempt: int | None
    data: dict[str, Any] = Field(sa_type=JSONDocument)
    occurred_at: datetime = Field(sa_type=UTCDateTime())


class LockRow(_Row, table=True):
    __tablename__ = "locks"
    __table_args__ = (
        sa.UniqueConstraint("key", "execution_id"),
        # Holders and the queue of one key, in arrival order.
        sa.Index("ix_locks_key_status", "key", "status", "id"),
    )

    #: Arrival order: the queue is first come, first served.
    id: int | None = Field(default=None, primary_key=True, sa_type=BigIdentity)
    key: str = Field(sa_type=sa.String(500))
    execution_id: str = Field(
        foreign_key="executions.id", ondelete="CASCADE", sa_type=ID, index=True
    )
    status: LockStatus = Field(sa_type=value_enum(LockStatus))
    max_concurrent: int
    enqueued_at: datetime = Field(sa_type=UTCDateTime())
    acquired_at: datetime | None = Field(sa_type=UTCDateTime())


def table_of(row: type[_Row]) -> sa.Table:
    """The Core table behind a row class, typed for the store's statements."""
    table = row.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


blueprint_snapshots = table_of(BlueprintSnapshotRow)
schedules = table_of(ScheduleRow)
executions = table_of(ExecutionRow)
step_runs = table_of(StepRunRow)
approvals = table_of(ApprovalRow)
approval_decisions = table_of(ApprovalDecisionRow)
schedule_fires = table_of(ScheduleFireRow)
events = table_of(EventRow)
locks = table_of(LockRow)
