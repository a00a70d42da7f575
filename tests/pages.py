"""Helpers for the page tests: a browser page that holds the pages to the strict
Content-Security-Policy and records what must never happen (a script error, a CSP violation, a
`window.alert`), and signing in to the vendor's console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, Route, expect

from tests.browser import SCREENSHOTS
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

# The policy every HTML page of the service is served under: no inline script or style.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DESKTOP = {"width": 1200, "height": 800}
PHONE = {"width": 390, "height": 844}

# The page waits on a live service that shares this machine with other suites.
expect.set_options(timeout=15_000)


@dataclass
class Watched:
    """What a page did that it must not: uncaught errors, CSP violations, dialogs opened."""

    page: Page
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.violations == [], self.violations
        assert self.dialogs == [], self.dialogs


@asynccontextmanager
async def watched_page(
    browser: Browser, *, viewport: dict[str, int] | None = None, **options: Any
) -> AsyncIterator[Watched]:
    """A fresh context and page; every HTML document it loads carries STRICT_CSP (whatever the
    service sends too), so a page that needs an inline script or style fails here."""
    context = await browser.new_context(viewport=viewport or DESKTOP, **options)
    page = await context.new_page()
    watched = Watched(page)

    async def with_policy(route: Route) -> None:
        if route.request.resource_type != "document":
            await route.continue_()
            return
        response = await route.fetch()
        headers = {**response.headers, "content-security-policy": STRICT_CSP}
        await route.fulfill(response=response, headers=headers)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            watched.violations.append(message.text)

    async def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    await page.route("**/*", with_policy)
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
