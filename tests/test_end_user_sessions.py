"""End-user session JWTs are bound to this service: the IdP's signature, its issuer, this
service's audience when set, a current validity window, and plain string ids."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from freezegun import freeze_time

from api.state import Services
from domain.auth import EndUserVerifier
from domain.errors import Unauthenticated
from domain.settings import load_settings
from tests.factories import Factory, build_world
from tests.steps import replaced
from tests.suite import IDP_ISSUER, VALID

AUDIENCE = "https://m2m.example.test"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TENANT_API = "/identity/resources/tenants/api-tokens/v1"


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def session(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    """A session JWT issued at NOW for ten minutes; a claim given as None is left out."""
    payload = {
        "sub": "user-1",
        "tenantId": "acme",
        "iss": IDP_ISSUER,
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=10)).timestamp()),
        **claims,
    }
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm="RS256")


def verifier(
    key: rsa.RSAPrivateKey, *, issuer: str | None = IDP_ISSUER, audience: str | None = None
) -> EndUserVerifier:
    verifier = EndUserVerifier.from_settings(
        load_settings(
            {
                **VALID,
                "M2M_USER_JWT_PUBLIC_KEY": public_pem(key),
                "M2M_USER_JWT_ISSUER": issuer or "",
                "M2M_USER_JWT_AUDIENCE": audience or "",
            }
        )
    )
    assert verifier is not None
    return verifier


async def accepted(verifier: EndUserVerifier, token: str, at: datetime = NOW) -> bool:
    with freeze_time(at, real_asyncio=True):
        try:
            await verifier.verify(token)
        except Unauthenticated:
            return False
    return True


# --- audience ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aud", "ok"),
    [
        (AUDIENCE, True),
        (["https://other.example.test", AUDIENCE], True),
        ("https://other.example.test", False),  # a session the IdP issued for another service
        (["https://other.example.test"], False),
        (None, False),
    ],
)
async def test_with_an_audience_set_a_session_must_name_this_service(
    idp_key: rsa.RSAPrivateKey, aud: Any, ok: bool
) -> None:
    bound = verifier(idp_key, audience=AUDIENCE)

    assert await accepted(bound, session(idp_key, aud=aud)) is ok


@pytest.mark.parametrize("aud", [None, "https://vendor-app.example.test"])
async def test_without_an_audience_set_the_aud_claim_is_not_read(
    idp_key: rsa.RSAPrivateKey, aud: str | None
) -> None:
    assert await accepted(verifier(idp_key), session(idp_key, aud=aud))


# --- issuer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iss", "ok"), [(IDP_ISSUER, True), (None, False), ("https://evil.test", False)]
)
async def test_with_an_issuer_set_a_session_must_carry_it(
    idp_key: rsa.RSAPrivateKey, iss: Any, ok: bool
) -> None:
    assert await accepted(verifier(idp_key), session(idp_key, iss=iss)) is ok


async def test_without_an_issuer_set_any_issuer_is_accepted(idp_key: rsa.RSAPrivateKey) -> None:
    open_issuer = verifier(idp_key, issuer=None)

    assert await accepted(open_issuer, session(idp_key, iss=None))
    assert await accepted(open_issuer, session(idp_key, iss="https://anyone.test"))


# --- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "at", "ok"),
    [
        ({}, NOW, True),
        # exp: required, and passed once the 30 s of clock skew allowed are over.
        ({"exp": None}, NOW, False),
        ({"exp": "tomorrow"}, NOW, False),
        ({}, NOW + timedelta(minutes=10, seconds=29), True),
        ({}, NOW + timedelta(minutes=10, seconds=31), False),
        # nbf and iat, when present: not in the future beyond the skew.
        ({"nbf": int((NOW + timedelta(seconds=20)).timestamp())}, NOW, True),
        ({"nbf": int((NOW + timedelta(minutes=2)).timestamp())}, NOW, False),
        ({"nbf": "later"}, NOW, False),
        ({"iat": int((NOW + timedelta(minutes=2)).timestamp())}, NOW, False),
        ({"iat": "now"}, NOW, False),
        ({"iat": None}, NOW, True),
    ],
)
async def test_a_session_is_accepted_only_within_its_validity_window(
    idp_key: rsa.RSAPrivateKey, claims: dict[str, Any], at: datetime, ok: bool
) -> None:
    assert await accepted(verifier(idp_key), session(idp_key, **claims), at) is ok


# --- the ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 42},
        {"sub": ["user-1"]},
        {"sub": ""},
        {"sub": "user\x00-1"},
        {"sub": "u" * 256},
        {"tenantId": 42},
        {"tenantId": {"id": "acme"}},
        {"tenantId": ""},
        {"tenantId": "acme\x00"},
        {"tenantId": "t" * 256},
        {"tenantId": None},
    ],
    ids=lambda claims: repr(claims)[:40],
)
async def test_a_session_whose_user_or_tenant_is_not_a_plain_id_is_refused(
    idp_key: rsa.RSAPrivateKey, claims: dict[str, Any]
) -> None:
    assert not await accepted(verifier(idp_key), session(idp_key, **claims))


async def test_a_signed_session_with_a_nul_in_its_tenant_is_401_not_a_server_error(
    client: httpx.AsyncClient, end_user: Any, factory: Factory
) -> None:
    world = await build_world(factory)

    refused = await client.get(TENANT_API, headers=end_user(world.admin.id, "acme\x00"))
    allowed = await client.get(TENANT_API, headers=end_user(world.admin.id, world.tenant.id))

    assert refused.status_code == 401, refused.text
    assert refused.json() == {"errors": ["Session token must carry sub and tenantId"]}
    assert allowed.status_code == 200, allowed.text


async def test_the_service_checks_the_audience_its_settings_name(
    client: httpx.AsyncClient,
    services: Services,
    end_user: Any,
    factory: Factory,
) -> None:
    world = await build_world(factory)
    bound = EndUserVerifier.from_settings(
        dataclasses.replace(services.settings, user_jwt_audience=AUDIENCE)
    )
    ours = end_user(world.admin.id, world.tenant.id, aud=AUDIENCE)
    theirs = end_user(world.admin.id, world.tenant.id, aud="https://other.example.test")

    with replaced(services, "end_users", bound):
        allowed = await client.get(TENANT_API, headers=ours)
        refused = await client.get(TENANT_API, headers=theirs)

    assert allowed.status_code == 200, allowed.text
    assert refused.status_code == 401
    assert refused.json() == {"errors": ["Invalid or expired session token"]}
