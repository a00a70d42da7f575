"""DI providers (services, database session, clock, the acting principal) and the markers routes
declare them with."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TypeAlias

from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.common import OptionalTenantHeader, OptionalUserHeader
from api.state import Services
from domain.auth import Caller
from domain.clock import utcnow
from domain.tokens import Acting

ServicesDep: TypeAlias = NamedDependency[Services]
SessionDep: TypeAlias = NamedDependency[AsyncSession]
# SkipValidation: freezegun's datetime is not a datetime to Litestar's signature check.
NowDep: TypeAlias = NamedDependency[SkipValidation[datetime]]
CallerDep: TypeAlias = NamedDependency[Caller]
ActingDep: TypeAlias = NamedDependency[Acting]


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_db_session(services: ServicesDep) -> AsyncGenerator[AsyncSession, None]:
    """One session per request; the route handler commits, once."""
    async with services.sessions() as session:
        yield session


def provide_now() -> datetime:
    return utcnow()


def provide_acting(
    caller: CallerDep, tenant_id: OptionalTenantHeader, user_id: OptionalUserHeader
) -> Acting:
    """The tenant and user a vendor names in frontegg-tenant-id / frontegg-user-id (an end
    user's own session decides for it; the domain ignores what it names).

    It takes the caller so that it runs after authentication: a request without valid
    credentials is answered 401 whatever its headers hold.
    """
    return Acting(tenant_id, user_id)
