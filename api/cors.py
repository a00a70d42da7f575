"""CORS for the origins M2M_EMBED_ORIGINS lists, on the routes the embedded <m2m-api-tokens>
component calls, and nowhere else.

The component sends the end user's session JWT in `Authorization`; no route reads a cookie, so
credentials are never allowed. Litestar's CORS applies to the whole app: answers of every other
route lose the headers it adds, so a listed origin can call nothing else from a browser.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from domain.settings import Settings

# What the component calls: the portal's own API and the four kinds' token routes.
EMBEDDED_PATHS = (
    "/m2m-api-tokens.js",
    "/portal/v1/",
    "/identity/resources/users/api-tokens/",
    "/identity/resources/users/access-tokens/",
    "/identity/resources/tenants/api-tokens/",
    "/identity/resources/tenants/access-tokens/",
)
CORS_HEADER_PREFIX = b"access-control-"


def cors_config(settings: Settings) -> CORSConfig | None:
    """Exactly the listed origins, with the headers and methods the component sends."""
    if not settings.embed_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.embed_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
        max_age=600,
    )


def _embedded(path: str) -> bool:
    return path.startswith(EMBEDDED_PATHS)


def cors_only_where_embedded(app: ASGIApp) -> ASGIApp:
    """Drop every Access-Control-* header from the answers of the routes the component does not
    call (a preflight there then grants nothing, and the browser refuses the call)."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or _embedded(scope["path"]):
            await app(scope, receive, send)
            return

        async def send_without_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if not name.lower().startswith(CORS_HEADER_PREFIX)
                ]
            await send(message)

        await app(scope, receive, send_without_cors)

    return handler
