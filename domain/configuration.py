"""Environment settings (Frontegg's vendor configuration): the M2M switch and strategy.

The M2M switch turns every token of the environment on or off. It is stored as
`api_tokens_enabled` (Frontegg's `apiTokensEnabled`); everywhere else in the code it is "the M2M
switch", and `switch_m2m` is the one function that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.auth import Caller
from domain.errors import Disabled, Forbidden
from domain.jobs import PROPAGATE_M2M_SWITCH
from domain.models import ENVIRONMENT_ROW_ID, Environment

Strategy = Literal["AccessToken", "ClientCredentials"]

# Stored and echoed for Frontegg clients; they steer nothing in this service.
EXTRA_DEFAULTS: dict[str, Any] = {
    "cookieSameSite": "NONE",
    "allowSignups": True,
    "allowOverridePasswordComplexity": False,
    "allowOverridePasswordExpiration": False,
    "allowOverrideEnforcePasswordHistory": False,
    "jwtAlgorithm": "RS256",
    "allowNotVerifiedUsersLogin": False,
    "forcePermissions": False,
    "authStrategy": "EmailAndPassword",
    "defaultPasswordlessTokenExpiration": 900,
    "forceSameDeviceOnAuth": False,
    "allowTenantInvitations": True,
    "rotateRefreshTokens": True,
    "addRolesToJwt": True,
    "addPermissionsToJwt": True,
    "addSamlAttributesToJwt": False,
    "allowCustomLoginTenantSwitch": False,
    "skipTenantValidation": False,
}


@dataclass(frozen=True)
class ConfigurationChange:
    """Fields a vendor may change; None leaves a field as it is."""

    api_tokens_enabled: bool | None = None
    m2m_strategy: Strategy | None = None
    default_token_expiration: int | None = None
    default_refresh_token_expiration: int | None = None
    extra: dict[str, Any] | None = None


async def get_environment(session: AsyncSession) -> Environment:
    environment = await session.get(Environment, ENVIRONMENT_ROW_ID)
    if environment is None:
        raise RuntimeError("the environment row is missing: run `m2m migrate`")
    return environment


def extra_settings(environment: Environment) -> dict[str, Any]:
    return {**EXTRA_DEFAULTS, **environment.extra}


def switch_m2m(environment: Environment, on: bool) -> AfterCommit:
    """Turn M2M on or off: the row now, and after the commit the validity cache (in effect on
    this process before the response, on every other within the cache's bound) and the
    propagation job that brings every process and the whole cache in line.

    Turning it off touches no token; turning it on again restores exactly the tokens that are
    still valid.
    """
    environment.api_tokens_enabled = on
    return AfterCommit().set_m2m_switch(on).enqueue(PROPAGATE_M2M_SWITCH)


async def update_configuration(
    session: AsyncSession, caller: Caller, change: ConfigurationChange, now: datetime
) -> tuple[Environment, AfterCommit]:
    # Locked so that two concurrent updates cannot interleave their read-modify-write.
    environment = await session.scalar(
        sa.select(Environment).where(Environment.id == ENVIRONMENT_ROW_ID).with_for_update()
    )
    if environment is None:
        raise RuntimeError("the environment row is missing: run `m2m migrate`")
    changed: dict[str, Any] = {}
    after = AfterCommit()
    if change.api_tokens_enabled is not None:
        if change.api_tokens_enabled != environment.api_tokens_enabled:
            changed["api_tokens_enabled"] = change.api_tokens_enabled
            events.announce(
                session, events.M2M_SWITCHED, {"enabled": change.api_tokens_enabled}, now
            )
        # Sent at all, it is propagated again: that also repairs a process that missed it.
        after = switch_m2m(environment, change.api_tokens_enabled)
        if "api_tokens_enabled" in changed:
            after.revoke("m2mSwitch", enabled=change.api_tokens_enabled)
    for field in (
        "m2m_strategy",
        "default_token_expiration",
        "default_refresh_token_expiration",
    ):
        value = getattr(change, field)
        if value is not None and value != getattr(environment, field):
            changed[field] = value
            setattr(environment, field, value)
    if change.extra:
        merged = {**environment.extra, **change.extra}
        if merged != environment.extra:
            changed["extra"] = sorted(change.extra)
            environment.extra = merged
    if changed:
        environment.updated_at = now
        audit.record(
            session,
            caller,
            "configuration.updated",
            target_type="environment",
            target_id=str(ENVIRONMENT_ROW_ID),
            now=now,
            details={"changed": sorted(changed)},
        )
        await session.flush()
    return environment, after


def require_creation_allowed(environment: Environment, strategy: Strategy) -> None:
    """New tokens need M2M on and the environment's strategy to be their kind."""
    if not environment.api_tokens_enabled:
        raise Disabled()
    if environment.m2m_strategy != strategy:
        kind = "access tokens" if strategy == "AccessToken" else "client credentials"
        raise Forbidden(
            f"The environment's machineToMachineAuthStrategy is {environment.m2m_strategy}; "
            f"{kind} cannot be created"
        )
