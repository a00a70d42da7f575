"""Token request and response shapes (Frontegg's api-token and access-token DTOs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.common import Body, IdList, Out, Text, iso
from domain.models import AccessToken, ClientCredential
from domain.policy import MAX_EXPIRES_IN_MINUTES, MAX_ROTATION_OVERLAP_MINUTES
from domain.tokens import Issued, Revoked, TokenView

# --- requests --------------------------------------------------------------------------------


class ExpiringTokenRequest(Body):
    # Absent means the token never expires; its range is checked once, in domain.tokens (the
    # API reference states it).
    expires_in_minutes: (
        Annotated[
            int,
            msgspec.Meta(extra_json_schema={"minimum": 1, "maximum": MAX_EXPIRES_IN_MINUTES}),
        ]
        | UnsetType
    ) = UNSET

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


# roleIds or permissionIds, non-empty: said for the API reference (domain/grants.py enforces it).
GRANTS_GIVEN = {
    "anyOf": [
        {"required": ["roleIds"], "properties": {"roleIds": {"minItems": 1}}},
        {"required": ["permissionIds"], "properties": {"permissionIds": {"minItems": 1}}},
    ]
}
CreateTenantApiTokenBody = Annotated[
    CreateTenantApiTokenRequest, msgspec.Meta(extra_json_schema=GRANTS_GIVEN)
]


class UpdateTenantApiTokenRequest(Body):
    description: Text | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    role_ids: IdList | UnsetType = UNSET
    permission_ids: IdList | UnsetType = UNSET


class CreateTenantAccessTokenRequest(ExpiringTokenRequest):
    description: Text | None = None
    role_ids: IdList = []


class RotateRequest(Body):
    # Required: how long the replaced secret or token keeps working. Its range is checked once,
    # in domain.rotation, with its own message (the API reference states it).
    overlap_minutes: Annotated[
        int,
        msgspec.Meta(extra_json_schema={"minimum": 0, "maximum": MAX_ROTATION_OVERLAP_MINUTES}),
    ]


T = TypeVar("T")


def given(value: T | UnsetType) -> T | None:
    """A PATCH field's value, or None when it was not sent."""
    return None if isinstance(value, UnsetType) else value


# --- responses: a creation response is the listed shape plus the secret, and only it ----------


class UsedFromOut(Out):
    address: str
    last_used_at: str


class LastUse(Out):
    """Beyond Frontegg's shapes (added fields only): when the token was last used (a validation
    of an access token, an exchange or refresh of a credential; right within a minute), and the
    last distinct addresses it was used from, newest first."""

    last_used_at: str | None
    last_used_from: list[UsedFromOut]


def last_use_of(token: AccessToken | ClientCredential) -> dict[str, Any]:
    """The LastUse fields of a token row."""
    return {
        "last_used_at": iso(token.last_used_at),
        "last_used_from": [
            UsedFromOut(address=entry["address"], last_used_at=_iso_text(entry["at"]))
            for entry in token.last_used_addresses or []
        ],
    }


def _iso_text(stored: str) -> str:
    return iso(datetime.fromisoformat(stored))


class UserApiTokenOut(LastUse):
    client_id: str
    description: str | None
    metadata: dict[str, Any]
    created_at: str | None
    expires: str | None
    # Rotation (README "Rotation"): None until the first rotation.
    rotated_at: str | None
    previous_secret_expires: str | None
    previous_secret_last_used_at: str | None


class CreatedUserApiTokenOut(UserApiTokenOut):
    secret: str


class UserAccessTokenOut(LastUse):
    id: str
    description: str | None
    created_at: str | None
    expires: str | None
    replaced_by: str | None  # the token it was rolled into; it dies at `expires`


class CreatedUserAccessTokenOut(UserAccessTokenOut):
    secret: str


class UserAccessTokensOut(Out):
    access_tokens: list[UserAccessTokenOut]


class TenantApiTokenOut(LastUse):
    client_id: str
    description: str | None
    tenant_id: str
    created_by_user_id: str | None
    metadata: dict[str, Any]
    created_at: str | None
    permission_ids: list[str]
    role_ids: list[str]
    expires: str | None
    rotated_at: str | None
    previous_secret_expires: str | None
    previous_secret_last_used_at: str | None


class CreatedTenantApiTokenOut(TenantApiTokenOut):
    secret: str


class TenantAccessTokenOut(LastUse):
    id: str
    description: str | None
    created_at: str | None
    expires: str | None
    role_ids: list[str]
    created_by_user_id: str | None
    replaced_by: str | None


class CreatedTenantAccessTokenOut(TenantAccessTokenOut):
    secret: str


class TenantAccessTokensOut(Out):
    access_tokens: list[TenantAccessTokenOut]


Listed = TypeVar("Listed", bound=Out)
Created = TypeVar("Created", bound=Out)


def with_secret(listed: Listed, created: type[Created], secret: str) -> Created:
    """The creation response: the one place a secret is put in a response."""
    return created(**msgspec.structs.asdict(listed), secret=secret)


def _rotation(credential: ClientCredential) -> dict[str, Any]:
    """When it was rotated last, when (or since when) the previous secret stops exchanging, and
    its last use since that rotation (None: not used, so every machine has moved)."""
    return {
        "rotated_at": iso(credential.rotated_at),
        "previous_secret_expires": iso(credential.previous_secret_expires_at),
        "previous_secret_last_used_at": iso(credential.previous_secret_used_at),
    }


def user_api_token_response(view: TokenView[ClientCredential]) -> UserApiTokenOut:
    credential = view.token
    return UserApiTokenOut(
        client_id=credential.client_id,
        description=credential.description,
        metadata=credential.metadata_json,
        created_at=iso(credential.created_at),
        expires=iso(credential.expires_at),
        **_rotation(credential),
        **last_use_of(credential),
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
        replaced_by=token.replaced_by_id,
        **last_use_of(token),
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
        **_rotation(credential),
        **last_use_of(credential),
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
        replaced_by=token.replaced_by_id,
        **last_use_of(token),
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
