"""Signing keys: creation, encryption at rest with the master key, and JWT signing."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import ENVIRONMENT_ROW_ID, Environment, SigningKey

RSA_KEY_BITS = 2048
NONCE_BYTES = 12


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
