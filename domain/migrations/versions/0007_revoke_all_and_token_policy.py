"""Revoke-all marks on tenants and users, account token policies, the tokenPolicy permissions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The namespace the first migration seeds the fe.secure permissions under: stable ids.
_PERMISSION_NAMESPACE = uuid.UUID("6f1c6f43-2a43-4d0e-9a57-3c1a9e0f5b11")
TOKEN_POLICY_PERMISSIONS = [
    ("fe.secure.read.tokenPolicy", "Read the account token policy"),
    ("fe.secure.write.tokenPolicy", "Write the account token policy"),
]


def upgrade() -> None:
    for table in ("tenants", "users"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("tokens_revoked_at", sa.DateTime(timezone=True), nullable=True)
            )
    op.create_table(
        "token_policies",
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("max_expires_in_minutes", sa.Integer(), nullable=True),
        sa.Column("require_expiration", sa.Boolean(), nullable=False),
        sa.Column("max_rotation_overlap_minutes", sa.Integer(), nullable=True),
        sa.Column("max_user_api_tokens", sa.Integer(), nullable=True),
        sa.Column("max_tenant_api_tokens", sa.Integer(), nullable=True),
        sa.Column("max_user_access_tokens", sa.Integer(), nullable=True),
        sa.Column("max_tenant_access_tokens", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_token_policies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_token_policies")),
    )
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
                "id": str(uuid.uuid5(_PERMISSION_NAMESPACE, key)),
                "key": key,
                "name": name,
                "description": f"Allows to {name[0].lower() + name[1:]}",
                "category_id": None,
                "fe_permission": True,
                "created_at": now,
                "updated_at": now,
            }
            for key, name in TOKEN_POLICY_PERMISSIONS
        ],
    )


def downgrade() -> None:
    keys = [key for key, _ in TOKEN_POLICY_PERMISSIONS]
    op.execute(
        sa.text("DELETE FROM permissions WHERE key IN :keys").bindparams(
            sa.bindparam("keys", keys, expanding=True)
        )
    )
    op.drop_table("token_policies")
    for table in ("tenants", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tokens_revoked_at")
