"""The portal's API: the signed-in end user (GET /portal/v1/session) and the members behind
"Created by" (GET /portal/v1/token-creators)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import User
from tests.factories import Factory, mark_deleted
from tests.kinds import TOKEN_PERMISSIONS
from tests.steps import TENANT_ACCESS, TENANT_API_V2, USER_API, configure
from tests.suite import IDP_ISSUER

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

SESSION = "/portal/v1/session"
CREATORS = "/portal/v1/token-creators"
READ_TENANT = "fe.secure.read.tenantApiTokens"
WRITE_TENANT = "fe.secure.write.tenantApiTokens"


async def test_the_session_names_the_user_its_account_the_roles_it_holds_and_their_permissions(
    client: httpx.AsyncClient, factory: Factory, end_user: Any
) -> None:
    acme = await factory.tenant("acme", name="Acme Inc.")
    other = await factory.tenant("other", name="Other")
    writer = await factory.role("writer", permission_keys=[READ_TENANT, WRITE_TENANT])
    reader = await factory.role(
        "reader", tenant_id=acme.id, permission_keys=["fe.secure.read.userApiTokens", READ_TENANT]
    )
    await factory.role("unheld", permission_keys=TOKEN_PERMISSIONS)
    ada = await factory.user(acme.id, email="ada@acme.test", roles=[writer, reader])
    await factory.user(other.id, roles=[writer])

    response = await client.get(SESSION, headers=end_user(ada.id, acme.id))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "userId": ada.id,
        "tenantId": "acme",
        "email": "ada@acme.test",
        "name": "Test User",
        "tenantName": "Acme Inc.",
        "roles": [
            {"id": reader.id, "key": "reader", "name": "Reader"},
            {"id": writer.id, "key": "writer", "name": "Writer"},
        ],
        "permissions": sorted(
            ["fe.secure.read.userApiTokens", READ_TENANT, WRITE_TENANT],
        ),
        "apiTokensEnabled": True,
        "machineToMachineAuthStrategy": "ClientCredentials",
        "tokenPolicy": {
            "tenantId": "acme",
            "maxExpiresInMinutes": None,
            "requireExpiration": False,
            "maxRotationOverlapMinutes": None,
            "maxTokens": {
                "userApiToken": None,
                "tenantApiToken": None,
                "userAccessToken": None,
                "tenantAccessToken": None,
            },
            "updatedAt": None,
        },
    }


async def test_the_session_says_whether_m2m_is_on_and_which_kind_of_token_is_made(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    await configure(
        client, vendor, apiTokensEnabled=False, machineToMachineAuthStrategy="AccessToken"
    )

    response = await client.get(SESSION, headers=end_user(user.id, tenant.id))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["apiTokensEnabled"], body["machineToMachineAuthStrategy"]) == (
        False,
        "AccessToken",
    )
    assert (body["roles"], body["permissions"]) == ([], [])


async def test_the_vendor_is_told_the_session_route_is_for_end_users(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await client.get(SESSION, headers=vendor)

    assert response.status_code == 403
    assert response.json() == {
        "errors": ["The portal serves end users: send the user's session token, not a vendor token"]
    }


async def test_a_missing_expired_or_foreign_session_is_refused(
    client: httpx.AsyncClient, factory: Factory, end_user: Any, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant = await factory.tenant()
    other = await factory.tenant(name="Other")
    user = await factory.user(tenant.id)
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = jwt.encode(
        {"sub": user.id, "tenantId": tenant.id, "iss": IDP_ISSUER, "exp": int(past.timestamp())},
        idp_key,
        algorithm="RS256",
    )

    assert (await client.get(SESSION)).status_code == 401
    refused = await client.get(SESSION, headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401
    assert refused.json() == {"errors": ["Invalid or expired session token"]}
    # A session naming an account the user is not a member of.
    assert (await client.get(SESSION, headers=end_user(user.id, other.id))).status_code == 403


async def test_token_creators_are_the_accounts_own_members_who_made_its_account_tokens(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    db: AsyncSession,
) -> None:
    acme = await factory.tenant("acme")
    other = await factory.tenant("other")
    admin_role = await factory.role("admin", permission_keys=TOKEN_PERMISSIONS)
    ada = await factory.user(acme.id, email="ada@acme.test", roles=[admin_role])
    bob = await factory.user(acme.id, email="bob@acme.test", roles=[admin_role])
    gone = await factory.user(acme.id, email="gone@acme.test", roles=[admin_role])
    quiet = await factory.user(acme.id, email="quiet@acme.test", roles=[admin_role])
    stranger = await factory.user(other.id, email="eve@other.test", roles=[admin_role])
    tenant_credential = {"description": "sync", "roleIds": [admin_role.id]}
    for user, tenant in ((ada, acme), (gone, acme), (stranger, other)):
        created = await client.post(
            TENANT_API_V2, headers=end_user(user.id, tenant.id), json=tenant_credential
        )
        assert created.status_code == 201, created.text
    # Quiet made a personal token only; the vendor made an account token in no one's name.
    assert (
        await client.post(USER_API, headers=end_user(quiet.id, acme.id), json={})
    ).status_code == 201
    vendor_acme = {**vendor, "frontegg-tenant-id": "acme"}
    assert (
        await client.post(TENANT_API_V2, headers=vendor_acme, json=tenant_credential)
    ).status_code == 201
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    created = await client.post(
        TENANT_ACCESS, headers=end_user(bob.id, acme.id), json={"roleIds": [admin_role.id]}
    )
    assert created.status_code == 201, created.text
    await mark_deleted(db, User, gone.id)

    response = await client.get(CREATORS, headers=end_user(quiet.id, acme.id))

    assert response.status_code == 200, response.text
    assert sorted(response.json(), key=lambda member: member["email"]) == [
        {"userId": ada.id, "name": "Test User", "email": "ada@acme.test"},
        {"userId": bob.id, "name": "Test User", "email": "bob@acme.test"},
    ]


async def test_token_creators_need_the_permission_to_read_account_tokens_and_an_end_user(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    personal = await factory.role(permission_keys=["fe.secure.read.userApiTokens"])
    user = await factory.user(tenant.id, roles=[personal])

    refused = await client.get(CREATORS, headers=end_user(user.id, tenant.id))

    assert refused.status_code == 403
    assert refused.json() == {"errors": [f"Missing permission {READ_TENANT}"]}
    assert (await client.get(CREATORS, headers=vendor)).status_code == 403


async def test_the_session_carries_the_accounts_token_policy_for_the_expiration_choices(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    saved = await client.put(
        "/identity/resources/tenants/token-policy/v1",
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"maxExpiresInMinutes": 10080, "maxTokens": {"userApiToken": 2}},
    )
    assert saved.status_code == 200, saved.text

    response = await client.get(SESSION, headers=end_user(user.id, tenant.id))

    policy = response.json()["tokenPolicy"]
    assert policy["maxExpiresInMinutes"] == 10080
    assert policy["maxTokens"]["userApiToken"] == 2
    assert policy["requireExpiration"] is False
