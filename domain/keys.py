"""Signing keys: creation, encryption at rest, rotation, JWT signing and verification, JWKS."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.errors import NotFound, Unauthenticated
from domain.models import ENVIRONMENT_ROW_ID, AccessToken, Environment, SigningKey

# No JWT from an exchange lives longer than the longest defaultTokenExpiration allowed.
MAX_EXCHANGE_TOKEN_SECONDS = 2_592_000
# An unknown kid reloads the keys from the database at most this often.
UNKNOWN_KID_RELOAD_SECONDS = 1.0

RSA_KEY_BITS = 2048
NONCE_BYTES = 12


class UnsupportedAlgorithm(Unauthenticated):
    """A JWT not signed with RS256: none of this service's tokens that validate (a vendor token,
    HS256, is one a caller may mistake for them; `alg` lets the caller say so)."""

    def __init__(self, alg: object) -> None:
        super().__init__("Unsupported token algorithm")
        self.alg = alg


class MasterKeyMismatch(Exception):
    """The master key cannot decrypt a stored signing key: it is not the one that encrypted it."""


class MasterKey:
    """M2M_MASTER_KEY: encrypts private keys at rest and derives purpose-bound keys."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead = AESGCM(self.derive(b"m2m signing-key encryption"))

    def derive(self, purpose: bytes, length: int = 32) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(
            self._key
        )

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, sealed: bytes, associated: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except InvalidTag:
            raise MasterKeyMismatch(
                "M2M_MASTER_KEY cannot decrypt the stored signing keys"
            ) from None


@dataclass(frozen=True)
class Signer:
    """The key that signs new tokens, ready to use."""

    kid: str
    private_key: rsa.RSAPrivateKey
    public_key_pem: str

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


async def ensure_signing_key(session: AsyncSession, master: MasterKey, now: datetime) -> Signer:
    """The active signing key, created on first start.

    The environment row is locked first so that API processes starting together create one key.
    """
    await session.execute(
        sa.select(Environment.id).where(Environment.id == ENVIRONMENT_ROW_ID).with_for_update()
    )
    row = await session.scalar(
        sa.select(SigningKey)
        .where(SigningKey.activated_at.is_not(None), SigningKey.retired_at.is_(None))
        .order_by(SigningKey.activated_at.desc())
        .limit(1)
    )
    if row is None:
        row = _new_signing_key(master, now)
        session.add(row)
        await session.flush()
    return _load(row, master)


def _new_signing_key(master: MasterKey, now: datetime) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    kid = uuid.uuid4().hex
    private_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SigningKey(
        kid=kid,
        public_key_pem=public_pem,
        private_key_encrypted=master.encrypt(private_der, kid.encode()),
        created_at=now,
        activated_at=now,
        retired_at=None,
    )


def _load(row: SigningKey, master: MasterKey) -> Signer:
    private_der = master.decrypt(row.private_key_encrypted, row.kid.encode())
    private_key = serialization.load_der_private_key(private_der, password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise TypeError(f"signing key {row.kid} is not an RSA key")
    return Signer(kid=row.kid, private_key=private_key, public_key_pem=row.public_key_pem)


def _published(now: datetime) -> sa.ColumnElement[bool]:
    """A key is published while a token it signed can still be valid."""
    live_access_token = sa.exists().where(
        AccessToken.signing_kid == SigningKey.kid,
        sa.or_(AccessToken.expires_at.is_(None), AccessToken.expires_at > now),
    )
    return sa.or_(
        SigningKey.retired_at.is_(None),
        SigningKey.retired_at > now - timedelta(seconds=MAX_EXCHANGE_TOKEN_SECONDS),
        live_access_token,
    )


async def published_keys(session: AsyncSession, now: datetime) -> list[SigningKey]:
    rows = await session.scalars(
        sa.select(SigningKey).where(_published(now)).order_by(SigningKey.created_at.desc())
    )
    return list(rows)


def public_jwk(row: SigningKey) -> dict[str, Any]:
    """The RFC 7517 form of a key's public half, as JWKS publishes it."""
    public_key = serialization.load_pem_public_key(row.public_key_pem.encode())
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError(f"signing key {row.kid} is not an RSA key")
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": row.kid, "use": "sig", "alg": "RS256"}


async def rotate_signing_key(session: AsyncSession, master: MasterKey, now: datetime) -> str:
    """A new key signs from now on; the old one retires but stays published (see _published).

    Raises MasterKeyMismatch, and changes nothing, when `master` cannot read the active key: a
    key sealed with it could not be read by the API processes either.
    """
    await session.execute(
        sa.select(Environment.id).where(Environment.id == ENVIRONMENT_ROW_ID).with_for_update()
    )
    active = await session.scalar(
        sa.select(SigningKey)
        .where(SigningKey.activated_at.is_not(None), SigningKey.retired_at.is_(None))
        .order_by(SigningKey.activated_at.desc())
        .limit(1)
    )
    if active is not None:
        master.decrypt(active.private_key_encrypted, active.kid.encode())
    await session.execute(
        sa.update(SigningKey)
        .where(SigningKey.activated_at.is_not(None), SigningKey.retired_at.is_(None))
        .values(retired_at=now)
    )
    # Imported here: the events module reaches this one through the audit's Caller.
    from domain import events

    row = _new_signing_key(master, now)
    session.add(row)
    events.announce(
        session,
        events.KEY_ROTATED,
        {"kid": row.kid, "retiredKid": active.kid if active is not None else None},
        now,
    )
    await session.flush()
    return row.kid


async def reencrypt_signing_keys(session: AsyncSession, current: MasterKey, new: MasterKey) -> int:
    """Seal every stored signing key, retired ones included, with `new`; the number of keys.

    Every key is decrypted before any is written, so a `current` that cannot read one of them
    raises MasterKeyMismatch and changes nothing. The environment row is locked, as a rotation
    locks it, so no key is added meanwhile.
    """
    await session.execute(
        sa.select(Environment.id).where(Environment.id == ENVIRONMENT_ROW_ID).with_for_update()
    )
    rows = list(await session.scalars(sa.select(SigningKey).order_by(SigningKey.created_at)))
    plain = [current.decrypt(row.private_key_encrypted, row.kid.encode()) for row in rows]
    for row, private_der in zip(rows, plain, strict=True):
        row.private_key_encrypted = new.encrypt(private_der, row.kid.encode())
    await session.flush()
    return len(rows)


async def _active_key(session: AsyncSession) -> SigningKey:
    row = await session.scalar(
        sa.select(SigningKey)
        .where(SigningKey.activated_at.is_not(None), SigningKey.retired_at.is_(None))
        .order_by(SigningKey.activated_at.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound("No active signing key")
    return row


class KeyRing:
    """The key this process signs with and every published key it verifies with, by kid.

    Reloaded by `refresh` (periodically, and when a token names a kid it does not know), so a
    rotation made by any process reaches every process without a restart.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        master: MasterKey,
        issuer: str,
        signer: Signer,
    ) -> None:
        self._sessions = sessions
        self._master = master
        self.issuer = issuer
        self._signer = signer
        self._public: dict[str, Any] = {}
        self._jwks: list[dict[str, Any]] = []
        self._last_reload = 0.0

    @classmethod
    async def load(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        master: MasterKey,
        issuer: str,
        now: datetime,
    ) -> KeyRing:
        async with sessions() as session:
            signer = await ensure_signing_key(session, master, now)
            await session.commit()
        ring = cls(sessions, master, issuer, signer)
        await ring.refresh(now)
        return ring

    @property
    def signer(self) -> Signer:
        return self._signer

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._jwks)}

    async def refresh(self, now: datetime) -> None:
        async with self._sessions() as session:
            rows = await published_keys(session, now)
            active = await _active_key(session)
        if active.kid != self._signer.kid:
            self._signer = _load(active, self._master)
        self._public = {
            row.kid: serialization.load_pem_public_key(row.public_key_pem.encode()) for row in rows
        }
        self._jwks = [public_jwk(row) for row in rows]
        self._last_reload = time.monotonic()

    async def verify(self, token: str, types: Collection[str], now: datetime) -> dict[str, Any]:
        """The claims of a JWT this service signed, of one of `types`; Unauthenticated otherwise.

        Only RS256 with a published kid, our issuer, and no expired or not-yet-valid token.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("Malformed token") from None
        if header.get("alg") != "RS256":
            raise UnsupportedAlgorithm(header.get("alg"))
        kid = header.get("kid")
        key = self._public.get(kid) if isinstance(kid, str) else None
        if key is None and isinstance(kid, str):
            key = await self._reload_for(kid, now)
        if key is None:
            raise Unauthenticated("Unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"require": ["sub", "iat", "type"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Token expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("Invalid token") from None
        if claims.get("type") not in types:
            raise Unauthenticated("Wrong token type for this header")
        return claims

    async def _reload_for(self, kid: str, now: datetime) -> Any:
        if time.monotonic() - self._last_reload >= UNKNOWN_KID_RELOAD_SECONDS:
            await self.refresh(now)
        return self._public.get(kid)
