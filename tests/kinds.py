"""The four token kinds as their management routes see them, and the permissions over them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from domain.models import AccessToken, ClientCredential

TOKEN_PERMISSIONS = [
    f"fe.secure.{action}.{resource}"
    for resource in ("userApiTokens", "tenantApiTokens")
    for action in ("read", "write", "delete")
]
# The migration seeds the fe.secure permissions under stable ids.
FE_PERMISSION_NAMESPACE = uuid.UUID("6f1c6f43-2a43-4d0e-9a57-3c1a9e0f5b11")


def fe_permission_id(key: str) -> str:
    return str(uuid.uuid5(FE_PERMISSION_NAMESPACE, key))


@dataclass(frozen=True)
class Kind:
    """One of the four token kinds, as its routes see it."""

    name: str
    path: str
    strategy: str
    resource: str
    model: type[AccessToken] | type[ClientCredential]
    id_key: str
    create_path: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def for_user(self) -> bool:
        return self.resource == "userApiTokens"

    @property
    def creates(self) -> str:
        return self.create_path or self.path

    def item(self, token_id: str) -> str:
        return f"{self.path}/{token_id}"

    def listed(self, body: Any) -> list[dict[str, Any]]:
        items = body["accessTokens"] if isinstance(body, dict) else body
        assert isinstance(items, list)
        return items


USER_API = Kind(
    name="userApiToken",
    path="/identity/resources/users/api-tokens/v1",
    strategy="ClientCredentials",
    resource="userApiTokens",
    model=ClientCredential,
    id_key="clientId",
)
USER_ACCESS = Kind(
    name="userAccessToken",
    path="/identity/resources/users/access-tokens/v1",
    strategy="AccessToken",
    resource="userApiTokens",
    model=AccessToken,
    id_key="id",
)
TENANT_API = Kind(
    name="tenantApiToken",
    path="/identity/resources/tenants/api-tokens/v1",
    create_path="/identity/resources/tenants/api-tokens/v2",
    strategy="ClientCredentials",
    resource="tenantApiTokens",
    model=ClientCredential,
    id_key="clientId",
    # A tenant credential needs roles or permissions; every admin of `build_world` holds this one.
    body={"permissionIds": [fe_permission_id("fe.secure.read.tenantApiTokens")]},
)
TENANT_ACCESS = Kind(
    name="tenantAccessToken",
    path="/identity/resources/tenants/access-tokens/v1",
    strategy="AccessToken",
    resource="tenantApiTokens",
    model=AccessToken,
    id_key="id",
)
