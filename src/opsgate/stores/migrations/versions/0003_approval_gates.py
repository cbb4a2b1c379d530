"""Approval gates: which gate of a step an approval instance stands for.

A step can be held by several gates at once: its blueprint's own ``approval:`` (gate
``approval``) and one per matching ``require_approval`` policy rule (gate ``policy:<rule id>``).
Each needs its own quorum, so an approval row names its gate. Rows from before this revision are
blueprint gates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(
            sa.Column("gate", sa.String(200), nullable=False, server_default="approval")
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("gate")
