"""The vendor's console: its page at /console, its assets, and the vendor-only reads it needs
beyond the Frontegg routes (/console/v1). Registered only while M2M_CONSOLE_ENABLED is true."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from litestar import MediaType, get
from litestar.datastructures import CacheControlHeader
from litestar.params import QueryParameter
from litestar.static_files import create_static_files_router

from api.dependencies import CallerDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import PathId
from api.schemas.console import (
    LimitsOut,
    TenantPageOut,
    TenantTokensOut,
    limits_response,
    named_user_ids,
    tenant_page_response,
    tenant_tokens_response,
)
from domain import console, tokens

PAGE = "/console"
ASSETS = "/console/assets"
TENANTS = "/console/v1/tenants"
TENANT_TOKENS = TENANTS + "/{tenant_id:str}/tokens"
LIMITS = "/console/v1/limits"

WEB = Path(__file__).resolve().parent.parent / "web" / "console"
# The page is the same for everyone: the data comes from the API, as the signed-in vendor's.
PAGE_HTML = (WEB / "index.html").read_bytes()
# Revalidated on every load, so an upgrade of the service never meets a page cached before it.
REVALIDATE = CacheControlHeader(no_cache=True)


@get(PAGE, media_type=MediaType.HTML, cache_control=REVALIDATE, include_in_schema=False)
async def console_page() -> bytes:
    return PAGE_HTML


assets = create_static_files_router(
    path=ASSETS,
    directories=[WEB / "assets"],
    name="console-assets",
    cache_control=REVALIDATE,
)


@get(TENANTS, dependencies=VENDOR_ONLY)
async def find_tenants(
    vendor: CallerDep,
    db_session: SessionDep,
    search: Annotated[str, QueryParameter()] = "",
    offset: Annotated[int, QueryParameter()] = 0,
    limit: Annotated[int, QueryParameter()] = console.DEFAULT_PAGE,
) -> TenantPageOut:
    """Tenants whose name or id contains `search`, by name, a page at a time, with the total.
    The domain bounds each value (400 beyond)."""
    page = await console.find_tenants(db_session, search, offset, limit)
    return tenant_page_response(page)


@get(TENANT_TOKENS, dependencies=VENDOR_ONLY)
async def tenant_tokens(
    tenant_id: PathId, vendor: CallerDep, db_session: SessionDep
) -> TenantTokensOut:
    """Every token of the tenant, the four kinds, with the users that own or created them."""
    listed = await tokens.tokens_of_tenant(db_session, tenant_id)
    users = await console.users_by_id(db_session, named_user_ids(listed))
    return tenant_tokens_response(listed, users)


@get(LIMITS, dependencies=VENDOR_ONLY)
async def limits(vendor: CallerDep) -> LimitsOut:
    """The bounds the configuration route enforces, for the settings form to show."""
    return limits_response()


ROUTES = [console_page, assets, find_tenants, tenant_tokens, limits]
