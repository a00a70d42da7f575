"""DI providers (services, database session, clock, the acting principal, the client address) and
the markers routes declare them with."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.common import OptionalTenantHeader, OptionalUserHeader
from api.state import Services
from domain.auth import Caller
from domain.clock import utcnow
from domain.errors import MissingHeader
from domain.logs import current_request_origin
from domain.ratelimit import client_address
from domain.tokens import TENANT_HEADER, Acting

ServicesDep: TypeAlias = NamedDependency[Services]
SessionDep: TypeAlias = NamedDependency[AsyncSession]
# SkipValidation: freezegun's datetime is not a datetime to Litestar's signature check.
NowDep: TypeAlias = NamedDependency[SkipValidation[datetime]]
CallerDep: TypeAlias = NamedDependency[Caller]
ActingDep: TypeAlias = NamedDependency[Acting]
ClientAddressDep: TypeAlias = NamedDependency[str]
# The tenant a vendor names in frontegg-tenant-id where a route needs one (guards.VENDOR_IN_TENANT).
TenantDep: TypeAlias = NamedDependency[str]


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


def provide_tenant_id(vendor: CallerDep, tenant_header: OptionalTenantHeader) -> str:
    """The tenant the vendor names, refused when missing with the message the token routes give
    (a required Litestar header would answer with its own). After authentication: a request
    without valid credentials is answered 401 whatever its headers hold."""
    if tenant_header is None:
        raise MissingHeader(TENANT_HEADER)
    return tenant_header


def provide_client_address(request: Request[Any, Any, Any], services: ServicesDep) -> str:
    """The address the rate limits count this request by: the socket's peer, or what the
    trusted proxies (M2M_TRUSTED_PROXIES) say in X-Forwarded-For (domain/ratelimit.py). The
    audit trail records it for whatever the request changes."""
    address = client_address(
        request.client.host if request.client else None,
        request.headers.getall("x-forwarded-for", []),
        services.settings.trusted_proxies,
    )
    origin = current_request_origin.get()
    if origin is not None:
        origin.address = address
    return address
