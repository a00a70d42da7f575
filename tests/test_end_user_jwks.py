"""Self-service trust through M2M_USER_JWT_JWKS_URL: session JWTs verified by the IdP's JWKS."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from domain.auth import EndUserVerifier
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
