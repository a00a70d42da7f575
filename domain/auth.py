"""Who is calling: the vendor (environment credentials) or an end user (IdP session JWT)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeGuard

import jwt

from domain.errors import Forbidden, Unauthenticated
from domain.keys import MasterKey
from domain.ratelimit import RateLimiter
from domain.secrets import equal
from domain.settings import Settings

VENDOR_TOKEN_SECONDS = 3600
VENDOR_TOKEN_TYPE = "vendor"
# Every failed vendor authentication counts against one budget, whatever clientId it names.
VENDOR_LIMIT_SUBJECT = "environment"
END_USER_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
# Clock skew allowed between the IdP and this service on `exp`, `nbf` and `iat`.
END_USER_LEEWAY_SECONDS = 30
JWKS_CACHE_SECONDS = 300
JWKS_REFRESH_COOLDOWN_SECONDS = 30
# The longest user or tenant id (as the directory's columns).
MAX_ID_LENGTH = 255


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
    """Verifies session JWTs of the vendor's own identity provider (self-service).

    A session is accepted when its signature is the IdP's, its `exp` has not passed (and `nbf`
    and `iat`, when present, are not in the future), up to END_USER_LEEWAY_SECONDS of clock
    skew; its `iss` is M2M_USER_JWT_ISSUER and its `aud` names M2M_USER_JWT_AUDIENCE, each when
    set; and its `sub` (the user) and `tenantId` (the tenant) are ids: strings of 1 to
    MAX_ID_LENGTH characters without NUL. No other claim is read.
    """

    def __init__(
        self,
        *,
        public_key_pem: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None = None,
    ) -> None:
        self._public_key_pem = public_key_pem
        # Every kid the cached key set does not hold makes PyJWKClient fetch the set again, at
        # most once per cooldown: a flood of made-up kids costs the IdP one fetch per cooldown,
        # and a key the IdP rotated in is found at the latest one cooldown after its first use.
        # No per-kid cache: a key the IdP withdrew stops working when the cached set expires.
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                lifespan=JWKS_CACHE_SECONDS,
                cooldown_duration=JWKS_REFRESH_COOLDOWN_SECONDS,
            )
            if jwks_url
            else None
        )
        self._issuer = issuer
        self._audience = audience
        self._required = [
            "exp",
            "sub",
            *(["iss"] if issuer else []),
            *(["aud"] if audience else []),
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> EndUserVerifier | None:
        """The verifier the settings describe; None when self-service is off."""
        if not settings.self_service_enabled:
            return None
        return cls(
            public_key_pem=settings.user_jwt_public_key,
            jwks_url=settings.user_jwt_jwks_url,
            issuer=settings.user_jwt_issuer,
            audience=settings.user_jwt_audience,
        )

    async def verify(self, token: str) -> EndUserIdentity:
        try:
            key = await self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=END_USER_ALGORITHMS,
                issuer=self._issuer,
                audience=self._audience,
                leeway=END_USER_LEEWAY_SECONDS,
                # Without M2M_USER_JWT_AUDIENCE, `aud` is not looked at: most IdPs put one in
                # every session, naming the vendor's own application rather than this service.
                options={"require": self._required, "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError:
            raise Unauthenticated("Invalid or expired session token") from None
        user_id, tenant_id = claims.get("sub"), claims.get("tenantId")
        if not (_is_id(user_id) and _is_id(tenant_id)):
            raise Unauthenticated("Session token must carry sub and tenantId")
        return EndUserIdentity(user_id=user_id, tenant_id=tenant_id)

    async def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._public_key_pem
        # PyJWKClient fetches over the network when its cache misses: keep it off the loop.
        signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        return signing_key.key


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value
