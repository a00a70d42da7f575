"""The vendor's console: its page at /console, its assets, and the vendor-only reads it needs
beyond the Frontegg routes (/console/v1). Registered only while M2M_CONSOLE_ENABLED is true."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import QueryParameter

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
from domain.errors import NotFound

PAGE = "/console"
ASSET = "/console/assets/{name:str}"
TENANTS = "/console/v1/tenants"
TENANT_TOKENS = TENANTS + "/{tenant_id:str}/tokens"
LIMITS = "/console/v1/limits"

WEB = Path(__file__).resolve().parent.parent / "web" / "console"
# The page is the same for everyone: the data comes from the API, as the signed-in vendor's.
PAGE_HTML = (WEB / "index.html").read_bytes()
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The assets, read once: a name is looked up here and never becomes a filesystem path.
ASSETS = {
    path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
    for path in sorted((WEB / "assets").iterdir())
    if path.suffix in MEDIA_TYPES
}
# The bounds domain/console.py enforces with its own messages, stated for the API reference.
SEARCH_BOUNDS = {"maxLength": console.MAX_SEARCH, "pattern": "^[^\\x00]*$"}
OFFSET_BOUNDS = {"minimum": 0, "maximum": console.MAX_OFFSET}
LIMIT_BOUNDS = {"minimum": 1, "maximum": console.MAX_PAGE}
# Revalidated on every load, so an upgrade of the service never meets a page cached before it.
REVALIDATE = CacheControlHeader(no_cache=True)


@get(PAGE, media_type=MediaType.HTML, cache_control=REVALIDATE, include_in_schema=False)
async def console_page() -> bytes:
    return PAGE_HTML


@get(ASSET, cache_control=REVALIDATE, include_in_schema=False)
async def console_asset(name: PathId) -> Response[bytes]:
    if name not in ASSETS:
        raise NotFound(f"No console asset {name}")
    content, media_type = ASSETS[name]
    return Response(content, media_type=media_type)


@get(TENANTS, dependencies=VENDOR_ONLY)
async def find_tenants(
    vendor: CallerDep,
    db_session: SessionDep,
    search: Annotated[str, QueryParameter(schema_extra=SEARCH_BOUNDS)] = "",
    offset: Annotated[int, QueryParameter(schema_extra=OFFSET_BOUNDS)] = 0,
    limit: Annotated[int, QueryParameter(schema_extra=LIMIT_BOUNDS)] = console.DEFAULT_PAGE,
) -> TenantPageOut:
    """Tenants whose name or id contains `search`, by name, a page at a time, with the total.
    The domain bounds each value (400 beyond); the API reference states the bounds."""
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


ROUTES = [console_page, console_asset, find_tenants, tenant_tokens, limits]
