"""SQLAlchemy tables: the environment, signing keys, directory, tokens, job runs and audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID_LENGTH = 255
TOKEN_ID_LENGTH = 36

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone on its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


ENVIRONMENT_ROW_ID = 1


class Environment(Base):
    """The single row of environment settings (Frontegg's vendor configuration)."""

    __tablename__ = "environment"

    id: Mapped[int] = mapped_column(primary_key=True)
    api_tokens_enabled: Mapped[bool]
    m2m_strategy: Mapped[str] = mapped_column(sa.String(32))
    default_token_expiration: Mapped[int]
    default_refresh_token_expiration: Mapped[int]
    # The other VendorConfig fields: stored and echoed, they steer nothing here.
    extra: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class SigningKey(Base):
    """An RS256 key pair; the private half is encrypted with M2M_MASTER_KEY."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(sa.Text)
    private_key_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Set by the deletion: the tenant is gone for every reader from then on, and the cascade
    # job deletes its rows in batches and finally the tenant itself.
    deleted_at: Mapped[datetime | None]
    # Set by "revoke every token": every token in the tenant made until then is gone for every
    # reader, and the cascade job deletes those rows in batches (domain/tokens.py, "revoke").
    tokens_revoked_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    name: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    # Frontegg keeps user metadata as a stringified JSON object.
    metadata_json: Mapped[str] = mapped_column("metadata", sa.Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # As Tenant.deleted_at: gone for every reader; the cascade job removes the rows.
    deleted_at: Mapped[datetime | None]
    # As Tenant.tokens_revoked_at, for the user's personal tokens.
    tokens_revoked_at: Mapped[datetime | None]


class Permission(Base):
    __tablename__ = "permissions"

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(ID_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.Text)
    category_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    fe_permission: Mapped[bool]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Role(Base):
    """A role of the whole environment (tenant_id NULL) or of one tenant."""

    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    name: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.Text)
    is_default: Mapped[bool]
    first_user_role: Mapped[bool]
    level: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# Role keys are unique per scope; NULL (environment-wide) counts as one scope.
sa.Index("uq_roles_scope_key", sa.func.coalesce(Role.tenant_id, ""), Role.key, unique=True)

role_permissions = sa.Table(
    "role_permissions",
    Base.metadata,
    sa.Column("role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "permission_id",
        sa.ForeignKey("permissions.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

user_roles = sa.Table(
    "user_roles",
    Base.metadata,
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tenant_id", sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class AccessToken(Base):
    """A long-lived access token: a tenant token when user_id is NULL, else a user token.

    The token itself is a signed JWT whose `sub` is this row's id; it is never stored.
    """

    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_by_user_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # The key that signed it: kept published in JWKS while such a token can still be valid.
    signing_kid: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # When the expiry job saw it expired (audit and cleanup done); validity reads expires_at.
    expired_at: Mapped[datetime | None]
    # The token it was rolled into: this one lives until the overlap ends (its expires_at), and
    # the expiry job then deletes it rather than keeping it listed as expired.
    replaced_by_id: Mapped[str | None] = mapped_column(sa.String(TOKEN_ID_LENGTH))
    # The last use (a successful validation; a credential's exchange or refresh), written in
    # batches by domain/last_used.py, and the last distinct addresses it came from, newest first.
    last_used_at: Mapped[datetime | None]
    last_used_addresses: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    # When the unused-token policy warned that it would delete this token; cleared by a use.
    unused_warning_at: Mapped[datetime | None]


def _not_yet_expired_index(table: Any) -> sa.Index:
    """What the expiry job looks through every minute: rows it has not marked yet."""
    pending = table.expired_at.is_(None)
    name = f"ix_{table.__tablename__}_expiry_pending"
    return sa.Index(name, table.expires_at, postgresql_where=pending, sqlite_where=pending)


_not_yet_expired_index(AccessToken)

access_token_roles = sa.Table(
    "access_token_roles",
    Base.metadata,
    sa.Column("token_id", sa.ForeignKey("access_tokens.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class ClientCredential(Base):
    """A clientId/secret pair: a tenant credential when user_id is NULL, else a user one."""

    __tablename__ = "client_credentials"

    client_id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_by_user_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    description: Mapped[str | None] = mapped_column(sa.Text)
    metadata_json: Mapped[dict[str, Any]] = mapped_column("metadata")
    secret_hash: Mapped[str] = mapped_column(sa.String(255))
    # SHA-256 of a secret of the recognisable shape, by which a leak report finds it; NULL for
    # secrets made before the shape existed (a leak report cannot find those by value).
    secret_lookup: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # When the expiry job saw it expired (audit and cleanup done); validity reads expires_at.
    expired_at: Mapped[datetime | None]
    # Rotation: the secret replaced last, which exchanges too while previous_secret_expires_at is
    # in the future (cleared when the owner ends the overlap early), and its last use since.
    rotated_at: Mapped[datetime | None]
    previous_secret_hash: Mapped[str | None] = mapped_column(sa.String(255))
    # The previous secret's SHA-256, by which a leak report finds it during the overlap.
    previous_secret_lookup: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    previous_secret_expires_at: Mapped[datetime | None]
    previous_secret_used_at: Mapped[datetime | None]
    # The last use (a successful validation; a credential's exchange or refresh), written in
    # batches by domain/last_used.py, and the last distinct addresses it came from, newest first.
    last_used_at: Mapped[datetime | None]
    last_used_addresses: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)
    # When the unused-token policy warned that it would delete this token; cleared by a use.
    unused_warning_at: Mapped[datetime | None]


_not_yet_expired_index(ClientCredential)

credential_roles = sa.Table(
    "credential_roles",
    Base.metadata,
    sa.Column(
        "client_id",
        sa.ForeignKey("client_credentials.client_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)

credential_permissions = sa.Table(
    "credential_permissions",
    Base.metadata,
    sa.Column(
        "client_id",
        sa.ForeignKey("client_credentials.client_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "permission_id",
        sa.ForeignKey("permissions.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class RefreshToken(Base):
    """An opaque, single-use refresh token, stored only as the SHA-256 of its value."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (sa.Index("ix_refresh_tokens_client_created", "client_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        sa.ForeignKey("client_credentials.client_id", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    parent_id: Mapped[str | None] = mapped_column(sa.String(TOKEN_ID_LENGTH))
    # Every token rotated from one exchange shares its family: reuse revokes the family.
    family_id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class TokenPolicy(Base):
    """An account's token policy: limits on the tokens made in it. NULL: no limit."""

    __tablename__ = "token_policies"

    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    max_expires_in_minutes: Mapped[int | None]
    require_expiration: Mapped[bool]
    max_rotation_overlap_minutes: Mapped[int | None]
    # The most tokens of each kind: per user for personal kinds, per account for its own.
    max_user_api_tokens: Mapped[int | None]
    max_tenant_api_tokens: Mapped[int | None]
    max_user_access_tokens: Mapped[int | None]
    max_tenant_access_tokens: Mapped[int | None]
    updated_at: Mapped[datetime]


class JobRun(Base):
    """One run of a background job: what ran, when, how it ended and what it counted."""

    __tablename__ = "job_runs"
    __table_args__ = (sa.Index("ix_job_runs_job_started", "job", "started_at"),)

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    job: Mapped[str] = mapped_column(sa.String(64))
    # What a run was asked to do beyond its periodic sweep ("user_id=…", "client_id=…"); NULL
    # for the sweep itself, the run that /ops/jobs watches for being overdue.
    scope: Mapped[str | None] = mapped_column(sa.String(300))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(sa.String(16))
    counts: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(sa.Text)


class JobStat(Base):
    """Running totals per job and outcome, for /metrics: they never go down, unlike job_runs,
    which the expiry job trims."""

    __tablename__ = "job_stats"

    job: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    runs: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    seconds: Mapped[float]
    last_finished_at: Mapped[datetime]


class WebhookDelivery(Base):
    """A received webhook's `webhook-id`: a replay of it changes nothing."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)


class LeakReport(Base):
    """A leaked value a report acted on (by the SHA-256 of the value, never the value): the same
    leak reported again, or concurrently, acts once. `action` is what the leak policy did
    (`revoked` or `notified`), so a leak only recorded under `notify` is still revoked when it is
    reported again under `revoke`."""

    __tablename__ = "leak_reports"

    fingerprint: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    target_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    tenant_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    source: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    url: Mapped[str | None] = mapped_column(sa.Text)
    reported_at: Mapped[datetime]


class AuditEvent(Base):
    """Who did what to which object, and when. Never carries a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_events_target", "target_type", "target_id"),
        # An account's trail, newest first, a page at a time.
        sa.Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(index=True)
    actor_type: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str] = mapped_column(sa.String(32))
    target_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH))
    tenant_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), index=True)
    details: Mapped[dict[str, Any]]
    # Where the acting request came from (its client address) and its request id; NULL for jobs.
    actor_address: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(128))


class EventEndpoint(Base):
    """A vendor's receiver of outbound events: where to, which event types, and its signing
    secret (encrypted with M2M_MASTER_KEY: the service must sign with it, so no hash will do)."""

    __tablename__ = "event_endpoints"

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    description: Mapped[str | None] = mapped_column(sa.Text)
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    enabled: Mapped[bool]
    secret_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Why and when the service turned it off (failing too long); None while it is on, or when
    # the vendor turned it off.
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The first failure of the current run of failures; None after any success.
    failing_since: Mapped[datetime | None]


class OutboundEvent(Base):
    """The outbox: an event, written in the transaction of the change it announces."""

    __tablename__ = "outbound_events"
    __table_args__ = (
        sa.Index(
            "ix_outbound_events_undispatched",
            "occurred_at",
            postgresql_where=sa.text("dispatched_at IS NULL"),
            sqlite_where=sa.text("dispatched_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]
    # When the delivery job made its deliveries (one per endpoint subscribed then); None: not yet.
    dispatched_at: Mapped[datetime | None]
    # An event that must be announced once (an expiry warning): a second announce is dropped.
    once_key: Mapped[str | None] = mapped_column(sa.String(300), unique=True)


class EventDelivery(Base):
    """One event to one endpoint: delivered at least once, retried until delivered or given up."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        sa.Index("ix_event_deliveries_endpoint_created", "endpoint_id", "created_at"),
        sa.Index(
            "ix_event_deliveries_due",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(TOKEN_ID_LENGTH), primary_key=True)
    event_id: Mapped[str] = mapped_column(
        sa.ForeignKey("outbound_events.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(
        sa.ForeignKey("event_endpoints.id", ondelete="CASCADE")
    )
    # pending (to send, at next_attempt_at), delivered, failed (given up).
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int]
    created_at: Mapped[datetime]
    # Also the lease of a worker sending it: set ahead before sending, so a worker killed
    # mid-delivery leaves it due again once the lease has passed.
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_latency_ms: Mapped[int | None]


class EventDeliveryAttempt(Base):
    """One try at a delivery, for the endpoint's delivery log."""

    __tablename__ = "event_delivery_attempts"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(
        sa.ForeignKey("event_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    latency_ms: Mapped[int]
