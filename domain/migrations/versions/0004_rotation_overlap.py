"""Rotation with an overlap: a credential's previous secret and its end, a rolled access token's
successor.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("client_credentials") as batch:
        batch.add_column(sa.Column("previous_secret_hash", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("previous_secret_used_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("replaced_by_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("replaced_by_id")
    with op.batch_alter_table("client_credentials") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("previous_secret_used_at")
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_hash")
