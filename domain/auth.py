"""Who is calling: the vendor (environment credentials) or an end user (IdP session JWT)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt

from domain.errors import Forbidden, Unauthenticated
from domain.keys import MasterKey
from domain.ratelimit import RateLimiter
from domain.secrets import equal

VENDOR_TOKEN_SECONDS = 3600
VENDOR_TOKEN_TYPE = "vendor"
# Every failed vendor authentication counts against one budget, whatever clientId it names.
VENDOR_LIMIT_SUBJECT = "environment"
END_USER_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. The vendor may do anything; a user what its roles allow."""

    kind: Literal["vendor", "user"]
    user_id: str | None = None
    tenant_id: str | None = None
    permissions: frozenset[str] = frozenset()

    @property
    def is_vendor(self) -> bool:
        return self.kind == "vendor"

    def require(self, permission: str) -> None:
        if not self.is_vendor and permission not in self.permissions:
            raise Forbidden(f"Missing permission {permission}")


VENDOR = Caller(kind="vendor")


class VendorAuthenticator:
    """Checks the environment's vendor credentials and issues short-lived vendor tokens.

    Tokens are HMAC-signed with a key derived from the master key and the vendor secret,
    so changing M2M_VENDOR_SECRET ends every vendor token issued under the old one.
    """

    def __init__(self, client_id: str, secret: str, master: MasterKey, issuer: str) -> None:
        self._client_id = client_id
        self._secret = secret
        self._issuer = issuer
        credentials = hashlib.sha256(f"{client_id}\0{secret}".encode()).digest()
        self._key = master.derive(b"m2m vendor token " + credentials)

    async def authenticate(
        self, limiter: RateLimiter, client_id: str, secret: str, *, address: str, now: datetime
    ) -> tuple[str, int]:
        """A vendor token and its lifetime in seconds, for the right credentials only.

        Failures are limited overall and per address (the vendor's budget in
        domain/ratelimit.py); a wrong clientId and a wrong secret are one failure alike.
        """
        vendor = limiter.vendor
        async with limiter.checking(vendor, VENDOR_LIMIT_SUBJECT, address=address, now=now):
            # Both comparisons always run: a wrong id costs what a wrong secret costs.
            id_ok = equal(client_id, self._client_id)
            secret_ok = equal(secret, self._secret)
            if not (id_ok and secret_ok):
                raise Unauthenticated("Invalid vendor credentials")
        claims = {
            "type": VENDOR_TOKEN_TYPE,
            "sub": self._client_id,
            "iss": self._issuer,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=VENDOR_TOKEN_SECONDS)).timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), VENDOR_TOKEN_SECONDS

    def is_vendor_token(self, token: str) -> bool:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                issuer=self._issuer,
                options={"require": ["exp", "iat", "type", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        return claims.get("type") == VENDOR_TOKEN_TYPE and claims.get("sub") == self._client_id


@dataclass(frozen=True)
class EndUserIdentity:
    user_id: str
    tenant_id: str


class EndUserVerifier:
    """Verifies session JWTs of the vendor's own identity provider (self-service)."""

    def __init__(
        self, *, public_key_pem: str | None, jwks_url: str | None, issuer: str | None
    ) -> None:
        self._public_key_pem = public_key_pem
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        self._issuer = issuer

    async def verify(self, token: str) -> EndUserIdentity:
        try:
            key = await self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=END_USER_ALGORITHMS,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            raise Unauthenticated("Invalid or expired session token") from None
        user_id, tenant_id = claims.get("sub"), claims.get("tenantId")
        if not isinstance(user_id, str) or not isinstance(tenant_id, str):
            raise Unauthenticated("Session token must carry sub and tenantId")
        return EndUserIdentity(user_id=user_id, tenant_id=tenant_id)

    async def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._public_key_pem
        # PyJWKClient fetches over the network when its cache misses: keep it off the loop.
        signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        return signing_key.key
