"""The vendor console's own response shapes: a page of tenants, a tenant's tokens, the limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

import msgspec

from api.schemas.common import Out, iso
from api.schemas.configuration import RefreshSeconds, Seconds
from api.schemas.tokens import LastUse, last_use_of
from domain.console import TenantPage
from domain.models import Tenant, User
from domain.tokens import KindedToken


class TenantItemOut(Out):
    tenant_id: str
    name: str
    created_at: str | None


class TenantPageOut(Out):
    items: list[TenantItemOut]
    total: int


class ListedTokenOut(LastUse):
    kind: str
    id: str
    description: str | None
    user_id: str | None
    created_by_user_id: str | None
    created_at: str | None
    expires: str | None
    role_ids: list[str]
    permission_ids: list[str]
    # Rotation (README "Rotation"): client credentials carry the first three, access tokens the
    # last; None where it does not apply or nothing was rotated.
    rotated_at: str | None
    previous_secret_expires: str | None
    previous_secret_last_used_at: str | None
    replaced_by: str | None


class NamedUserOut(Out):
    email: str
    name: str | None


class TenantTokensOut(Out):
    tokens: list[ListedTokenOut]
    users: dict[str, NamedUserOut]  # keyed by user id: each owner or creator a token names


class RangeOut(Out):
    min: int
    max: int


class LimitsOut(Out):
    default_token_expiration: RangeOut
    default_refresh_token_expiration: RangeOut


def tenant_page_response(page: TenantPage) -> TenantPageOut:
    return TenantPageOut(
        items=[_tenant_item(tenant) for tenant in page.tenants],
        total=page.total,
    )


def _tenant_item(tenant: Tenant) -> TenantItemOut:
    return TenantItemOut(tenant_id=tenant.id, name=tenant.name, created_at=iso(tenant.created_at))


def named_user_ids(listed: Sequence[KindedToken]) -> set[str]:
    """The owners and creators the listing names."""
    named = {token.view.token.user_id for token in listed}
    named |= {token.view.token.created_by_user_id for token in listed}
    return {user_id for user_id in named if user_id is not None}


def tenant_tokens_response(
    listed: Sequence[KindedToken], users: Mapping[str, User]
) -> TenantTokensOut:
    return TenantTokensOut(
        tokens=[_listed_token(token) for token in listed],
        users={
            user_id: NamedUserOut(email=user.email, name=user.name)
            for user_id, user in users.items()
        },
    )


def _listed_token(listed: KindedToken) -> ListedTokenOut:
    token = listed.view.token
    return ListedTokenOut(
        kind=listed.kind.name,
        id=listed.id,
        description=token.description,
        user_id=token.user_id,
        created_by_user_id=token.created_by_user_id,
        created_at=iso(token.created_at),
        expires=iso(token.expires_at),
        role_ids=listed.view.role_ids,
        permission_ids=listed.view.permission_ids,
        rotated_at=iso(getattr(token, "rotated_at", None)),
        previous_secret_expires=iso(getattr(token, "previous_secret_expires_at", None)),
        previous_secret_last_used_at=iso(getattr(token, "previous_secret_used_at", None)),
        replaced_by=getattr(token, "replaced_by_id", None),
        **last_use_of(token),
    )


def _range(annotated: Any) -> RangeOut:
    """The bounds a request field declares (its msgspec.Meta), so the page shows the API's own."""
    meta = next(arg for arg in get_args(annotated) if isinstance(arg, msgspec.Meta))
    assert isinstance(meta.ge, int), "an integer field bounded below"
    assert isinstance(meta.le, int), "an integer field bounded above"
    return RangeOut(min=meta.ge, max=meta.le)


def limits_response() -> LimitsOut:
    return LimitsOut(
        default_token_expiration=_range(Seconds),
        default_refresh_token_expiration=_range(RefreshSeconds),
    )
