"""The console's "Report a leaked secret" form (Leaks), in a real browser against a live
`m2m serve`: the report revokes the secret, says so, and a second report says it was already
reported. The page runs under the service's strict Content-Security-Policy (tests/pages.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.browser import chromium, screenshot
from tests.factories import Factory
from tests.pages import PHONE, sign_in_to_console, watched_page
from tests.steps import EXCHANGE, tenant_credential
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

LEAK_URL = "https://github.com/acme/app/blob/main/settings.py"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def api(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture
async def vendor_headers(api: httpx.AsyncClient) -> dict[str, str]:
    answer = await api.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert answer.status_code == 200, answer.text
    return {"x-access-token": answer.json()["token"]}


async def test_a_leaked_secret_reported_in_the_console_is_revoked_and_a_repeat_says_so(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
) -> None:
    tenant = await factory.tenant(name="Acme Inc.")
    permission = await factory.permission()
    credential = await tenant_credential(
        api, vendor_headers, tenant.id, permission_ids=[permission.id]
    )
    assert (await api.post(EXCHANGE, json=credential.body)).status_code == 200
    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.get_by_role("link", name="Leaks").click()
        await expect(page.get_by_role("heading", name="Leaks", level=1)).to_be_visible()
        form = page.get_by_role("form", name="Report a leaked secret")
        report = form.get_by_role("button", name="Report leak")
        value = form.get_by_label("Leaked secret or token")

        await report.click()  # nothing pasted: said, and nothing sent
        await expect(form.get_by_role("alert")).to_have_text("Paste the leaked secret or token.")
        await expect(value).to_be_focused()

        await value.fill(credential.secret)
        await form.get_by_label("Where it was found (optional)").fill(LEAK_URL)
        await report.click()

        status = form.get_by_role("status")
        await expect(status).to_have_text("Revoked: the leaked client secret no longer works")
        await expect(value).to_have_value("")  # the secret does not stay on the page
        refused = await api.post(EXCHANGE, json=credential.body)
        assert refused.status_code == 401, refused.text
        await screenshot(page, "console-leak-revoked")

        await value.fill(credential.secret)
        await report.click()
        await expect(status).to_contain_text("Already reported")
        await expect(status).to_contain_text("nothing changed")
    watched.assert_clean()


async def test_the_leak_form_fits_a_phone_and_says_what_it_did_not_do(
    live_server: str, browser: Browser
) -> None:
    async with watched_page(browser, viewport=PHONE) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/leaks")
        form = page.get_by_role("form", name="Report a leaked secret")
        await form.get_by_label("Leaked secret or token").fill("not-a-secret-of-ours")
        await form.get_by_role("button", name="Report leak").click()
        await expect(form.get_by_role("status")).to_contain_text("Not ours")
        await screenshot(page, "console-leak-phone")
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    watched.assert_clean()
