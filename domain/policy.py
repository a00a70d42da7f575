"""Account token policies: the limits an account sets on its tokens, and the checks that apply them.

A policy is one row per tenant (none: no limits). Each rule has a name, the policy's own field
name, and every refusal names it: `maxExpiresInMinutes`, `requireExpiration`,
`maxRotationOverlapMinutes`, `maxTokens.<kind>`. Tightening a policy shortens nothing that
exists: `exceeding` reports the tokens it would refuse today.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.models import AccessToken, ClientCredential, TokenPolicy, User
from domain.validity.fills import not_deleted, survived_revocations

PolicyKind = Literal["userApiToken", "tenantApiToken", "userAccessToken", "tenantAccessToken"]
POLICY_KINDS: Final[tuple[PolicyKind, ...]] = (
    "userApiToken",
    "tenantApiToken",
    "userAccessToken",
    "tenantAccessToken",
)
# The column of TokenPolicy holding the most tokens of each kind.
_MAX_TOKENS_COLUMN: Final[Mapping[PolicyKind, str]] = {
    "userApiToken": "max_user_api_tokens",
    "tenantApiToken": "max_tenant_api_tokens",
    "userAccessToken": "max_user_access_tokens",
    "tenantAccessToken": "max_tenant_access_tokens",
}
MAX_EXPIRES_IN_MINUTES: Final = 5_256_000  # ten years: the longest expiration of any token
# A rotation's overlap is never longer than this, whatever the policy says.
MAX_ROTATION_OVERLAP_MINUTES: Final = 7 * 24 * 60
MAX_TOKENS_LIMIT: Final = 100_000

RULE_MAX_EXPIRATION: Final = "maxExpiresInMinutes"
RULE_REQUIRE_EXPIRATION: Final = "requireExpiration"
RULE_MAX_OVERLAP: Final = "maxRotationOverlapMinutes"


def max_tokens_rule(kind: PolicyKind) -> str:
    return f"maxTokens.{kind}"


class PolicyViolation(InvalidInput):
    """A token change outside the account's token policy (400, naming the rule)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{message} (account token policy: {rule})")
        self.rule = rule


@dataclass(frozen=True)
class Policy:
    """An account's token policy; None is "no limit"."""

    max_expires_in_minutes: int | None = None
    require_expiration: bool = False
    max_rotation_overlap_minutes: int | None = None
    max_tokens: Mapping[PolicyKind, int | None] = field(
        default_factory=lambda: dict.fromkeys(POLICY_KINDS)
    )
    updated_at: datetime | None = None

    def most_tokens(self, kind: PolicyKind) -> int | None:
        return self.max_tokens.get(kind)

    @property
    def longest_rotation_overlap(self) -> timedelta:
        """The longest overlap a rotation may ask for in this account: the policy's, within
        the service's own bound of seven days."""
        minutes = MAX_ROTATION_OVERLAP_MINUTES
        if self.max_rotation_overlap_minutes is not None:
            minutes = min(minutes, self.max_rotation_overlap_minutes)
        return timedelta(minutes=minutes)


NO_POLICY: Final = Policy()


def _policy_of(row: TokenPolicy | None) -> Policy:
    if row is None:
        return NO_POLICY
    return Policy(
        max_expires_in_minutes=row.max_expires_in_minutes,
        require_expiration=row.require_expiration,
        max_rotation_overlap_minutes=row.max_rotation_overlap_minutes,
        max_tokens={kind: getattr(row, column) for kind, column in _MAX_TOKENS_COLUMN.items()},
        updated_at=row.updated_at,
    )


async def effective_policy(session: AsyncSession, tenant_id: str) -> Policy:
    """The tenant's policy now (no row: no limits)."""
    return _policy_of(await session.get(TokenPolicy, tenant_id))


async def policy_for_creation(session: AsyncSession, tenant_id: str, kind: PolicyKind) -> Policy:
    """The tenant's policy for creating a token of `kind`. When it caps how many tokens of the
    kind there may be, its row stays locked until the creation commits: concurrent creations
    in the account take turns, so each counts the others' tokens and the cap holds."""
    policy = await effective_policy(session, tenant_id)
    if policy.most_tokens(kind) is None:
        return policy
    locked = await session.scalar(
        sa.select(TokenPolicy)
        .where(TokenPolicy.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return _policy_of(locked)


# --- the checks ------------------------------------------------------------------------------


def require_expiration_allowed(policy: Policy, expires_in_minutes: int | None) -> None:
    """A token that expires after `expires_in_minutes` (None: never) is within the policy."""
    longest = policy.max_expires_in_minutes
    if expires_in_minutes is None:
        if longest is not None:
            raise PolicyViolation(
                RULE_MAX_EXPIRATION,
                f"expiresInMinutes is required: tokens of this account expire within {longest}"
                " minutes",
            )
        if policy.require_expiration:
            raise PolicyViolation(
                RULE_REQUIRE_EXPIRATION, "expiresInMinutes is required: tokens must expire"
            )
        return
    if longest is not None and expires_in_minutes > longest:
        raise PolicyViolation(
            RULE_MAX_EXPIRATION, f"expiresInMinutes must be at most {longest} in this account"
        )


def require_kept_expiry_allowed(policy: Policy, expires_at: datetime | None, now: datetime) -> None:
    """A token made now that keeps an earlier token's expiry `expires_at` (None: never), as a
    rolled access token does, is within the policy: the same rules as a creation's expiration,
    measured from now."""
    longest = policy.max_expires_in_minutes
    kept = "a rolled token keeps its expiry: create a new token instead"
    if expires_at is None:
        if longest is not None:
            raise PolicyViolation(
                RULE_MAX_EXPIRATION,
                f"this token never expires, but tokens of this account expire within {longest}"
                f" minutes; {kept}",
            )
        if policy.require_expiration:
            raise PolicyViolation(
                RULE_REQUIRE_EXPIRATION,
                f"this token never expires, but tokens of this account must expire; {kept}",
            )
        return
    if longest is not None and expires_at - now > timedelta(minutes=longest):
        raise PolicyViolation(
            RULE_MAX_EXPIRATION,
            f"this token expires more than {longest} minutes from now, the longest this account"
            f" allows; {kept}",
        )


def require_rotation_overlap_allowed(policy: Policy, overlap: timedelta) -> None:
    """A rotation's overlap is within the policy's longest (and the service's seven days)."""
    longest = policy.longest_rotation_overlap
    if overlap > longest:
        minutes = int(longest.total_seconds() // 60)
        raise PolicyViolation(
            RULE_MAX_OVERLAP, f"the overlap must be at most {minutes} minutes in this account"
        )


def require_room_for_one_more(policy: Policy, kind: PolicyKind, existing: int) -> None:
    """One more token of `kind` fits: `existing` live ones of the same owner are counted."""
    most = policy.most_tokens(kind)
    if most is not None and existing >= most:
        raise PolicyViolation(
            max_tokens_rule(kind),
            f"at most {most} token(s) of kind {kind} may exist"
            + (" per user" if kind.startswith("user") else "")
            + " in this account",
        )


# --- setting a policy, and what it finds exceeding ------------------------------------------


def validate(policy: Policy) -> None:
    """The values a policy may hold."""
    if policy.max_expires_in_minutes is not None and not (
        1 <= policy.max_expires_in_minutes <= MAX_EXPIRES_IN_MINUTES
    ):
        raise InvalidInput(f"maxExpiresInMinutes must be from 1 to {MAX_EXPIRES_IN_MINUTES}")
    overlap = policy.max_rotation_overlap_minutes
    if overlap is not None and not 0 <= overlap <= MAX_ROTATION_OVERLAP_MINUTES:
        raise InvalidInput(
            f"maxRotationOverlapMinutes must be from 0 to {MAX_ROTATION_OVERLAP_MINUTES}"
        )
    for kind in POLICY_KINDS:
        most = policy.most_tokens(kind)
        if most is not None and not 0 <= most <= MAX_TOKENS_LIMIT:
            raise InvalidInput(f"maxTokens.{kind} must be from 0 to {MAX_TOKENS_LIMIT}")


async def store(session: AsyncSession, tenant_id: str, policy: Policy, now: datetime) -> Policy:
    """Write the tenant's policy (replacing any), its row locked until the commit."""
    row = await session.get(TokenPolicy, tenant_id, with_for_update=True)
    if row is None:
        row = TokenPolicy(tenant_id=tenant_id)
        session.add(row)
    row.max_expires_in_minutes = policy.max_expires_in_minutes
    row.require_expiration = policy.require_expiration
    row.max_rotation_overlap_minutes = policy.max_rotation_overlap_minutes
    for kind, column in _MAX_TOKENS_COLUMN.items():
        setattr(row, column, policy.most_tokens(kind))
    row.updated_at = now
    await session.flush()
    return _policy_of(row)


@dataclass(frozen=True)
class Exceeding:
    """A token the policy would refuse today (it stays as it is), or an owner with more tokens
    of a kind than the policy allows."""

    rule: str
    kind: PolicyKind
    user_id: str | None
    token_id: str | None = None
    expires_at: datetime | None = None
    count: int | None = None


async def exceeding(
    session: AsyncSession, tenant_id: str, policy: Policy, now: datetime
) -> list[Exceeding]:
    """What in the tenant lies outside `policy`: tokens expiring later than its longest
    expiration from now (or never), and owners over a kind's cap."""
    found: list[Exceeding] = []
    tables: tuple[tuple[Any, Any, PolicyKind, PolicyKind], ...] = (
        (ClientCredential, ClientCredential.client_id, "userApiToken", "tenantApiToken"),
        (AccessToken, AccessToken.id, "userAccessToken", "tenantAccessToken"),
    )
    for model, id_column, user_kind, tenant_kind in tables:
        live = _live_tokens(model, tenant_id, now)
        expiry = _outside_expiration(model, policy, now)
        if expiry is not None:
            rows = await session.execute(
                sa.select(id_column, model.user_id, model.expires_at)
                .where(*live, expiry[1])
                .order_by(model.created_at, id_column)
            )
            for token_id, user_id, expires_at in rows:
                kind = user_kind if user_id is not None else tenant_kind
                found.append(Exceeding(expiry[0], kind, user_id, token_id, expires_at))
        for kind in (user_kind, tenant_kind):
            most = policy.most_tokens(kind)
            if most is None:
                continue
            owner = model.user_id.is_not(None) if kind == user_kind else model.user_id.is_(None)
            counted = await session.execute(
                sa.select(model.user_id, sa.func.count())
                .where(*live, owner)
                .group_by(model.user_id)
                .having(sa.func.count() > most)
                .order_by(model.user_id)
            )
            for user_id, count in counted:
                found.append(Exceeding(max_tokens_rule(kind), kind, user_id, count=count))
    return found


def _outside_expiration(
    model: Any, policy: Policy, now: datetime
) -> tuple[str, sa.ColumnElement[bool]] | None:
    if policy.max_expires_in_minutes is not None:
        latest = now + timedelta(minutes=policy.max_expires_in_minutes)
        return RULE_MAX_EXPIRATION, sa.or_(model.expires_at.is_(None), model.expires_at > latest)
    if policy.require_expiration:
        return RULE_REQUIRE_EXPIRATION, model.expires_at.is_(None)
    return None


def _live_tokens(model: Any, tenant_id: str, now: datetime) -> list[sa.ColumnElement[bool]]:
    """The tenant's tokens in `model` that count: not expired, not revoked with every token of
    their owner, not of a deleted user."""
    return [*live_tokens_of(model, now), model.tenant_id == tenant_id]


def live_tokens_of(model: Any, now: datetime) -> list[sa.ColumnElement[bool]]:
    """Conditions on `model` (AccessToken or ClientCredential): the token counts against a cap,
    having neither expired, nor been revoked with every token of its tenant or user, nor lost
    its user."""
    user_deleted = sa.select(User.id).where(User.id == model.user_id, ~not_deleted(User)).exists()
    return [
        sa.or_(model.expires_at.is_(None), model.expires_at > now),
        survived_revocations(model),
        ~user_deleted,
    ]
