"""The SQL that fills validity-cache entries from PostgreSQL: one statement per validation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from domain.models import (
    ENVIRONMENT_ROW_ID,
    AccessToken,
    ClientCredential,
    Environment,
    Permission,
    Role,
    Tenant,
    User,
    access_token_roles,
    role_permissions,
    user_roles,
)
from domain.validity.entries import (
    DELETED,
    ENV_KEY,
    Principal,
    Table,
    TokenRow,
    Value,
    _microseconds,
    _tenant_key,
    _token_key,
    _user_key,
    incarnation,
)


def not_deleted(model: Any) -> sa.ColumnElement[bool]:
    """Not deleted: a tenant or user whose deletion is still cascading is gone already."""
    deleted_at: sa.ColumnElement[Any] = model.deleted_at
    return deleted_at.is_(None)


def generation_began(model: Any) -> sa.ColumnElement[Any]:
    """When the tokens of a tenant or user now alive began: its creation, or its last "revoke
    every token". The validity cache names an owner by this instant (its incarnation), so that
    the tombstone of one generation kills every cached token of it and none of the next."""
    return sa.func.coalesce(model.tokens_revoked_at, model.created_at)


def made_since_revocation(owner: Any, token_created_at: Any) -> sa.ColumnElement[bool]:
    """The token was made after its owner's last "revoke every token" (if any): the tokens made
    before are gone for every reader from that instant, while the cascade job deletes them."""
    revoked_at: sa.ColumnElement[Any] = owner.tokens_revoked_at
    return sa.or_(revoked_at.is_(None), token_created_at > revoked_at)


def live_owner(owner: Any, token: Any) -> sa.ColumnElement[bool]:
    """How a token (an AccessToken or ClientCredential row, or an alias of one) joins its Tenant
    or its User: the owner exists, is not deleted, and has not revoked every token since the
    token was made."""
    key = token.tenant_id if owner is Tenant else token.user_id
    return sa.and_(
        owner.id == key, not_deleted(owner), made_since_revocation(owner, token.created_at)
    )


def survived_revocations(model: Any) -> sa.ColumnElement[bool]:
    """A token of `model` (AccessToken or ClientCredential) made after the last "revoke every
    token" of its tenant and of its user."""
    tenant_took_it = (
        sa.select(Tenant.id)
        .where(Tenant.id == model.tenant_id, ~made_since_revocation(Tenant, model.created_at))
        .exists()
    )
    user_took_it = (
        sa.select(User.id)
        .where(User.id == model.user_id, ~made_since_revocation(User, model.created_at))
        .exists()
    )
    return sa.and_(~tenant_took_it, ~user_took_it)


# The token a fill reads, and the tokens a refill reads: bound at execution, so that each
# statement is built (and its SQL compiled) once, not on every first sight of a token.
TOKEN_ID = sa.bindparam("token_id", type_=sa.String)
TOKEN_IDS = sa.bindparam("token_ids", type_=sa.String, expanding=True)


def _grants_of_access_token() -> sa.Subquery:
    """(role key, permission key) rows of the access token TOKEN_ID: a tenant token's own
    roles, or the roles its user holds now in the token's tenant."""
    token = aliased(AccessToken, name="granting_token")
    given = (
        sa.select(access_token_roles.c.role_id)
        .where(access_token_roles.c.token_id == TOKEN_ID)
        .correlate(None)
    )
    held = (
        sa.select(user_roles.c.role_id)
        .join(
            token,
            sa.and_(
                token.user_id == user_roles.c.user_id, token.tenant_id == user_roles.c.tenant_id
            ),
        )
        .where(token.id == TOKEN_ID)
        .correlate(None)
    )
    return (
        sa.select(Role.key.label("role_key"), Permission.key.label("permission_key"))
        .select_from(Role)
        .outerjoin(role_permissions, role_permissions.c.role_id == Role.id)
        .outerjoin(Permission, Permission.id == role_permissions.c.permission_id)
        .where(sa.or_(Role.id.in_(given), Role.id.in_(held)))
        .subquery("grants")
    )


def _rows_and_owners(table: Table, *, many: bool) -> tuple[sa.Select[Any], Any]:
    """The switch, and the row (TOKEN_ID, or with `many` each of TOKEN_IDS) with its tenant
    and user; and the row's id column. One token's statement answers with the switch even
    when the row is gone; several tokens' answer a row per token found."""
    row: Any = AccessToken if table == "at" else ClientCredential
    row_id = AccessToken.id if table == "at" else ClientCredential.client_id
    statement = sa.select(
        Environment.api_tokens_enabled,
        row_id.label("row_id"),
        row.tenant_id,
        row.user_id,
        row.expires_at,
        generation_began(Tenant).label("tenant_created_at"),
        generation_began(User).label("user_created_at"),
    ).select_from(Environment)
    if many:
        statement = statement.join(row, row_id.in_(TOKEN_IDS))
    else:
        statement = statement.outerjoin(row, row_id == TOKEN_ID)
    statement = (
        statement.outerjoin(Tenant, live_owner(Tenant, row))
        .outerjoin(User, live_owner(User, row))
        .where(Environment.id == ENVIRONMENT_ROW_ID)
    )
    return statement, row_id


def _build_fill_statement(table: Table | None) -> sa.Select[Any]:
    """One statement for every entry a validation needs: the switch, the row TOKEN_ID, its
    tenant and user, and (access tokens) its roles and permissions. `table` None: the switch
    alone."""
    if table is None:
        return sa.select(Environment.api_tokens_enabled).where(Environment.id == ENVIRONMENT_ROW_ID)
    statement, _row_id = _rows_and_owners(table, many=False)
    if table == "at":
        grants = _grants_of_access_token()
        statement = statement.add_columns(grants.c.role_key, grants.c.permission_key).outerjoin(
            grants, sa.true()
        )
    return statement


_FILL_STATEMENTS: dict[Table | None, sa.Select[Any]] = {
    table: _build_fill_statement(table) for table in (None, "at", "cc")
}


def _fill_statement(table: Table | None) -> sa.Select[Any]:
    """The fill of `table` (None: the switch alone), run with {"token_id": ...}."""
    return _FILL_STATEMENTS[table]


def _grants_of_access_tokens() -> sa.Subquery:
    """(token id, role key, permission key) rows of the access tokens TOKEN_IDS: what
    _grants_of_access_token says of each."""
    token = aliased(AccessToken, name="granting_token")
    given = sa.select(
        access_token_roles.c.token_id.label("token_id"), access_token_roles.c.role_id
    ).where(access_token_roles.c.token_id.in_(TOKEN_IDS))
    held = (
        sa.select(token.id.label("token_id"), user_roles.c.role_id)
        .join(
            token,
            sa.and_(
                token.user_id == user_roles.c.user_id, token.tenant_id == user_roles.c.tenant_id
            ),
        )
        .where(token.id.in_(TOKEN_IDS))
    )
    roles_held = sa.union(given, held).subquery("roles_held")
    return (
        sa.select(
            roles_held.c.token_id,
            Role.key.label("role_key"),
            Permission.key.label("permission_key"),
        )
        .select_from(roles_held)
        .join(Role, Role.id == roles_held.c.role_id)
        .outerjoin(role_permissions, role_permissions.c.role_id == Role.id)
        .outerjoin(Permission, Permission.id == role_permissions.c.permission_id)
        .subquery("grants")
    )


def _build_refill_statement(table: Table) -> sa.Select[Any]:
    """What the fill reads, for the tokens TOKEN_IDS at once (a row per token and grant). A
    token that is gone has no row: a refill leaves its entry to expire, and the fill that
    follows finds it gone."""
    statement, row_id = _rows_and_owners(table, many=True)
    if table == "at":
        grants = _grants_of_access_tokens()
        statement = statement.add_columns(grants.c.role_key, grants.c.permission_key).outerjoin(
            grants, grants.c.token_id == row_id
        )
    return statement


_REFILL_STATEMENTS: dict[Table, sa.Select[Any]] = {
    table: _build_refill_statement(table) for table in ("at", "cc")
}


def _refill_statement(table: Table) -> sa.Select[Any]:
    """The refill of `table`, run with {"token_ids": [...]}."""
    return _REFILL_STATEMENTS[table]


def _refilled_values(
    table: Table, rows: Sequence[sa.Row[Any]], now: datetime
) -> dict[str, dict[str, Value]]:
    """The entries of each token the refill found, by token id."""
    by_token: dict[str, list[sa.Row[Any]]] = {}
    for item in rows:
        by_token.setdefault(item.row_id, []).append(item)
    return {
        token_id: _filled_values(table, token_id, token_rows, now)
        for token_id, token_rows in by_token.items()
    }


def _filled_values(
    table: Table | None, token_id: str, rows: Sequence[sa.Row[Any]], now: datetime
) -> dict[str, Value]:
    if not rows:
        raise RuntimeError("the environment row is missing: run `m2m migrate`")
    first = rows[0]
    values: dict[str, Value] = {ENV_KEY: bool(first.api_tokens_enabled)}
    if table is None:
        return values
    key = _token_key(table, token_id)
    if (
        first.row_id is None
        or first.tenant_created_at is None
        or (first.user_id is not None and first.user_created_at is None)
    ):
        # Gone, or its tenant or user deleted, or revoked with every token of its owner (whose
        # cascade may still be removing the row).
        values[key] = DELETED
        return values
    roles: set[str] = set()
    permissions: set[str] = set()
    if table == "at":
        for item in rows:
            if item.role_key is not None:
                roles.add(item.role_key)
            if item.permission_key is not None:
                permissions.add(item.permission_key)
    tenant_incarnation = incarnation(first.tenant_created_at)
    user_incarnation = None if first.user_created_at is None else incarnation(first.user_created_at)
    values[key] = TokenRow(
        tenant_id=first.tenant_id,
        user_id=first.user_id,
        tenant_incarnation=tenant_incarnation,
        user_incarnation=user_incarnation,
        expires_us=None if first.expires_at is None else _microseconds(first.expires_at),
        roles=tuple(sorted(roles)),
        permissions=tuple(sorted(permissions)),
        filled_at=now.timestamp(),
    )
    values[_tenant_key(first.tenant_id)] = Principal(tenant_incarnation, alive=True)
    if first.user_id is not None and user_incarnation is not None:
        values[_user_key(first.user_id)] = Principal(user_incarnation, alive=True)
    return values
