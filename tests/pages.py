"""Page-test helpers: the console's signed-in page with its watchers, the portal's servers,
sessions and the vendor's site on another origin."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Browser, ConsoleMessage, Dialog, Locator, Page, Response, expect

from domain.settings import Settings
from tests.browser import SCREENSHOTS
from tests.processes import free_port, running_server
from tests.suite import IDP_ISSUER, VENDOR_CLIENT_ID, VENDOR_SECRET

DESKTOP = {"width": 1200, "height": 800}
PHONE = {"width": 390, "height": 844}

# The page waits on a live service that shares this machine with other suites.
expect.set_options(timeout=15_000)


def strict_policy_missing(response: Response) -> str | None:
    """Why an HTML page the service answered is not under a strict Content-Security-Policy (its
    scripts and styles from the service only, none inline), or None when it is."""
    if not response.headers.get("content-type", "").startswith("text/html"):
        return None
    policy = response.headers.get("content-security-policy", "")
    directives = {
        name: values
        for name, *values in (directive.split() for directive in policy.split(";"))
        if name
    }
    if directives.get("script-src") == ["'self'"] and directives.get("style-src") == ["'self'"]:
        return None
    return f"{response.url} answered under {policy!r}"


@dataclass
class Watched:
    """What a page did that it must not: uncaught errors, CSP violations, dialogs opened, and
    HTML pages the service answered without its strict CSP."""

    page: Page
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    unprotected: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.violations == [], self.violations
        assert self.dialogs == [], self.dialogs
        assert self.unprotected == [], self.unprotected


@asynccontextmanager
async def watched_page(
    browser: Browser, *, viewport: dict[str, int] | None = None, **options: Any
) -> AsyncIterator[Watched]:
    """A fresh context and page under the service's own Content-Security-Policy: a page that
    needs an inline script or style is refused by the browser, and the refusal fails the test."""
    context = await browser.new_context(viewport=viewport or DESKTOP, **options)
    page = await context.new_page()
    watched = Watched(page)

    def on_response(response: Response) -> None:
        if response.request.resource_type == "document":
            missing = strict_policy_missing(response)
            if missing is not None:
                watched.unprotected.append(missing)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            watched.violations.append(message.text)

    async def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("dialog", on_dialog)
    try:
        yield watched
    finally:
        await context.close()


async def sign_in_to_console(
    page: Page, base: str, *, client_id: str = VENDOR_CLIENT_ID, secret: str = VENDOR_SECRET
) -> None:
    """Open /console and sign in as the vendor; it lands on M2M settings."""
    await page.goto(f"{base}/console")
    await page.get_by_label("Client ID").fill(client_id)
    await page.get_by_label("Secret").fill(secret)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="M2M settings", level=1)).to_be_visible()


async def screenshot_viewport(page: Page, name: str) -> None:
    """Save what the viewport shows as docs/screenshots/NAME.png: a modal dialog's backdrop
    covers the viewport, so a full-page shot of one would look half-covered."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def contrast(foreground: str, background: str) -> float:
    """The WCAG contrast ratio of two #rrggbb colours."""

    def luminance(colour: str) -> float:
        channels = [int(colour.strip().lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@contextlib.contextmanager
def portal_server(settings: Settings, *, embed_origins: tuple[str, ...] = ()) -> Iterator[str]:
    """A real `m2m serve` that trusts the test IdP's session JWTs (and lets `embed_origins`
    embed the portal); yields its base URL."""
    assert settings.user_jwt_public_key is not None
    extra = {
        "M2M_USER_JWT_PUBLIC_KEY": settings.user_jwt_public_key,
        "M2M_USER_JWT_ISSUER": settings.user_jwt_issuer or "",
        "M2M_EMBED_ORIGINS": ",".join(embed_origins),
    }
    with running_server(settings, **extra) as base:
        yield base


@contextlib.contextmanager
def running_dev(directory: Path, env: dict[str, str]) -> Iterator[str]:
    """`m2m dev` on a free port, started in `directory` (data in `directory/.m2m`); yields its
    base URL, stops it after. Its log lines go to `directory/dev.log`."""
    port = free_port()
    log = (directory / "dev.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "dev", "--port", str(port)],
        env=env,
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError("m2m dev exited: " + (directory / "dev.log").read_text())
            try:
                httpx.get(f"{base}/.well-known/jwks.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("m2m dev did not answer within 60 s") from None
                time.sleep(0.05)  # waiting for a process to boot, not for a behaviour
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def session_jwt(
    idp_key: rsa.RSAPrivateKey, user_id: str, tenant_id: str, *, minutes: int = 10
) -> str:
    """An end user's session JWT from the vendor's IdP; `minutes` < 0 is an expired one."""
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "tenantId": tenant_id,
        "iss": IDP_ISSUER,
        "iat": int((now - timedelta(minutes=max(0, -minutes) + 1)).timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
    }
    return jwt.encode(claims, idp_key, algorithm="RS256")


@dataclass
class ScriptWatch:
    """Everything a page did that a test page did not mean it to: an alert/confirm/prompt, an
    uncaught error, a console error (a CSP violation among them)."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> ScriptWatch:
        async def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        return self

    def assert_quiet(self, *, expected_console: tuple[str, ...] = ()) -> None:
        unexpected = [
            text
            for text in self.console_errors
            if not any(expected in text for expected in expected_console)
        ]
        assert (self.dialogs, self.errors, unexpected) == ([], [], [])


async def open_service_page(page: Page, url: str) -> None:
    """Go to one of the service's pages, which must come under its strict CSP (a ScriptWatch
    then reports any script or style the browser refuses)."""
    response = await page.goto(url)
    assert response is not None
    assert strict_policy_missing(response) is None, strict_policy_missing(response)


async def open_portal(page: Page, base: str, token: str) -> None:
    """The hosted page, signed in by the session JWT in the URL fragment."""
    await open_service_page(page, f"{base}/portal#token={token}")


async def tab_to(page: Page, target: Locator, *, limit: int = 30) -> None:
    """Press Tab until `target` has the focus (the keyboard's way to reach it)."""
    for _ in range(limit):
        if await target.evaluate("element => element.matches(':focus')"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")


# --- the vendor's own site, on another origin -------------------------------------------------


class VendorSite:
    """A vendor's app on another origin (another port of 127.0.0.1) that embeds the component:
    its page loads /m2m-api-tokens.js from `service` and hands the element a token callback that
    fetches the session JWT from the site's own /session.

    Its origin is known (the port bound) before the service starts, so the service can list it;
    `service` and `session_token` are set once the service runs.
    """

    def __init__(self) -> None:
        self.service = ""
        self.session_token = ""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files = site.files()
                body, media_type = files.get(self.path, (b"not found", "text/plain"))
                self.send_response(200 if self.path in files else 404)
                self.send_header("content-type", f"{media_type}; charset=utf-8")
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def files(self) -> dict[str, tuple[bytes, str]]:
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<link rel='icon' href='data:,'><title>Vendor app</title>"
            f"<script type='module' src='{self.service}/m2m-api-tokens.js'></script>"
            "<script type='module' src='/app.js'></script></head>"
            "<body><h1>Vendor app: settings</h1><m2m-api-tokens></m2m-api-tokens></body></html>"
        )
        app = (
            "const element = document.querySelector('m2m-api-tokens');\n"
            "element.getSessionToken = async () => (await fetch('/session')).text();\n"
        )
        return {
            "/": (page.encode(), "text/html"),
            "/app.js": (app.encode(), "text/javascript"),
            "/session": (self.session_token.encode(), "text/plain"),
        }

    def __enter__(self) -> VendorSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
