"""Authentication of the caller: the vendor, or an end user with the permissions its roles give."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from api.dependencies import (
    ServicesDep,
    SessionDep,
    provide_acting,
    provide_client_address,
    provide_tenant_id,
)
from domain.auth import VENDOR, Caller
from domain.errors import Forbidden, Unauthenticated
from domain.grants import permissions_of


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    """The token in `x-access-token`, or (without that header) in `Authorization: Bearer`. A
    request carries one credential: an `x-access-token` present but empty is a missing token,
    not a reason to look at another header."""
    token = request.headers.get("x-access-token")
    if token is not None:
        return token.strip() or None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def provide_vendor(request: Request[Any, Any, Any], services: ServicesDep) -> Caller:
    """Only the vendor passes."""
    provide_client_address(request, services)  # for the audit trail of what it changes
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("Missing vendor token")
    if not services.vendor.is_vendor_token(token):
        raise Unauthenticated("Invalid or expired vendor token")
    return VENDOR


async def provide_metrics_reader(request: Request[Any, Any, Any], services: ServicesDep) -> bool:
    """The vendor passes; anyone does when M2M_METRICS_PUBLIC is true (the figures show the
    service's traffic and its jobs' health, nothing of any token)."""
    if services.settings.metrics_public:
        return True
    await provide_vendor(request, services)
    return True


async def provide_caller(
    request: Request[Any, Any, Any], services: ServicesDep, db_session: SessionDep
) -> Caller:
    """The vendor, or (when self-service is configured) an end user with its permissions."""
    provide_client_address(request, services)  # for the audit trail of what it changes
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("Missing token")
    if services.vendor.is_vendor_token(token):
        return VENDOR
    if services.end_users is None:
        raise Unauthenticated("Invalid or expired vendor token")
    identity = await services.end_users.verify(token)
    permissions = await permissions_of(db_session, identity.user_id, identity.tenant_id)
    if permissions is None:
        raise Forbidden("User is not a member of this account")
    return Caller(
        kind="user",
        user_id=identity.user_id,
        tenant_id=identity.tenant_id,
        permissions=permissions,
    )


VENDOR_ONLY = {"vendor": Provide(provide_vendor)}
# The vendor, acting in the tenant it must name in frontegg-tenant-id.
VENDOR_IN_TENANT = {**VENDOR_ONLY, "tenant_id": Provide(provide_tenant_id, sync_to_thread=False)}
# The caller, and (for the token routes) the tenant and user it names in the frontegg-* headers.
CALLER = {
    "caller": Provide(provide_caller),
    "acting": Provide(provide_acting, sync_to_thread=False),
}
# The vendor, or any member of an account (an end user's session): reads meant for both.
VENDOR_OR_MEMBER = {"caller": Provide(provide_caller)}
METRICS_READER = {"metrics_reader": Provide(provide_metrics_reader)}
