"""The end users' portal: its API (/portal/v1), the hosted page /portal and its assets, and the
embeddable <m2m-api-tokens> component at /m2m-api-tokens.js."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from litestar import Request, Response, get

from api.dependencies import CallerDep, SessionDep
from api.guards import CALLER
from api.schemas.common import PathId
from api.schemas.portal import (
    MemberOut,
    PortalSessionOut,
    member_response,
    portal_session_response,
)
from domain import portal
from domain.errors import NotFound

SESSION = "/portal/v1/session"
TOKEN_CREATORS = "/portal/v1/token-creators"
PAGE = "/portal"
ASSETS = "/portal/assets"
COMPONENT = "/m2m-api-tokens.js"

# The pages ship inside the package (pyproject's package-data): nothing is fetched elsewhere.
WEB = resources.files("api") / "web" / "portal"
# Litestar adds "; charset=utf-8" to text types.
HTML = "text/html"
JAVASCRIPT = "text/javascript"
CSS = "text/css"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def _asset(name: str, media_type: str) -> Asset:
    return Asset((WEB / name).read_bytes(), media_type)


PAGE_ASSET = _asset("portal.html", HTML)
COMPONENT_ASSET = _asset("m2m-api-tokens.js", JAVASCRIPT)
PAGE_ASSETS = {
    "portal.css": _asset("portal.css", CSS),
    "portal.js": _asset("portal.js", JAVASCRIPT),
}


def _serve(
    request: Request[Any, Any, Any], asset: Asset, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """The file, revalidated on every use (`no-cache` and its ETag), so an upgrade of the
    service is seen at once and an unchanged file costs a 304."""
    headers = {"Cache-Control": "no-cache", "ETag": asset.etag, **(headers or {})}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(b"", status_code=304, headers=headers, media_type=asset.media_type)
    return Response(asset.body, headers=headers, media_type=asset.media_type)


# --- the API the component calls (besides the token routes themselves) ------------------------


@get(SESSION, dependencies=CALLER)
async def get_portal_session(caller: CallerDep, db_session: SessionDep) -> PortalSessionOut:
    """The signed-in end user, with its roles and permissions in its account (403 to the
    vendor, which has no account of its own)."""
    return portal_session_response(await portal.portal_session(db_session, caller))


@get(TOKEN_CREATORS, dependencies=CALLER)
async def get_token_creators(caller: CallerDep, db_session: SessionDep) -> list[MemberOut]:
    """Names and emails of the account's members who created its account tokens."""
    return [member_response(m) for m in await portal.token_creators(db_session, caller)]


# --- the hosted page and the component ---------------------------------------------------------


@get(PAGE, include_in_schema=False)
async def portal_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The hosted page: the session JWT arrives in the URL fragment, which no request carries."""
    return _serve(request, PAGE_ASSET, {"Referrer-Policy": "no-referrer"})


@get(ASSETS + "/{name:str}", include_in_schema=False)
async def portal_asset(request: Request[Any, Any, Any], name: PathId) -> Response[bytes]:
    asset = PAGE_ASSETS.get(name)
    if asset is None:
        raise NotFound(f"{ASSETS}/{name} not found")
    return _serve(request, asset)


@get(COMPONENT, include_in_schema=False)
async def component_script(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The component, loadable by any page: a module script from another origin is fetched in
    CORS mode, and this file holds no data. What the component then calls answers only the
    origins M2M_EMBED_ORIGINS lists (api/cors.py)."""
    return _serve(request, COMPONENT_ASSET, {"Access-Control-Allow-Origin": "*"})


ROUTES = [get_portal_session, get_token_creators, portal_page, portal_asset, component_script]
