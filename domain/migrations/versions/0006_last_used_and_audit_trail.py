"""Last use of every token (when, from which addresses), the unused-token warning mark, the audit
trail's actor address and request id, and the permission that lets an account admin read it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The namespace of the built-in permissions' ids (0001): every installation names them alike.
_PERMISSION_NAMESPACE = uuid.UUID("6f1c6f43-2a43-4d0e-9a57-3c1a9e0f5b11")
READ_AUDITS = "fe.secure.read.audits"

_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    for table in ("access_tokens", "client_credentials"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(
                sa.Column(
                    "last_used_addresses", _JSON, nullable=False, server_default=sa.text("'[]'")
                )
            )
            batch.add_column(
                sa.Column("unused_warning_at", sa.DateTime(timezone=True), nullable=True)
            )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("actor_address", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
        batch.create_index("ix_audit_events_tenant_id_id", ["tenant_id", "id"], unique=False)
    now = datetime.now(UTC)
    permissions = sa.table(
        "permissions",
        sa.column("id", sa.String),
        sa.column("key", sa.String),
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("category_id", sa.String),
        sa.column("fe_permission", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        permissions,
        [
            {
                "id": str(uuid.uuid5(_PERMISSION_NAMESPACE, READ_AUDITS)),
                "key": READ_AUDITS,
                "name": "Read audit logs",
                "description": "Allows to read the account's audit trail",
                "category_id": None,
                "fe_permission": True,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM permissions WHERE key = :key").bindparams(key=READ_AUDITS))
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_tenant_id_id")
        batch.drop_column("request_id")
        batch.drop_column("actor_address")
    for table in ("access_tokens", "client_credentials"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("unused_warning_at")
            batch.drop_column("last_used_addresses")
            batch.drop_column("last_used_at")
