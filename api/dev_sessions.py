"""Dev mode's local session issuer: its key pair in the data directory, the trust `m2m dev` gives
it, and the signed-in /portal links `m2m portal-link` prints.

`m2m serve` never reads a data directory, so it never trusts this issuer.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import OperationalError

from api.dev import (
    CREDENTIALS_FILE,
    DATABASE_FILE,
    DataDirectoryError,
    DevCredentials,
    DevEnvironment,
    _write_private,  # the data directory's one way to write a private file
)
from domain.db import create_engine, create_session_factory
from domain.portal import dev_portal_member
from domain.settings import Settings

SESSION_ISSUER_FILE: Final = "session-issuer.pem"
# The `iss` of the sessions it signs; `m2m dev` requires it, so no other issuer's JWT passes.
LOCAL_SESSION_ISSUER: Final = "urn:m2m-tokens:dev-session-issuer"
LINK_LIFETIME: Final = timedelta(hours=1)
MAX_ID = 255
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def session_issuer_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The local issuer's private key (P-256), made with mode 0600 the first time it is needed."""
    path = data_dir / SESSION_ISSUER_FILE
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # False when another process made it meanwhile: theirs is read below.
        _write_private(path, pem.decode())
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        loaded = None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise DataDirectoryError(
            f"{path} is damaged; remove it and a new one is made (older links stop working)"
        )
    return loaded


def trusts_its_own_issuer(settings: Settings) -> bool:
    """Whether M2M_USER_JWT_* leaves end users' sessions to the local issuer."""
    return not (
        settings.user_jwt_public_key or settings.user_jwt_jwks_url or settings.user_jwt_issuer
    )


def trusting_local_sessions(settings: Settings, data_dir: Path) -> Settings:
    """`m2m dev`'s settings: end users' session JWTs signed by the local issuer are trusted,
    unless M2M_USER_JWT_* configures a trust of its own (then only that one)."""
    if not trusts_its_own_issuer(settings):
        return settings
    public_pem = (
        session_issuer_key(data_dir)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return dataclasses.replace(
        settings, user_jwt_public_key=public_pem, user_jwt_issuer=LOCAL_SESSION_ISSUER
    )


def existing_dev_directory(path: Path) -> DevEnvironment:
    """The data directory of an `m2m dev` that has started at least once; nothing is made."""
    path = path.expanduser().absolute()
    credentials = path / CREDENTIALS_FILE
    if not (path.is_dir() and credentials.is_file() and (path / DATABASE_FILE).is_file()):
        raise DataDirectoryError(
            f"{path} is not an m2m dev data directory: start `m2m dev --data {path}` once first"
        )
    try:
        known = DevCredentials.from_json(credentials.read_text())
    except (ValueError, KeyError, TypeError):
        raise DataDirectoryError(f"{credentials} is damaged") from None
    return DevEnvironment(path=path, credentials=known, created=False)


def check_link_request(tenant_id: str, email: str) -> None:
    if not tenant_id or len(tenant_id) > MAX_ID or "\x00" in tenant_id:
        raise DataDirectoryError(f"--tenant must be 1 to {MAX_ID} characters")
    if len(email) > MAX_ID or not EMAIL.match(email):
        raise DataDirectoryError(f"--user must be an email address, got {email!r}")


async def portal_link(
    environment: DevEnvironment,
    settings: Settings,
    *,
    tenant_id: str,
    email: str,
    port: int,
    now: datetime,
) -> str:
    """A /portal link signed in (for an hour) as the user `email` of the tenant, both created in
    the dev database when missing. The link's session JWT sits in its fragment."""
    check_link_request(tenant_id, email)
    engine = create_engine(settings.database_url, pooled=False)
    try:
        async with create_session_factory(engine)() as session:
            user = await dev_portal_member(session, tenant_id, email, now)
            await session.commit()
    except OperationalError:
        raise DataDirectoryError(
            f"the database in {environment.path} cannot be used; start `m2m dev --data"
            f" {environment.path}` once to migrate it"
        ) from None
    finally:
        await engine.dispose()
    claims = {
        "sub": user.id,
        "tenantId": tenant_id,
        "email": user.email,
        "iss": LOCAL_SESSION_ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + LINK_LIFETIME).timestamp()),
    }
    token = jwt.encode(claims, session_issuer_key(environment.path), algorithm="ES256")
    return f"http://127.0.0.1:{port}/portal#token={token}"
