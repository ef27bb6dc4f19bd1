"""Jobs say whether they left per-file results.

Clients (the dashboard, the CLI) read it instead of asking for results that
do not exist.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add jobs.results_available (false for existing rows without results)."""
    op.add_column(
        "jobs",
        sa.Column("results_available", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    """Drop jobs.results_available."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("results_available")
