"""Schedules: a misfire grace period per schedule, and idempotency keys.

``schedules.misfire_grace_seconds`` is how late a fire may be and still run as on time (older
schedules get 60 s); ``schedules.idempotency_key`` lets ``schedule_workflow`` be called twice
with one key and create one schedule, unique per owner.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite adds both columns in place (ALTER TABLE ADD COLUMN): no table rebuild.
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(
            sa.Column("misfire_grace_seconds", sa.Integer(), nullable=False, server_default="60")
        )
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index(
        "ix_schedules_owner_idempotency_key",
        "schedules",
        ["owner", "idempotency_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_schedules_owner_idempotency_key", table_name="schedules")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("idempotency_key")
        batch.drop_column("misfire_grace_seconds")
