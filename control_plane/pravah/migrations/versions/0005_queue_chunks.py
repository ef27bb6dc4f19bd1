"""Durable queue: priorities, backoff, per-job attempts and timeout, chunk
checkpoints (`job_chunks`), the claim history (`job_claims`), lineages.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pravah.models import UTCDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the queue columns of jobs and the job_chunks and job_claims tables."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("run_after", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("listing", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("lineage", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("incremental", sa.String(length=8), server_default="off", nullable=False)
        )
        batch.add_column(sa.Column("retry_of", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("schedule_id", sa.String(length=36), nullable=True))
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "created_at"])
    op.create_table(
        "job_chunks",
        sa.Column(
            "job_id",
            sa.String(length=36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("engine", sa.String(length=200), nullable=True),
        sa.Column("files_done", sa.BigInteger(), nullable=False),
        sa.Column("files_failed", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_failed", sa.BigInteger(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "job_claims",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
    )
    op.create_index("ix_job_claims_job_id", "job_claims", ["job_id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_job_claims_job_id", table_name="job_claims")
    op.drop_table("job_claims")
    op.drop_table("job_chunks")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "schedule_id",
            "retry_of",
            "incremental",
            "lineage",
            "listing",
            "timeout_seconds",
            "max_attempts",
            "run_after",
            "priority",
        ):
            batch.drop_column(name)
