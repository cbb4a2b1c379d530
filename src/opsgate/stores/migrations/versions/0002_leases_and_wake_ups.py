"""Leases and wake-ups: when an execution next has something to do, and cancels with cleanup.

``executions.wake_at`` (NULL: now) keeps workers from claiming an execution before its next due
retry or the end of a ``wait``; ``executions.cancel_cleanup`` records that a cancel asked for the
rollback plan. ``ix_executions_wake`` serves the claim and the worker's "sleep until" query.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # SQLite adds both columns in place (ALTER TABLE ADD COLUMN): no table rebuild.
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("wake_at", TIMESTAMP, nullable=True))
        batch.add_column(
            sa.Column("cancel_cleanup", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index("ix_executions_wake", "executions", ["status", "wake_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_wake", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("cancel_cleanup")
        batch.drop_column("wake_at")
