"""Per-file results expire: jobs record when theirs were removed.

Why: a nightly `pravah run` or schedule left every run's results in the
state folder for ever (500,000 CSV headers are some 50 MB a run). The row,
its counts and summary stay; the workspace goes once it is older than
PRAVAH_RESULTS_RETENTION, and `results_removed_at` lets the API say so
instead of "no results". The index serves the sweep that finds them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add jobs.results_removed_at and an index on finished_at."""
    op.add_column(
        "jobs", sa.Column("results_removed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("results_removed_at")
