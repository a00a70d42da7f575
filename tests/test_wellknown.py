"""JWKS, RFC 8414 metadata, rotation and what the key ring refuses to verify."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.clock import utcnow
from domain.errors import Unauthenticated
from domain.keys import MAX_EXCHANGE_TOKEN_SECONDS, KeyRing, published_keys, rotate_signing_key
from domain.models import AccessToken, SigningKey
from domain.settings import Settings
from tests.factories import Factory

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

ACCESS_TYPES = {"userAccessToken", "tenantAccessToken"}


def _claims(settings: Settings, **extra: Any) -> dict[str, Any]:
    now = int(utcnow().timestamp())
    return {
        "type": "tenantAccessToken",
        "sub": "token-1",
        "tenantId": "acme",
        "iss": settings.issuer,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


@pytest.fixture
async def ring(services: Services) -> KeyRing:
    """A key ring of its own, so rotations in a test do not reach the shared app's."""
    return await KeyRing.load(
        services.sessions, services.master_key, services.settings.issuer, utcnow()
    )


async def test_jwks_publishes_the_signing_key_with_its_kid(
    client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert services.signer.kid in {key["kid"] for key in keys}
    for key in keys:
        assert {key["kty"], key["alg"], key["use"]} == {"RSA", "RS256", "sig"}
        assert not {"d", "p", "q"} & set(key)  # no private component, ever


async def test_a_token_verifies_with_pyjwks_client_from_the_jwks(
    client: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    token = services.signer.sign(_claims(settings))
    jwks = (await client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key, algorithms=["RS256"], issuer=settings.issuer)
    assert claims["sub"] == "token-1"


async def test_authorization_server_metadata_follows_rfc_8414(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    body = response.json()
    assert body["issuer"] == settings.issuer
    assert body["token_endpoint"] == f"{settings.issuer}/oauth/token"
    assert body["jwks_uri"] == f"{settings.issuer}/.well-known/jwks.json"
    assert body["introspection_endpoint"] == f"{settings.issuer}/oauth/introspect"
    assert body["revocation_endpoint"] == f"{settings.issuer}/oauth/revoke"
    assert set(body["grant_types_supported"]) == {"client_credentials", "refresh_token"}
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }


async def test_metadata_names_its_endpoints_under_the_issuer_whatever_host_is_asked(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The issuer is the address the deployment declares; a Host header is the client's to
    choose, and metadata that followed it could send another client's secret elsewhere."""
    response = await client.get(
        "/.well-known/oauth-authorization-server",
        headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"},
    )
    assert response.status_code == 200
    assert response.json()["token_endpoint"] == f"{settings.issuer}/oauth/token"
    assert "attacker.example" not in response.text


async def test_rotation_signs_with_a_new_key_and_keeps_the_old_one_verifying(
    ring: KeyRing, services: Services, settings: Settings, db: AsyncSession
) -> None:
    old_kid = ring.signer.kid
    old_token = ring.signer.sign(_claims(settings))
    try:
        async with services.sessions() as session:
            new_kid = await rotate_signing_key(session, services.master_key, utcnow())
            await session.commit()
        await ring.refresh(utcnow())
        assert ring.signer.kid == new_kid != old_kid
        assert {key["kid"] for key in ring.jwks["keys"]} >= {old_kid, new_kid}
        new_token = ring.signer.sign(_claims(settings))
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        for token in (old_token, new_token):
            assert (await ring.verify(token, ACCESS_TYPES, utcnow()))["sub"] == "token-1"
        old = await db.get(SigningKey, old_kid)
        assert old is not None
        assert old.retired_at is not None
    finally:
        # Later tests sign with the shared app's key ring: make sure it knows the newest key.
        await services.keyring.refresh(utcnow())


async def test_a_retired_key_leaves_the_jwks_once_its_tokens_can_no_longer_be_valid(
    services: Services, factory: Factory, db: AsyncSession
) -> None:
    now = utcnow()
    async with services.sessions() as session:
        await rotate_signing_key(session, services.master_key, now)
        await session.commit()
    await services.keyring.refresh(now)
    retired = await db.scalar(
        sa.select(SigningKey).where(SigningKey.retired_at.is_not(None)).limit(1)
    )
    assert retired is not None
    retired_at = retired.retired_at
    assert retired_at is not None
    just_before = retired_at + timedelta(seconds=MAX_EXCHANGE_TOKEN_SECONDS - 1)
    after = retired_at + timedelta(seconds=MAX_EXCHANGE_TOKEN_SECONDS + 1)

    async def published(at: datetime) -> set[str]:
        async with services.sessions() as session:
            return {row.kid for row in await published_keys(session, at)}

    assert retired.kid in await published(just_before)
    assert retired.kid not in await published(after)

    # A never-expiring access token it signed keeps it published, as long as the row lives.
    tenant = await factory.tenant()
    db.add(
        AccessToken(
            id="a" * 36,
            tenant_id=tenant.id,
            user_id=None,
            created_by_user_id=None,
            description=None,
            expires_at=None,
            created_at=now,
            signing_kid=retired.kid,
        )
    )
    await db.commit()
    assert retired.kid in await published(after)
    await db.execute(sa.delete(AccessToken).where(AccessToken.id == "a" * 36))
    await db.commit()
    assert retired.kid not in await published(after)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forgery(label: str, signer: Any, settings: Settings) -> str:
    now = int(utcnow().timestamp())
    good = signer.sign(_claims(settings))
    if label == "alg none":
        return _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims(settings)) + "."
    if label == "HS256 keyed with the public key":
        return _hs256(_claims(settings), signer.public_key_pem, signer.kid)
    if label == "unknown kid":
        return _resign(signer, _claims(settings), kid="not-a-key")
    if label == "wrong issuer":
        return str(signer.sign(_claims(settings, iss="https://evil.test")))
    if label == "expired":
        return str(signer.sign(_claims(settings, exp=now - 1)))
    if label == "not yet valid":
        return str(signer.sign(_claims(settings, nbf=now + 600)))
    if label == "wrong type for the header":
        return str(signer.sign(_claims(settings, type="tenantApiToken")))
    if label == "tampered payload":
        return _tamper(good)
    return "not.a.jwt"


FORGERIES = [
    "alg none",
    "HS256 keyed with the public key",
    "unknown kid",
    "wrong issuer",
    "expired",
    "not yet valid",
    "wrong type for the header",
    "tampered payload",
    "garbage",
]


async def test_the_key_ring_verifies_a_good_token(services: Services, settings: Settings) -> None:
    token = services.signer.sign(_claims(settings))
    assert (await services.keyring.verify(token, ACCESS_TYPES, utcnow()))["sub"] == "token-1"


@pytest.mark.parametrize("label", FORGERIES)
async def test_the_key_ring_refuses_forgeries_and_misuse(
    label: str, services: Services, settings: Settings
) -> None:
    token = _forgery(label, services.signer, settings)
    with pytest.raises(Unauthenticated):
        await services.keyring.verify(token, ACCESS_TYPES, utcnow())


def _hs256(claims: dict[str, Any], public_pem: str, kid: str) -> str:
    """HS256 keyed with the PEM public key: the classic algorithm-confusion forgery."""
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
    payload = _b64(claims)
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return (
        f"{header}.{payload}." + base64.urlsafe_b64encode(signature.digest()).rstrip(b"=").decode()
    )


def _resign(signer: Any, claims: dict[str, Any], *, kid: str) -> str:
    return jwt.encode(claims, signer.private_key, algorithm="RS256", headers={"kid": kid})


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenantId"] = "someone-else"
    return f"{header}.{_b64(claims)}.{signature}"


async def test_expiry_follows_the_clock(services: Services, settings: Settings) -> None:
    ring = services.keyring
    issued = datetime.now(UTC)
    token = ring.signer.sign(_claims(settings, exp=int(issued.timestamp()) + 60))
    assert await ring.verify(token, ACCESS_TYPES, issued)
    later = issued + timedelta(seconds=120)
    with freeze_time(later, real_asyncio=True), pytest.raises(Unauthenticated, match="expired"):
        await ring.verify(token, ACCESS_TYPES, utcnow())
