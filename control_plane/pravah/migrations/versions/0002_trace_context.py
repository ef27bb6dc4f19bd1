"""Jobs carry the trace context of the request that created them.

The worker starts its span with this context as parent, so a job is one
trace from `POST /jobs` to the engine (see pravah.telemetry).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add jobs.trace_context (nullable JSON)."""
    op.add_column("jobs", sa.Column("trace_context", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop jobs.trace_context."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trace_context")
