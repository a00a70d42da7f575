"""Token request and response shapes (Frontegg's api-token and access-token DTOs)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.common import Body, IdList, Out, Text, iso
from domain.models import AccessToken, ClientCredential
from domain.tokens import Issued, Revoked, TokenView

# --- requests --------------------------------------------------------------------------------


class ExpiringTokenRequest(Body):
    # Absent means the token never expires; its range is checked once, in domain.tokens.
    expires_in_minutes: int | UnsetType = UNSET

    @property
    def minutes(self) -> int | None:
        """expiresInMinutes, or None when absent (the token never expires)."""
        return given(self.expires_in_minutes)


class CreateUserApiTokenRequest(ExpiringTokenRequest):
    description: Text | None = None
    metadata: dict[str, Any] = {}


class CreateUserAccessTokenRequest(ExpiringTokenRequest):
    description: Text | None = None


class CreateTenantApiTokenRequest(ExpiringTokenRequest):
    description: Text | None = None
    metadata: dict[str, Any] = {}
    role_ids: IdList = []
    permission_ids: IdList = []


class UpdateTenantApiTokenRequest(Body):
    description: Text | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    role_ids: IdList | UnsetType = UNSET
    permission_ids: IdList | UnsetType = UNSET


class CreateTenantAccessTokenRequest(ExpiringTokenRequest):
    description: Text | None = None
    role_ids: IdList = []


T = TypeVar("T")


def given(value: T | UnsetType) -> T | None:
    """A PATCH field's value, or None when it was not sent."""
    return None if isinstance(value, UnsetType) else value


# --- responses: a creation response is the listed shape plus the secret, and only it ----------


class UserApiTokenOut(Out):
    client_id: str
    description: str | None
    metadata: dict[str, Any]
    created_at: str | None
    expires: str | None


class CreatedUserApiTokenOut(UserApiTokenOut):
    secret: str


class UserAccessTokenOut(Out):
    id: str
    description: str | None
    created_at: str | None
    expires: str | None


class CreatedUserAccessTokenOut(UserAccessTokenOut):
    secret: str


class UserAccessTokensOut(Out):
    access_tokens: list[UserAccessTokenOut]


class TenantApiTokenOut(Out):
    client_id: str
    description: str | None
    tenant_id: str
    created_by_user_id: str | None
    metadata: dict[str, Any]
    created_at: str | None
    permission_ids: list[str]
    role_ids: list[str]
    expires: str | None


class CreatedTenantApiTokenOut(TenantApiTokenOut):
    secret: str


class TenantAccessTokenOut(Out):
    id: str
    description: str | None
    created_at: str | None
    expires: str | None
    role_ids: list[str]
    created_by_user_id: str | None


class CreatedTenantAccessTokenOut(TenantAccessTokenOut):
    secret: str


class TenantAccessTokensOut(Out):
    access_tokens: list[TenantAccessTokenOut]


Listed = TypeVar("Listed", bound=Out)
Created = TypeVar("Created", bound=Out)


def with_secret(listed: Listed, created: type[Created], secret: str) -> Created:
    """The creation response: the one place a secret is put in a response."""
    return created(**msgspec.structs.asdict(listed), secret=secret)


def user_api_token_response(view: TokenView[ClientCredential]) -> UserApiTokenOut:
    credential = view.token
    return UserApiTokenOut(
        client_id=credential.client_id,
        description=credential.description,
        metadata=credential.metadata_json,
        created_at=iso(credential.created_at),
        expires=iso(credential.expires_at),
    )


def created_user_api_token_response(
    issued: Issued[TokenView[ClientCredential]],
) -> CreatedUserApiTokenOut:
    return with_secret(user_api_token_response(issued.token), CreatedUserApiTokenOut, issued.secret)


def user_access_token_response(view: TokenView[AccessToken]) -> UserAccessTokenOut:
    token = view.token
    return UserAccessTokenOut(
        id=token.id,
        description=token.description,
        created_at=iso(token.created_at),
        expires=iso(token.expires_at),
    )


def created_user_access_token_response(
    issued: Issued[TokenView[AccessToken]],
) -> CreatedUserAccessTokenOut:
    return with_secret(
        user_access_token_response(issued.token), CreatedUserAccessTokenOut, issued.secret
    )


def tenant_api_token_response(view: TokenView[ClientCredential]) -> TenantApiTokenOut:
    credential = view.token
    return TenantApiTokenOut(
        client_id=credential.client_id,
        description=credential.description,
        tenant_id=credential.tenant_id,
        created_by_user_id=credential.created_by_user_id,
        metadata=credential.metadata_json,
        created_at=iso(credential.created_at),
        permission_ids=view.permission_ids,
        role_ids=view.role_ids,
        expires=iso(credential.expires_at),
    )


def created_tenant_api_token_response(
    issued: Issued[TokenView[ClientCredential]],
) -> CreatedTenantApiTokenOut:
    return with_secret(
        tenant_api_token_response(issued.token), CreatedTenantApiTokenOut, issued.secret
    )


def tenant_access_token_response(view: TokenView[AccessToken]) -> TenantAccessTokenOut:
    token = view.token
    return TenantAccessTokenOut(
        id=token.id,
        description=token.description,
        created_at=iso(token.created_at),
        expires=iso(token.expires_at),
        role_ids=view.role_ids,
        created_by_user_id=token.created_by_user_id,
    )


def created_tenant_access_token_response(
    issued: Issued[TokenView[AccessToken]],
) -> CreatedTenantAccessTokenOut:
    return with_secret(
        tenant_access_token_response(issued.token), CreatedTenantAccessTokenOut, issued.secret
    )


# --- revoke everything ---------------------------------------------------------------------------


class RevokedRefreshTokensOut(Out):
    revoked_refresh_tokens: int


class RevokedEveryTokenOut(Out):
    """What "revoke every token" ended; every token made until `revokedAt` is gone."""

    access_tokens: int
    client_credentials: int
    revoked_at: str


def revoked_every_token_response(revoked: Revoked) -> RevokedEveryTokenOut:
    return RevokedEveryTokenOut(
        access_tokens=revoked.access_tokens,
        client_credentials=revoked.client_credentials,
        revoked_at=iso(revoked.revoked_at),
    )
