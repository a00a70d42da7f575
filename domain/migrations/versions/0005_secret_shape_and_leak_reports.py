"""Client secrets found by value (leak reports), and the leaks reports acted on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("client_credentials") as batch:
        batch.add_column(sa.Column("secret_lookup", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(
            op.f("uq_client_credentials_secret_lookup"), ["secret_lookup"]
        )
        batch.add_column(sa.Column("previous_secret_lookup", sa.String(length=64), nullable=True))
        batch.create_index(
            op.f("ix_client_credentials_previous_secret_lookup"), ["previous_secret_lookup"]
        )
    op.create_table(
        "leak_reports",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=255), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "action", name=op.f("pk_leak_reports")),
    )


def downgrade() -> None:
    op.drop_table("leak_reports")
    with op.batch_alter_table("client_credentials") as batch:
        batch.drop_index(op.f("ix_client_credentials_previous_secret_lookup"))
        batch.drop_column("previous_secret_lookup")
        batch.drop_constraint(op.f("uq_client_credentials_secret_lookup"), type_="unique")
        batch.drop_column("secret_lookup")
