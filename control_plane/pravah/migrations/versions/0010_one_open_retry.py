"""At most one unfinished retry of a job.

Why: a retry of a job's failed files is a new job over the same files.
Two at once (a double click, or clients retrying a request) processed
every file twice: ten concurrent POSTs made ten retry jobs. A unique index
over the retries that are pending or running makes the store refuse the
second, whatever the timing; `create_retry_job` answers 409 naming the
first. A finished retry no longer counts, so a job can be retried again.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

OPEN_RETRY = "retry_of IS NOT NULL AND status IN ('pending', 'running')"
# The same condition, spelled out in the queries below (no SQL built from strings).
DUPLICATED = (
    "SELECT retry_of FROM jobs WHERE retry_of IS NOT NULL AND status IN ('pending', 'running') "
    "GROUP BY retry_of HAVING COUNT(*) > 1"
)
OPEN_OF = (
    "SELECT id FROM jobs WHERE retry_of = :p AND status IN ('pending', 'running') "
    "ORDER BY created_at, id"
)


def upgrade() -> None:
    """Add ux_jobs_open_retry, after cancelling all but the oldest open retry
    of a job where several were made before (the index could not be built)."""
    bind = op.get_bind()
    duplicates = bind.execute(sa.text(DUPLICATED)).all()
    if duplicates:
        for (parent,) in duplicates:
            rows = bind.execute(sa.text(OPEN_OF), {"p": parent}).all()
            for (job_id,) in rows[1:]:
                bind.execute(
                    sa.text(
                        "UPDATE jobs SET status = 'cancelled', finished_at = :now, "
                        "updated_at = :now, error = 'cancelled: a second retry of the same "
                        "job, made before retries were limited to one at a time' WHERE id = :id"
                    ),
                    {"id": job_id, "now": datetime.now(UTC)},
                )
    op.create_index(
        "ux_jobs_open_retry",
        "jobs",
        ["retry_of"],
        unique=True,
        sqlite_where=sa.text(OPEN_RETRY),
        postgresql_where=sa.text(OPEN_RETRY),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ux_jobs_open_retry", table_name="jobs")
