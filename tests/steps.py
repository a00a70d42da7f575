"""Steps that drive the app under test through its HTTP API (create a token, exchange, refresh,
validate, check an answer's shape), or that hand the running app another collaborator."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar

from api.app import create_app, start_services
from api.state import Services
from domain.clock import utcnow
from domain.secrets import SecretHasher
from domain.settings import Settings
from tests.factories import READ, Factory
from tests.kinds import Kind
from tests.suite import ARGON2_PARAMETERS
from workers.inprocess import InProcessJobs

CONFIG = "/identity/resources/configurations/v1"
VALIDATE = "/identity/resources/auth/v1/validate"
EXCHANGE = "/identity/resources/auth/v2/api-token"
REFRESH = "/identity/resources/auth/v2/api-token/token/refresh"
OAUTH_TOKEN = "/oauth/token"
OAUTH_REVOKE = "/oauth/revoke"
USER_ACCESS = "/identity/resources/users/access-tokens/v1"
TENANT_ACCESS = "/identity/resources/tenants/access-tokens/v1"
USER_API = "/identity/resources/users/api-tokens/v1"
TENANT_API = "/identity/resources/tenants/api-tokens/v1"
TENANT_API_V2 = "/identity/resources/tenants/api-tokens/v2"
# The same two creation routes, under the names the exchange helpers give them.
TENANT_API_TOKENS = "/identity/resources/tenants/api-tokens/v2"
USER_API_TOKENS = "/identity/resources/users/api-tokens/v1"

INVALID_REFRESH = {"errors": ["Invalid refresh token"]}
DISABLED = {"errors": ["Api tokens are disabled"]}
PAIR_KEYS = {"access_token", "refresh_token", "expires_in", "expires"}


# --- the environment configuration ------------------------------------------------------------


async def set_environment(
    client: httpx.AsyncClient, vendor: dict[str, str], **settings: Any
) -> None:
    response = await client.post(CONFIG, headers=vendor, json=settings)
    assert response.status_code == 201, response.text


async def configure(client: httpx.AsyncClient, vendor: dict[str, str], **config: Any) -> None:
    response = await client.post(CONFIG, headers=vendor, json=config)
    assert response.status_code == 201, response.text


# --- token management, any kind ---------------------------------------------------------------


def vendor_acting(
    vendor: dict[str, str], kind: Kind, tenant_id: str, user_id: str | None
) -> dict[str, str]:
    """Vendor headers naming the tenant, and the user for user kinds."""
    headers = {**vendor, "frontegg-tenant-id": tenant_id}
    if kind.for_user and user_id is not None:
        headers["frontegg-user-id"] = user_id
    return headers


async def use_strategy(client: httpx.AsyncClient, vendor: dict[str, str], kind: Kind) -> None:
    response = await client.post(
        CONFIG, headers=vendor, json={"machineToMachineAuthStrategy": kind.strategy}
    )
    assert response.status_code == 201, response.text


async def create(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    kind: Kind,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response = await client.post(kind.creates, headers=headers, json={**kind.body, **(body or {})})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def listed_ids(client: httpx.AsyncClient, headers: dict[str, str], kind: Kind) -> list[str]:
    response = await client.get(kind.path, headers=headers)
    assert response.status_code == 200, response.text
    return [item[kind.id_key] for item in kind.listed(response.json())]


async def verified_claims(
    client: httpx.AsyncClient, vendor: dict[str, str], token: str
) -> dict[str, Any]:
    """The claims of an access token, checked against the key the configuration publishes."""
    config = await client.get(CONFIG, headers=vendor)
    claims: dict[str, Any] = jwt.decode(
        token,
        config.json()["publicKey"],
        algorithms=["RS256"],
        issuer="http://m2m.test",
        options={"require": ["iss", "iat", "sub"]},
    )
    return claims


def assert_argon2id_hash_of(secret_hash: str, secret: str) -> None:
    """An argon2id hash of `secret` under the parameters the test app runs with."""
    parameters = ARGON2_PARAMETERS
    assert secret_hash.startswith(
        f"$argon2id$v=19$m={parameters.memory_kib},t={parameters.time_cost},"
        f"p={parameters.parallelism}$"
    )
    assert secret not in secret_hash
    assert PasswordHasher().verify(secret_hash, secret)


async def delete_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    path: str,
    token_id: str,
    tenant_id: str,
    user_id: str | None = None,
) -> None:
    headers = {**vendor, "frontegg-tenant-id": tenant_id}
    if user_id is not None:
        headers["frontegg-user-id"] = user_id
    response = await client.delete(f"{path}/{token_id}", headers=headers)
    assert response.status_code == 200, response.text


# --- access tokens and credentials for validation ---------------------------------------------


async def create_access_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    *,
    user_id: str | None = None,
    role_ids: list[str] | None = None,
    minutes: int | None = None,
) -> dict[str, Any]:
    """A user access token (user_id given) or a tenant access token, through the routes."""
    return await _create_token(
        client,
        vendor,
        "AccessToken",
        USER_ACCESS,
        TENANT_ACCESS,
        tenant_id,
        user_id,
        role_ids,
        minutes,
    )


async def create_credential(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    *,
    user_id: str | None = None,
    role_ids: list[str] | None = None,
    minutes: int | None = None,
) -> dict[str, Any]:
    """User client credentials (user_id given) or tenant ones, through the routes."""
    return await _create_token(
        client,
        vendor,
        "ClientCredentials",
        USER_API,
        TENANT_API_V2,
        tenant_id,
        user_id,
        role_ids,
        minutes,
    )


async def _create_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    strategy: str,
    user_path: str,
    tenant_path: str,
    tenant_id: str,
    user_id: str | None,
    role_ids: list[str] | None,
    minutes: int | None,
) -> dict[str, Any]:
    """The environment switched to `strategy`, then a user token (user_id given) or a tenant
    token with `role_ids`, created by the vendor."""
    await configure(client, vendor, machineToMachineAuthStrategy=strategy)
    headers = {**vendor, "frontegg-tenant-id": tenant_id}
    body: dict[str, Any] = {}
    if minutes is not None:
        body["expiresInMinutes"] = minutes
    if user_id is not None:
        headers["frontegg-user-id"] = user_id
        path = user_path
    else:
        path = tenant_path
        body["roleIds"] = role_ids or []
    response = await client.post(path, headers=headers, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def credential_jwt(
    services: Services,
    settings: Settings,
    credential: dict[str, Any],
    *,
    tenant_id: str,
    user_id: str | None = None,
    roles: list[str] | None = None,
    permissions: list[str] | None = None,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(hours=1),
) -> str:
    """The JWT an exchange of this credential returns, with the claims an exchange puts in it."""
    issued = now or utcnow()
    claims: dict[str, Any] = {
        "type": "userApiToken" if user_id is not None else "tenantApiToken",
        "sub": credential["clientId"],
        "tenantId": tenant_id,
        "roles": roles if roles is not None else ["reader"],
        "permissions": permissions if permissions is not None else [READ],
        "metadata": {},
        "createdByUserId": user_id,
        "iss": settings.issuer,
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
    }
    if user_id is not None:
        claims["userId"] = user_id
    return str(services.signer.sign(claims))


# --- validation -------------------------------------------------------------------------------


def api_key(token: str) -> dict[str, str]:
    return {"X-API-KEY": token}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def validate(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(VALIDATE, headers=headers)


# --- exchange and refresh ---------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A client credential created through the API, with the secret shown once."""

    client_id: str
    secret: str = field(repr=False)
    tenant_id: str
    user_id: str | None = None

    @property
    def body(self) -> dict[str, str]:
        return {"clientId": self.client_id, "secret": self.secret}


async def tenant_credential(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    *,
    role_ids: list[str] | None = None,
    permission_ids: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    expires_in_minutes: int | None = None,
) -> Credential:
    body: dict[str, Any] = {"metadata": metadata or {}}
    if role_ids:
        body["roleIds"] = role_ids
    if permission_ids:
        body["permissionIds"] = permission_ids
    if expires_in_minutes is not None:
        body["expiresInMinutes"] = expires_in_minutes
    response = await client.post(
        TENANT_API_TOKENS, headers={**vendor, "frontegg-tenant-id": tenant_id}, json=body
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return Credential(client_id=created["clientId"], secret=created["secret"], tenant_id=tenant_id)


async def user_credential(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    user_id: str,
    *,
    metadata: dict[str, Any] | None = None,
) -> Credential:
    response = await client.post(
        USER_API_TOKENS,
        headers={**vendor, "frontegg-tenant-id": tenant_id, "frontegg-user-id": user_id},
        json={"metadata": metadata or {}},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return Credential(
        client_id=created["clientId"],
        secret=created["secret"],
        tenant_id=tenant_id,
        user_id=user_id,
    )


async def simple_credential(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> Credential:
    """A tenant credential holding one permission, in a tenant of its own."""
    tenant = await factory.tenant()
    permission = await factory.permission()
    return await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])


async def exchange_ok(
    client: httpx.AsyncClient, credential: Credential, path: str = EXCHANGE
) -> dict[str, Any]:
    response = await client.post(path, json=credential.body)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refreshToken": refresh_token})


async def refresh_ok(client: httpx.AsyncClient, refresh_token: str) -> dict[str, Any]:
    response = await refresh(client, refresh_token)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


# --- OAuth ------------------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> dict[str, str]:
    """client_secret_basic as RFC 6749 defines it: form-urlencode each part first."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def posted(credential: Credential) -> dict[str, str]:
    return {"client_id": credential.client_id, "client_secret": credential.secret}


def assert_oauth_error(
    response: httpx.Response, status: int, error: str, message: str | None = None
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description", "errors"}
    assert body["error"] == error
    assert body["errors"] == [body["error_description"]]
    if message is not None:
        assert body["error_description"] == message


# --- the running app's collaborators and jobs -------------------------------------------------


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """Another API process: services of its own on `settings` (another database, other timeouts),
    and a client over its app; closed at the end."""
    services = await start_services(settings)
    app = create_app(settings)
    app.state.services = services
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
            yield services, client
    finally:
        await services.close()


@contextmanager
def replaced(services: Services, name: str, value: Any) -> Iterator[Any]:
    """Give the running app another collaborator (a limiter, a hasher) for one block."""
    original = getattr(services, name)
    setattr(services, name, value)
    try:
        yield value
    finally:
        setattr(services, name, original)


class CountingHasher(SecretHasher):
    """The real argon2 hasher (with the suite's parameters), noting whether each verification
    had a stored hash, and counting the argon2 verifications it really ran (a dummy hash's
    included)."""

    def __init__(self, max_pending: int | None = None) -> None:
        super().__init__(ARGON2_PARAMETERS, max_pending=max_pending)
        self.verified_stored_hash: list[bool] = []
        self._argon2_runs = 0
        self._argon2_runs_lock = threading.Lock()

    @property
    def argon2_verifications(self) -> int:
        return self._argon2_runs

    async def verify(self, encoded: str | None, secret: str) -> bool:
        self.verified_stored_hash.append(encoded is not None)
        return await super().verify(encoded, secret)

    def _verify(self, encoded: str, secret: str) -> bool:
        # The argon2 work itself, on the pool's threads.
        with self._argon2_runs_lock:
            self._argon2_runs += 1
        return super()._verify(encoded, secret)


@asynccontextmanager
async def client_at(app: Litestar, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app under test whose requests come from `address` (the socket's peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
        yield client


async def finish_jobs(services: Services) -> None:
    """Run the jobs that requests have enqueued so far (the user-deletion cascade, ...)."""
    assert isinstance(services.jobs, InProcessJobs)
    await services.jobs.drain()


async def until(condition: Any, what: str, *, within: float = 5.0) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails past `within`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        if loop.time() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.001)  # yield to the listener; the deadline bounds the wait
    return loop.time() - start


# --- GitHub secret scanning, played locally ----------------------------------------------------


class GitHubScanner:
    """Plays GitHub's secret-scanning side: ECDSA P-256 keys in GitHub's key-list format, and
    signed report bodies. Nothing here calls GitHub."""

    def __init__(self, identifiers: tuple[str, ...] = ("github-key-1", "github-key-2")) -> None:
        self.keys = {
            identifier: ec.generate_private_key(ec.SECP256R1()) for identifier in identifiers
        }

    def key_list(self) -> bytes:
        """`{"public_keys": [{"key_identifier", "key", "is_current"}]}`, as GitHub serves it."""
        listed = [
            {
                "key_identifier": identifier,
                "key": key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode(),
                "is_current": index == 0,
            }
            for index, (identifier, key) in enumerate(self.keys.items())
        ]
        return json.dumps({"public_keys": listed}).encode()

    def signed(
        self, matches: list[dict[str, Any]], identifier: str = "github-key-1"
    ) -> tuple[bytes, dict[str, str]]:
        """A report body and the headers GitHub sends with it."""
        body = json.dumps(matches).encode()
        signature = self.keys[identifier].sign(body, ec.ECDSA(hashes.SHA256()))
        return body, {
            "Content-Type": "application/json",
            "Github-Public-Key-Identifier": identifier,
            "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
        }


# --- the revocation feed ----------------------------------------------------------------------


@asynccontextmanager
async def feed_entries(services: Services) -> AsyncIterator[list[dict[str, Any]]]:
    """The revocation feed entries published while the block runs (filled as it leaves)."""
    published: list[dict[str, Any]] = []
    start = await services.feed.newest_id()
    yield published
    published.extend(entry.data for entry in await services.feed.after(start, block_ms=1))


def answers_forever(route: Any) -> bool:
    """A route whose answer never ends (the live revocation feed, an event stream): a walk over
    every route that reads whole answers leaves it out; tests/test_revocations.py tries it."""
    handlers = getattr(route, "route_handlers", [])
    return any(handler.media_type == "text/event-stream" for handler in handlers)
