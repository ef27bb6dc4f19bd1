"""Jobs carry the server-side encryption of the objects they write to S3.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add jobs.encryption (null: the settings' default)."""
    op.add_column("jobs", sa.Column("encryption", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop jobs.encryption."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("encryption")
