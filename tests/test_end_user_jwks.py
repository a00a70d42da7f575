"""Self-service trust through M2M_USER_JWT_JWKS_URL: session JWTs verified by the IdP's JWKS."""

from __future__ import annotations

import inspect
import json
import threading
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from packaging.requirements import Requirement

from domain.auth import JWKS_CACHE_SECONDS, JWKS_REFRESH_COOLDOWN_SECONDS, EndUserVerifier
from domain.errors import Unauthenticated

ISSUER = "https://idp.jwks.test"


@pytest.fixture(scope="module")
def idp() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(idp: rsa.RSAPrivateKey) -> Iterator[str]:
    """A real HTTP JWKS endpoint on 127.0.0.1 publishing the IdP's key as kid `idp-1`."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(idp.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def _session(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": "user-1",
        "tenantId": "acme",
        "iss": ISSUER,
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


async def test_a_session_signed_by_a_jwks_key_identifies_the_user(
    idp: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    verifier = EndUserVerifier(public_key_pem=None, jwks_url=jwks_url, issuer=ISSUER)
    identity = await verifier.verify(_session(idp, "idp-1"))
    assert (identity.user_id, identity.tenant_id) == ("user-1", "acme")


@pytest.mark.parametrize("problem", ["other key", "unknown kid", "wrong issuer", "no tenantId"])
async def test_sessions_the_jwks_does_not_vouch_for_are_refused(
    idp: rsa.RSAPrivateKey, jwks_url: str, problem: str
) -> None:
    verifier = EndUserVerifier(public_key_pem=None, jwks_url=jwks_url, issuer=ISSUER)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "other key": _session(stranger, "idp-1"),
        "unknown kid": _session(idp, "idp-2"),
        "wrong issuer": _session(idp, "idp-1", iss="https://evil.test"),
        "no tenantId": _session(idp, "idp-1", tenantId=None),
    }[problem]
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


# --- a flood of unknown kids, and rotation ------------------------------------------------------


class JwksClock:
    """The monotonic clock PyJWKClient reads (its refresh cooldown, its key set's age), moved by
    the test. The verifier asks PyJWKClient in a worker thread, where freezegun keeps real time."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def jwks_clock(monkeypatch: pytest.MonkeyPatch) -> JwksClock:
    clock = JwksClock()
    for module in (jwt.jwks_client, jwt.jwk_set_cache, jwt.api_jwk):
        monkeypatch.setattr(module, "time", clock)
    return clock


class Idp:
    """A real HTTP JWKS endpoint on 127.0.0.1 that counts its fetches and publishes the keys the
    test gives it."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.url = ""

    def publish(self, kid: str) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]

    def body(self) -> bytes:
        published = [
            {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}
            for kid, key in self.keys.items()
        ]
        return json.dumps({"keys": published}).encode()


@pytest.fixture
def idp_server() -> Iterator[Idp]:
    idp = Idp()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.fetches += 1
            body = idp.body()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    idp.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()


async def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_cooldown(
    idp_server: Idp, jwks_clock: JwksClock
) -> None:
    key = idp_server.publish("idp-1")
    verifier = EndUserVerifier(public_key_pem=None, jwks_url=idp_server.url, issuer=ISSUER)
    await verifier.verify(_session(key, "idp-1"))
    assert idp_server.fetches == 1

    for attempt in range(200):
        with pytest.raises(Unauthenticated):
            await verifier.verify(_session(key, f"made-up-{attempt}"))
        jwks_clock.advance(0.1)  # 200 attempts over 20 s: all within one 30 s cooldown

    assert idp_server.fetches == 1
    jwks_clock.advance(JWKS_REFRESH_COOLDOWN_SECONDS)
    for attempt in range(50):
        with pytest.raises(Unauthenticated):
            await verifier.verify(_session(key, f"made-up-again-{attempt}"))
    assert idp_server.fetches == 2  # one more, once the cooldown is over


async def test_a_key_the_idp_rotates_in_is_used_once_the_cooldown_allows_a_fetch(
    idp_server: Idp, jwks_clock: JwksClock
) -> None:
    old = idp_server.publish("idp-1")
    verifier = EndUserVerifier(public_key_pem=None, jwks_url=idp_server.url, issuer=ISSUER)
    await verifier.verify(_session(old, "idp-1"))
    new = idp_server.publish("idp-2")  # the IdP rotates: sessions are signed by the new key

    jwks_clock.advance(JWKS_REFRESH_COOLDOWN_SECONDS + 1)
    identity = await verifier.verify(_session(new, "idp-2"))
    still = await verifier.verify(_session(old, "idp-1"))

    assert (identity.user_id, identity.tenant_id) == ("user-1", "acme")
    assert still.user_id == "user-1"
    assert idp_server.fetches == 2


async def test_a_key_the_idp_withdrew_is_refused_once_the_cached_key_set_expires(
    idp_server: Idp, jwks_clock: JwksClock
) -> None:
    withdrawn = idp_server.publish("idp-1")
    kept = idp_server.publish("idp-2")
    verifier = EndUserVerifier(public_key_pem=None, jwks_url=idp_server.url, issuer=ISSUER)
    await verifier.verify(_session(withdrawn, "idp-1"))
    del idp_server.keys["idp-1"]  # a leaked key, say

    jwks_clock.advance(JWKS_CACHE_SECONDS + 1)
    with pytest.raises(Unauthenticated):
        await verifier.verify(_session(withdrawn, "idp-1"))
    assert (await verifier.verify(_session(kept, "idp-2"))).user_id == "user-1"


def test_every_pyjwt_the_project_accepts_limits_unknown_kid_fetches() -> None:
    """PyJWKClient refetches for an unknown kid at most once per cooldown from PyJWT 2.14 on
    (before, once per token: a flood of made-up kids became a flood of JWKS fetches); 2.15 also
    turns a deeply nested payload, which the JWKS path decodes before any signature check, into
    a DecodeError rather than a RecursionError."""
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    wanted = [Requirement(line) for line in project["project"]["dependencies"]]
    pyjwt = next(requirement for requirement in wanted if requirement.name.lower() == "pyjwt")

    assert not pyjwt.specifier.contains("2.14.0")
    assert not pyjwt.specifier.contains("2.13.0")
    assert pyjwt.specifier.contains("2.15.0")
    assert "cooldown_duration" in inspect.signature(jwt.PyJWKClient).parameters
