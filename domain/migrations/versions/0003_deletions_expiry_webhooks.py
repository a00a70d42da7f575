"""Deletions that cascade in the background, expiry marks, webhook ids and job totals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("tenants", "users"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    for table in ("access_tokens", "client_credentials"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
            batch.create_index(
                f"ix_{table}_expiry_pending",
                ["expires_at"],
                unique=False,
                postgresql_where=sa.text("expired_at IS NULL"),
                sqlite_where=sa.text("expired_at IS NULL"),
            )
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("scope", sa.String(length=300), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"], unique=False
    )
    op.create_table(
        "job_stats",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("runs", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", "outcome", name=op.f("pk_job_stats")),
    )


def downgrade() -> None:
    op.drop_table("job_stats")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("scope")
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    for table in ("access_tokens", "client_credentials"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_expiry_pending")
            batch.drop_column("expired_at")
    for table in ("tenants", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("deleted_at")
