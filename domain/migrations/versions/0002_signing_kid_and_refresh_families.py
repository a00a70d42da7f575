"""Which key signed each access token, and refresh-token families for reuse detection.

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


def upgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("signing_kid", sa.String(length=64), nullable=True))
        batch.create_index("ix_access_tokens_signing_kid", ["signing_kid"], unique=False)
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("family_id", sa.String(length=36), nullable=True))
    # Rows from before this revision each start a family of their own.
    op.execute("UPDATE refresh_tokens SET family_id = id WHERE family_id IS NULL")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.alter_column("family_id", existing_type=sa.String(length=36), nullable=False)
        batch.create_index("ix_refresh_tokens_family_id", ["family_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_index("ix_refresh_tokens_family_id")
        batch.drop_column("family_id")
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_index("ix_access_tokens_signing_kid")
        batch.drop_column("signing_kid")
