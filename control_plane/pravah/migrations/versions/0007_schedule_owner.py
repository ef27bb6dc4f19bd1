"""Schedule ownership: schedules belong to the owner of the key that made them.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add schedules.owner (null for schedules made before ownership: admins only)."""
    op.add_column("schedules", sa.Column("owner", sa.String(length=200), nullable=True))
    op.create_index("ix_schedules_owner", "schedules", ["owner"])


def downgrade() -> None:
    """Drop schedules.owner."""
    op.drop_index("ix_schedules_owner", table_name="schedules")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("owner")
