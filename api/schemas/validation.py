"""Response bodies of token validation, introspection and the vendor-only access-token routes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from api.schemas.common import Out, iso
from domain.validity import AccessTokenGrants, Validated


class IntrospectForm(msgspec.Struct, kw_only=True):
    """RFC 7662 introspection request (the route reads the form itself); the hint is ignored."""

    token: Annotated[str, msgspec.Meta(min_length=1)]
    token_type_hint: str | None = None


class IntrospectionOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 7662: `{"active": false}` alone for a token not active now; for an active one the
    standard members, then Frontegg's own."""

    active: bool
    token_type: str | None = None
    type: str | None = None
    sub: str | None = None


class ValidatedOut(Out, omit_defaults=True):
    """POST /identity/resources/auth/v1/validate: the token is valid now, and speaks for these."""

    type: str
    sub: str
    tenant_id: str
    roles: list[str]
    permissions: list[str]
    user_id: str | None = None
    expires: str | None = None


class UserAccessTokenGrantsOut(Out, omit_defaults=True):
    """Frontegg's AuthUserAccessTokenResponse: a user access token with the roles and permissions
    it carries now (the vendor-only route), unlike the listing's shape of what it was created
    with."""

    id: str
    tenant_id: str
    user_id: str
    roles: list[str]
    permissions: list[str]
    expires: str | None = None


class TenantAccessTokenGrantsOut(Out, omit_defaults=True):
    """Frontegg's AuthTenantAccessTokenResponse: a tenant access token with the roles and
    permissions it carries now (the vendor-only route), unlike the listing's shape."""

    id: str
    tenant_id: str
    roles: list[str]
    permissions: list[str]
    expires: str | None = None


def validated_response(validated: Validated) -> ValidatedOut:
    return ValidatedOut(
        type=validated.type,
        sub=validated.sub,
        tenant_id=validated.tenant_id,
        user_id=validated.user_id,
        roles=list(validated.roles),
        permissions=list(validated.permissions),
        expires=iso(validated.expires_at),
    )


def user_access_token_grants_response(grants: AccessTokenGrants) -> UserAccessTokenGrantsOut:
    assert grants.user_id is not None
    return UserAccessTokenGrantsOut(
        id=grants.id,
        tenant_id=grants.tenant_id,
        user_id=grants.user_id,
        roles=list(grants.roles),
        permissions=list(grants.permissions),
        expires=iso(grants.expires_at),
    )


def tenant_access_token_grants_response(grants: AccessTokenGrants) -> TenantAccessTokenGrantsOut:
    return TenantAccessTokenGrantsOut(
        id=grants.id,
        tenant_id=grants.tenant_id,
        roles=list(grants.roles),
        permissions=list(grants.permissions),
        expires=iso(grants.expires_at),
    )


def inactive_response() -> dict[str, Any]:
    """RFC 7662 for any token that is not active now, whatever the reason: nothing more."""
    return {"active": False}


def introspection_response(validated: Validated) -> dict[str, Any]:
    """RFC 7662 for an active token: the standard members, then Frontegg's own."""
    claims = validated.claims
    body: dict[str, Any] = {
        "active": True,
        # Client-credential JWTs travel as OAuth bearer tokens; access tokens as API keys.
        "token_type": "access_token" if validated.is_access_token else "Bearer",
        "type": validated.type,
        "sub": validated.sub,
        "iss": claims.get("iss"),
        "iat": claims.get("iat"),
    }
    if "exp" in claims:
        body["exp"] = claims["exp"]
    if not validated.is_access_token:
        body["client_id"] = validated.sub
    body["tenantId"] = validated.tenant_id
    if validated.user_id is not None:
        body["userId"] = validated.user_id
    body["roles"] = list(validated.roles)
    body["permissions"] = list(validated.permissions)
    return body
