"""Leak reports: recognise a reported value as one of ours, and act on it once by the
environment's leak policy (revoke it, or only record and announce it)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import jwt
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.auth import Caller
from domain.db import upsert_insert
from domain.errors import Unauthenticated, Unavailable
from domain.exchange import EXCHANGE_TOKEN_TYPES, usable_refresh_token
from domain.keys import KeyRing
from domain.models import AccessToken, ClientCredential, LeakReport, RefreshToken
from domain.secrets import CLIENT_SECRET, REFRESH_TOKEN, SecretShape, sha256_hex
from domain.settings import LeakPolicy
from domain.tokens import ACCESS_TOKEN_ROWS, CREDENTIAL_ROWS, delete_found_token
from domain.validity.verdict import EXPIRED_MESSAGE

logger = logging.getLogger("m2m.leaks")

ACCESS_TOKEN_TYPES = frozenset({"userAccessToken", "tenantAccessToken"})

# What a reported value turned out to be.
LeakKind = Literal["client_secret", "refresh_token", "access_token", "client_credential_jwt"]
# What the report did, or why it did nothing.
Outcome = Literal["revoked", "notified", "already_reported", "not_live", "not_ours", "malformed"]

MESSAGES: dict[Outcome, str] = {
    "revoked": "Revoked: the leaked {kind} no longer works",
    "notified": "Recorded: the leaked {kind} still works (leak policy notify)",
    "already_reported": "Already reported: this leak was acted on before; nothing changed",
    "not_live": "Not live: the {kind} had expired, or was revoked or deleted; nothing changed",
    "not_ours": "Not ours: no token or secret of this service has this value; nothing changed",
    "malformed": "Malformed: this service's shape with a wrong checksum; nothing changed",
}


@dataclass(frozen=True)
class Leak:
    """A value reported as leaked, and where it was found."""

    token: str = field(repr=False)
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class LeakVerdict:
    """What a report found and did. `live`: the value was ours and worked when reported
    (GitHub's true_positive)."""

    outcome: Outcome
    kind: LeakKind | None = None
    target_id: str | None = None
    live: bool = False

    @property
    def message(self) -> str:
        return MESSAGES[self.outcome].format(kind=(self.kind or "token").replace("_", " "))


@dataclass(frozen=True)
class _Found:
    """A value recognised as ours: what it is, the row it stands for, and whether it works."""

    kind: LeakKind
    target_id: str
    tenant_id: str | None
    live: bool
    family_id: str | None = None  # refresh tokens: the family a revocation ends
    client_id: str | None = None  # refresh tokens: the credential that issued it
    user_id: str | None = None  # refresh tokens of a personal credential: its user


@dataclass
class LeakReporting:
    """What reporting needs besides the session: the policy, the shape, the keys, who reports."""

    policy: LeakPolicy
    shape: SecretShape
    keyring: KeyRing
    reporter: str  # "github", or "vendor" for POST /leaks
    caller: Caller | None = None  # None: recorded as the service itself (a signed GitHub call)
    after: AfterCommit = field(default_factory=AfterCommit)


async def report_leak(
    session: AsyncSession, reporting: LeakReporting, leak: Leak, now: datetime
) -> LeakVerdict:
    """Act on one leaked value: under `revoke` end it (a client secret: its credential is
    deleted, with every refresh token and JWT it issued; a refresh token: its family is revoked;
    an access token: deleted; a client-credential JWT: its credential is deleted, the only way to
    end it), under `notify` only record it; announce either. The cache writes are added to
    `reporting.after`, for the caller to apply once it has committed.

    A value that is not ours, no longer live, or malformed changes nothing. The same value
    reported again (or concurrently) acts once: the first report's row in leak_reports is the
    lock the others wait on.
    """
    value = leak.token.strip()
    fingerprint = sha256_hex(value)
    if reporting.shape.shaped(value) and reporting.shape.kind_of(value) is None:
        return LeakVerdict("malformed")
    found = await _recognise(session, reporting, value, now)
    if found is None or not found.live:
        if await _reported_before(session, fingerprint):
            return LeakVerdict("already_reported", found.kind if found else None)
        if found is None:
            return LeakVerdict("not_ours")
        return LeakVerdict("not_live", found.kind, found.target_id)
    action: Literal["revoked", "notified"] = (
        "revoked" if reporting.policy == "revoke" else "notified"
    )
    first = await session.scalar(
        upsert_insert(session, LeakReport)
        .values(
            fingerprint=fingerprint,
            action=action,
            kind=found.kind,
            target_id=found.target_id,
            tenant_id=found.tenant_id,
            source=leak.source,
            url=leak.url,
            reported_at=now,
        )
        .on_conflict_do_nothing(index_elements=[LeakReport.fingerprint, LeakReport.action])
        .returning(LeakReport.fingerprint)
    )
    if first is None:
        return LeakVerdict("already_reported", found.kind, found.target_id, live=True)
    if action == "revoked" and not await _revoke(session, reporting, found, now):
        # Ended by someone else between the read and now: nothing was done, nothing recorded.
        await session.execute(
            sa.delete(LeakReport).where(
                LeakReport.fingerprint == fingerprint, LeakReport.action == action
            )
        )
        return LeakVerdict("not_live", found.kind, found.target_id)
    await announce_leak(session, reporting, leak, found, action, now)
    await session.flush()
    return LeakVerdict(action, found.kind, found.target_id, live=True)


async def announce_leak(
    session: AsyncSession,
    reporting: LeakReporting,
    leak: Leak,
    found: _Found,
    action: Literal["revoked", "notified"],
    now: datetime,
) -> None:
    """The one place a leak acted on is made known: an audit event with the report's source URL,
    and the outbound `token.leaked` event (never the value itself)."""
    target_type = {
        "client_secret": "client_credential",
        "client_credential_jwt": "client_credential",
        "access_token": "access_token",
        "refresh_token": "refresh_token_family",
    }[found.kind]
    audit.record(
        session,
        reporting.caller,
        f"leak.{action}",
        target_type=target_type,
        target_id=found.family_id or found.target_id,
        now=now,
        tenant_id=found.tenant_id,
        details={
            "kind": found.kind,
            "reporter": reporting.reporter,
            "url": leak.url,
            "source": leak.source,
            "policy": reporting.policy,
            # A refresh token's leak is filed under its family; these let the credential's
            # (and its user's) trail find it.
            **_owner_of(found),
        },
        # A report from a scanner (GitHub) has no caller: the leak report itself acted.
        actor=audit.Actor(audit.LEAK_REPORT, reporting.reporter),
    )
    data: dict[str, Any] = {
        "id": found.family_id or found.target_id,
        "kind": found.kind,
        "tenantId": found.tenant_id,
        "action": action,
        "reporter": reporting.reporter,
        "url": leak.url,
        "source": leak.source,
        **_owner_of(found),
    }
    events.announce(session, events.TOKEN_LEAKED, data, now)


def _owner_of(found: _Found) -> dict[str, str]:
    """A leaked refresh token's credential (`clientId`) and, for a personal one, its user."""
    owner: dict[str, str] = {}
    if found.client_id is not None:
        owner["clientId"] = found.client_id
    if found.user_id is not None:
        owner["userId"] = found.user_id
    return owner


# --- recognising a value -----------------------------------------------------------------------


async def _recognise(
    session: AsyncSession, reporting: LeakReporting, value: str, now: datetime
) -> _Found | None:
    if value.count(".") == 2:
        return await _jwt(session, reporting.keyring, value, now)
    kind = reporting.shape.kind_of(value)
    lookup = sha256_hex(value)
    if kind in (None, CLIENT_SECRET):
        # The current secret, or the one a rotation replaced while its overlap lets it exchange.
        credential = await _credential(
            session,
            sa.or_(
                ClientCredential.secret_lookup == lookup,
                sa.and_(
                    ClientCredential.previous_secret_lookup == lookup,
                    ClientCredential.previous_secret_expires_at > now,
                ),
            ),
            now,
        )
        if credential is not None:
            return credential
    if kind in (None, REFRESH_TOKEN):
        # Refresh tokens made before the shape existed are found by value too.
        return await _refresh_token(session, lookup, now)
    return None


async def _jwt(session: AsyncSession, keyring: KeyRing, value: str, now: datetime) -> _Found | None:
    """An access token or an exchanged JWT this service signed; an expired one is ours but dead."""
    try:
        claims = await keyring.verify(value, ACCESS_TOKEN_TYPES | EXCHANGE_TOKEN_TYPES, now)
    except Unauthenticated as error:
        if error.message != EXPIRED_MESSAGE:
            return None
        claims = _unverified_claims(value)
        kind: LeakKind = (
            "access_token" if claims.get("type") in ACCESS_TOKEN_TYPES else "client_credential_jwt"
        )
        return _Found(kind, str(claims.get("sub")), None, live=False)
    subject = str(claims["sub"])
    if claims["type"] in ACCESS_TOKEN_TYPES:
        row = (
            await session.execute(
                sa.select(AccessToken.tenant_id, AccessToken.expires_at).where(
                    AccessToken.id == subject
                )
            )
        ).first()
        if row is None:
            return _Found("access_token", subject, None, live=False)
        live = row.expires_at is None or row.expires_at > now
        return _Found("access_token", subject, row.tenant_id, live=live)
    credential = await _credential(session, ClientCredential.client_id == subject, now)
    if credential is None:
        return _Found("client_credential_jwt", subject, None, live=False)
    return _Found("client_credential_jwt", subject, credential.tenant_id, live=credential.live)


def _unverified_claims(value: str) -> dict[str, Any]:
    """The claims of a token whose signature verify() accepted before refusing its expiry."""
    claims: dict[str, Any] = jwt.decode(value, options={"verify_signature": False})
    return claims


async def _credential(
    session: AsyncSession, where: sa.ColumnElement[bool], now: datetime
) -> _Found | None:
    row = (
        await session.execute(
            sa.select(
                ClientCredential.client_id, ClientCredential.tenant_id, ClientCredential.expires_at
            ).where(where)
        )
    ).first()
    if row is None:
        return None
    live = row.expires_at is None or row.expires_at > now
    return _Found("client_secret", row.client_id, row.tenant_id, live=live)


async def _refresh_token(session: AsyncSession, lookup: str, now: datetime) -> _Found | None:
    usable = sa.and_(*usable_refresh_token(RefreshToken, now))
    row = (
        await session.execute(
            sa.select(
                RefreshToken.id,
                RefreshToken.family_id,
                RefreshToken.client_id,
                ClientCredential.tenant_id,
                ClientCredential.user_id,
                usable.label("usable"),
            )
            .join(ClientCredential, ClientCredential.client_id == RefreshToken.client_id)
            .where(RefreshToken.token_hash == lookup)
        )
    ).first()
    if row is None:
        return None
    return _Found(
        "refresh_token",
        row.id,
        row.tenant_id,
        live=bool(row.usable),
        family_id=row.family_id,
        client_id=row.client_id,
        user_id=row.user_id,
    )


async def _reported_before(session: AsyncSession, fingerprint: str) -> bool:
    reported = await session.scalar(
        sa.select(sa.literal(1)).where(LeakReport.fingerprint == fingerprint).limit(1)
    )
    return reported is not None


# --- revoking ----------------------------------------------------------------------------------


async def _revoke(
    session: AsyncSession, reporting: LeakReporting, found: _Found, now: datetime
) -> bool:
    """End what `found` stands for, by the paths deletion and reuse detection use; False when
    there was nothing left to end."""
    if found.kind == "refresh_token":
        revoked = await session.scalars(
            sa.update(RefreshToken)
            .where(
                RefreshToken.family_id == found.family_id,
                *usable_refresh_token(RefreshToken, sa.literal(now, RefreshToken.created_at.type)),
            )
            .values(revoked_at=now)
            .returning(RefreshToken.id)
        )
        if not list(revoked):
            return False
        reporting.after.revoke(
            "refreshTokenFamily", familyId=found.family_id, clientId=found.client_id
        )
        return True
    rows = ACCESS_TOKEN_ROWS if found.kind == "access_token" else CREDENTIAL_ROWS
    after = await delete_found_token(session, rows, found.target_id)
    if after is None:
        return False
    reporting.after.delete_tokens(
        access_token_ids=after.deleted_access_tokens, client_ids=after.deleted_credentials
    )
    return True


# --- GitHub's secret-scanning partner protocol ---------------------------------------------

GITHUB_KEY_IDENTIFIER = "github-public-key-identifier"
GITHUB_KEY_SIGNATURE = "github-public-key-signature"
# A key identifier never seen is looked up again at most this often (a forged identifier must
# not make every request fetch the key list).
GITHUB_KEYS_REFETCH_SECONDS = 60.0
GITHUB_KEYS_TIMEOUT_SECONDS = 5.0
MAX_GITHUB_KEYS_BYTES = 1_000_000


class GitHubScanningNotConfigured(Unauthenticated):
    def __init__(self) -> None:
        super().__init__(
            "GitHub secret scanning reports are not accepted: set"
            " M2M_GITHUB_SECRET_SCANNING_KEYS_URL or M2M_GITHUB_SECRET_SCANNING_KEYS_FILE"
        )


class GitHubSignatureRejected(Unauthenticated):
    """No signature, an unknown key identifier, or a signature that does not verify."""


class GitHubScanningKeys:
    """GitHub's secret-scanning public keys (`{"public_keys": [{"key_identifier", "key",
    "is_current"}]}`), from a URL or a file, kept by identifier and read again when a request
    names one not known yet."""

    def __init__(self, url: str | None, file: str | None) -> None:
        self._url = url
        self._file = file
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._read_at: float | None = None

    @property
    def configured(self) -> bool:
        return bool(self._url or self._file)

    async def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """GitHubSignatureRejected unless `body` carries an ECDSA P-256 / SHA-256 signature, in
        base64 DER, of the key its identifier names."""
        if not self.configured:
            raise GitHubScanningNotConfigured()
        identifier = headers.get(GITHUB_KEY_IDENTIFIER, "").strip()
        signature = headers.get(GITHUB_KEY_SIGNATURE, "").strip()
        if not identifier or not signature:
            raise GitHubSignatureRejected(
                "Github-Public-Key-Identifier and Github-Public-Key-Signature are required"
            )
        key = await self._key(identifier)
        try:
            key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise GitHubSignatureRejected("Invalid GitHub signature") from None

    async def _key(self, identifier: str) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(identifier)
        if key is None and (
            self._read_at is None or time.monotonic() - self._read_at >= GITHUB_KEYS_REFETCH_SECONDS
        ):
            self._keys = await asyncio.to_thread(self._read)
            self._read_at = time.monotonic()
            key = self._keys.get(identifier)
        if key is None:
            raise GitHubSignatureRejected("Unknown Github-Public-Key-Identifier")
        return key

    def _read(self) -> dict[str, ec.EllipticCurvePublicKey]:
        try:
            if self._file:
                with open(self._file, "rb") as opened:
                    raw = opened.read(MAX_GITHUB_KEYS_BYTES)
            else:
                assert self._url is not None
                # The setting admits http and https URLs only (domain/settings.py).
                request = urllib.request.Request(  # noqa: S310
                    self._url, headers={"Accept": "application/json"}
                )
                with urllib.request.urlopen(  # noqa: S310
                    request, timeout=GITHUB_KEYS_TIMEOUT_SECONDS
                ) as answer:
                    raw = answer.read(MAX_GITHUB_KEYS_BYTES)
            listed = json.loads(raw)["public_keys"]
            keys: dict[str, ec.EllipticCurvePublicKey] = {}
            for entry in listed:
                key = serialization.load_pem_public_key(entry["key"].encode())
                if isinstance(key, ec.EllipticCurvePublicKey):
                    keys[str(entry["key_identifier"])] = key
            return keys
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("cannot read GitHub's secret-scanning keys: %r", error)
            raise Unavailable("GitHub's secret-scanning keys cannot be read now") from None


@dataclass(frozen=True)
class GitHubMatch:
    """One match GitHub reports: the token, the secret type registered for it, where it was."""

    token: str = field(repr=False)
    type: str
    url: str | None
    source: str | None


async def report_github_matches(
    session: AsyncSession, reporting: LeakReporting, matches: Sequence[GitHubMatch], now: datetime
) -> list[LeakVerdict]:
    """Each match acted on as a leak report, in order; a value listed twice acts once."""
    return [
        await report_leak(session, reporting, Leak(match.token, match.url, match.source), now)
        for match in matches
    ]
