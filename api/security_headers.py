"""The headers that protect every answer, set in one ASGI middleware around the whole app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# Route option of the routes whose answer carries a secret, a token or a refresh token: no cache
# (a browser's, a proxy's) may keep any of their answers, errors included (as OAuth 2.0 asks of
# token responses).
CARRIES_SECRET: Final[dict[str, Any]] = {"carries_secret": True}

NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
NO_STORE: Final = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
_CACHING: Final = frozenset({b"cache-control", b"pragma"})
_HTML: Final = b"text/html"


def content_security_policy(embed_origins: Sequence[str]) -> str:
    """Our pages load only our own scripts, styles and images (no inline script), and only the
    vendor's origins in M2M_EMBED_ORIGINS may frame them."""
    ancestors = " ".join(embed_origins) if embed_origins else "'none'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " object-src 'none'; base-uri 'none'; form-action 'self';"
        f" frame-ancestors {ancestors}"
    )


def html_headers(embed_origins: Sequence[str]) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-security-policy", content_security_policy(embed_origins).encode())]
    if not embed_origins:
        # X-Frame-Options cannot name several origins: with some, frame-ancestors alone rules.
        headers.append((b"x-frame-options", b"DENY"))
    return headers


def _carries_secret(scope: Scope) -> bool:
    route = scope.get("route_handler")  # set by the router; absent when no route matched
    return route is not None and bool(route.opt.get("carries_secret"))


def _is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.lower().startswith(_HTML)
        for name, value in headers
    )


def with_security_headers(app: ASGIApp, embed_origins: Sequence[str]) -> ASGIApp:
    """Wraps the whole app, so that the router's own answers (404, 405) and every error answer
    carry the headers too."""
    html = html_headers(embed_origins)

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if _carries_secret(scope):
                    headers = [item for item in headers if item[0].lower() not in _CACHING]
                    headers += NO_STORE
                if _is_html(headers):
                    headers += html
                headers.append(NOSNIFF)
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
