"""The vendor's console at /console in a real browser (Chromium) against a live `m2m serve` on
PostgreSQL and Redis: sign-in, the M2M switch, the token kind and lifetimes, Accounts, Roles, Jobs,
an expired session, data shown as text, a phone's width, and the setting that switches it off.

Every page runs under the service's own strict Content-Security-Policy, and a page it refuses fails
the test (tests/pages.py); each test saves the page it ends on in docs/screenshots/."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import job_runs, jobs
from domain.auth import VendorAuthenticator
from domain.clock import utcnow
from domain.jobs import JobContext
from domain.keys import MasterKey
from domain.models import AuditEvent
from domain.ratelimit import RateLimiter
from domain.settings import Settings
from tests.browser import chromium, screenshot
from tests.factories import READ, WRITE, Factory, add_access_token
from tests.pages import (
    DESKTOP,
    PHONE,
    Watched,
    contrast,
    screenshot_viewport,
    sign_in_to_console,
    watched_page,
)
from tests.processes import running_server
from tests.steps import (
    CONFIG,
    EXCHANGE,
    TENANT_ACCESS,
    TENANT_API,
    TENANT_API_V2,
    USER_ACCESS,
    USER_API,
    api_key,
    configure,
    create_access_token,
    user_credential,
    validate,
)
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

ROLES = "/identity/resources/roles/v1"
USERS = "/identity/resources/users/v2"
SESSION_KEY = "m2m-console-session"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def api(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """The live service's API, as the console's checks reach it."""
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture
async def vendor_headers(api: httpx.AsyncClient) -> dict[str, str]:
    answer = await api.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert answer.status_code == 200, answer.text
    return {"x-access-token": answer.json()["token"]}


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    async with watched_page(browser) as page:
        yield page
    page.assert_clean()


def shadow_html(page: Page) -> Any:
    return page.evaluate("document.querySelector('m2m-console').shadowRoot.innerHTML")


# --- sign-in ------------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_and_the_right_one_signs_in_until_signing_out(
    live_server: str, watched: Watched
) -> None:
    page = watched.page
    await page.goto(f"{live_server}/console")
    await page.get_by_label("Client ID").fill(VENDOR_CLIENT_ID)
    await page.get_by_label("Secret").fill("not-the-vendor-secret")
    await page.get_by_role("button", name="Sign in").click()

    await expect(page.get_by_role("alert")).to_have_text("The client ID or secret is wrong.")
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    assert await page.evaluate(f"sessionStorage.getItem('{SESSION_KEY}')") is None

    await sign_in_to_console(page, live_server)
    # The vendor token lives in this tab's sessionStorage only.
    stored = json.loads(await page.evaluate(f"sessionStorage.getItem('{SESSION_KEY}')"))
    assert set(stored) == {"token", "expiresAt"}
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("document.cookie") == ""

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    await expect(page.get_by_role("status")).to_have_text("You are signed out.")
    assert await page.evaluate(f"sessionStorage.getItem('{SESSION_KEY}')") is None
    await screenshot(page, "console-signed-out")


async def test_an_expired_session_returns_to_sign_in_with_a_message(
    live_server: str, watched: Watched, settings: Settings
) -> None:
    page = watched.page
    await sign_in_to_console(page, live_server)
    # A vendor token of the right key, issued two hours ago: the service refuses it (401).
    authenticator = VendorAuthenticator(
        settings.vendor_client_id,
        settings.vendor_secret,
        MasterKey(settings.master_key),
        settings.issuer,
    )
    expired, _ = await authenticator.authenticate(
        RateLimiter(redis=None, prefix="console-test:"),
        settings.vendor_client_id,
        settings.vendor_secret,
        address="127.0.0.1",
        now=utcnow() - timedelta(hours=2),
    )
    await page.evaluate(
        """([key, token]) => {
            const session = JSON.parse(sessionStorage.getItem(key));
            sessionStorage.setItem(key, JSON.stringify({ ...session, token }));
        }""",
        [SESSION_KEY, expired],
    )

    await page.get_by_role("link", name="Accounts").click()

    await expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    message = page.get_by_role("status")
    await expect(message).to_have_text("Your session has expired. Sign in again.")
    assert await page.evaluate(f"sessionStorage.getItem('{SESSION_KEY}')") is None
    await screenshot(page, "console-session-expired")
    # Signing in again returns to the page that was asked for.
    await page.get_by_label("Client ID").fill(VENDOR_CLIENT_ID)
    await page.get_by_label("Secret").fill(VENDOR_SECRET)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Accounts", level=1)).to_be_visible()
    await screenshot(page, "console-signed-in-again")


# --- M2M settings -------------------------------------------------------------------------------


async def test_switching_m2m_off_is_confirmed_and_fails_every_token_until_switched_on(
    live_server: str,
    watched: Watched,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(api, vendor_headers, tenant.id)
    assert (await validate(api, api_key(token["secret"]))).status_code == 200
    page = watched.page
    await sign_in_to_console(page, live_server)
    switch = page.get_by_role("switch", name="API tokens")
    await expect(switch).to_have_attribute("aria-checked", "true")

    await switch.click()
    dialog = page.get_by_role("dialog", name="Turn off API tokens?")
    await expect(dialog).to_contain_text("Every existing token stops working at once")
    await expect(dialog).to_contain_text("Turning API tokens on again restores every token")
    await screenshot_viewport(page, "console-m2m-confirm")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(switch).to_be_focused()
    await expect(switch).to_have_attribute("aria-checked", "true")
    assert (await validate(api, api_key(token["secret"]))).status_code == 200

    await switch.click()
    await dialog.get_by_role("button", name="Turn off API tokens").click()
    await expect(switch).to_have_attribute("aria-checked", "false")
    await expect(page.get_by_text("Off: every token fails validation")).to_be_visible()
    refused = await validate(api, api_key(token["secret"]))
    assert refused.status_code == 401, refused.text
    assert (await api.get(CONFIG, headers=vendor_headers)).json()["apiTokensEnabled"] is False
    await screenshot(page, "console-m2m-off")

    await switch.click()
    on = page.get_by_role("dialog", name="Turn on API tokens?")
    await on.get_by_role("button", name="Turn on API tokens").click()
    await expect(switch).to_have_attribute("aria-checked", "true")
    assert (await validate(api, api_key(token["secret"]))).status_code == 200
    await screenshot(page, "console-m2m-on")


async def test_the_token_kind_and_lifetimes_are_saved_within_the_limits_the_api_enforces(
    live_server: str, watched: Watched, api: httpx.AsyncClient, vendor_headers: dict[str, str]
) -> None:
    page = watched.page
    await sign_in_to_console(page, live_server)
    jwt_lifetime = page.get_by_label("JWT expiration (seconds)")
    await expect(jwt_lifetime).to_have_attribute("min", "1")
    await expect(jwt_lifetime).to_have_attribute("max", "2592000")

    await jwt_lifetime.fill("0")
    await page.get_by_label("Access tokens").check()
    await page.get_by_role("button", name="Save settings").click()

    refusal = page.get_by_text("JWT expiration must be a whole number from 1 to 2,592,000 seconds")
    await expect(refusal).to_be_visible()
    await expect(jwt_lifetime).to_have_attribute("aria-invalid", "true")
    await expect(jwt_lifetime).to_be_focused()
    unchanged = (await api.get(CONFIG, headers=vendor_headers)).json()
    assert unchanged["machineToMachineAuthStrategy"] == "ClientCredentials"
    assert unchanged["defaultTokenExpiration"] == 86400

    await jwt_lifetime.fill("3600")
    await expect(page.get_by_text("= 1 hour")).to_be_visible()
    await page.get_by_label("Refresh token expiration (seconds)").fill("604800")
    await page.get_by_role("button", name="Save settings").click()

    await expect(page.get_by_text("Saved. New tokens are access tokens.")).to_be_visible()
    saved = (await api.get(CONFIG, headers=vendor_headers)).json()
    assert saved["machineToMachineAuthStrategy"] == "AccessToken"
    assert saved["defaultTokenExpiration"] == 3600
    assert saved["defaultRefreshTokenExpiration"] == 604800
    await page.reload()
    await expect(page.get_by_label("Access tokens")).to_be_checked()
    await screenshot(page, "console-settings")


# --- Accounts -----------------------------------------------------------------------------------


async def populated_tenant(
    api: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[str, str]:
    """An account with a role, a user, an administrator who made one of its tokens, a token of
    each kind but the one a test creates and an expired one; the environment makes client
    credentials. Its id and role name."""
    tenant = await factory.tenant(name="Acme Inc.")
    billing = await factory.role("billing", tenant_id=tenant.id, permission_keys=[READ])
    admin = await factory.role("admin", tenant_id=tenant.id, permission_keys=[READ, WRITE])
    acme = {**vendor, "frontegg-tenant-id": tenant.id}
    people = {}
    for email, name, roles in (
        ("ada@acme.test", "Ada Lovelace", [billing.id]),
        ("grace@acme.test", "Grace Hopper", [admin.id, billing.id]),
    ):
        user = {"email": email, "name": name, "roleIds": roles, "metadata": "{}"}
        created = await api.post(USERS, headers=acme, json=user)
        assert created.status_code == 201, created.text
        people[name] = {**acme, "frontegg-user-id": created.json()["id"]}
    ada, grace = people["Ada Lovelace"], people["Grace Hopper"]
    await add_access_token(sessions, tenant.id, expires_at=utcnow() - timedelta(hours=1))
    await configure(api, vendor, machineToMachineAuthStrategy="AccessToken")
    for path, headers, body in (
        # The account's administrator makes this one (the vendor acting as her).
        (TENANT_ACCESS, grace, {"description": "Reporting", "roleIds": [billing.id]}),
        (USER_ACCESS, ada, {"description": "Ada's laptop", "expiresInMinutes": 23 * 60}),
    ):
        assert (await api.post(path, headers=headers, json=body)).status_code == 201
    await configure(api, vendor, machineToMachineAuthStrategy="ClientCredentials")
    made = await api.post(USER_API, headers=ada, json={"description": "Ada's CI job"})
    assert made.status_code == 201, made.text
    return tenant.id, billing.name


async def test_an_account_token_is_created_shown_once_and_deleted_with_confirmation(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, role_name = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    async with watched_page(browser, permissions=["clipboard-read", "clipboard-write"]) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.get_by_role("link", name="Accounts").click()
        await page.get_by_label("Search accounts").fill("acme")
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name="Acme Inc.").click()
        await expect(page.get_by_role("heading", name="Acme Inc.", level=1)).to_be_visible()

        opener = page.get_by_role("button", name="Create token")
        await opener.click()
        dialog = page.get_by_role("dialog", name="Create an account token")
        await expect(dialog).to_contain_text("Client credentials")
        await dialog.get_by_label("Description").fill("Billing export")
        await dialog.get_by_label(role_name).check()
        await dialog.get_by_label("Expiration").select_option(label="After 7 days")
        await dialog.get_by_role("button", name="Create token").click()

        await expect(dialog).to_contain_text("This is the only time the service shows it")
        await screenshot_viewport(page, "console-create-token-secret")
        client_id = await dialog.get_by_label("Client ID").input_value()
        secret = await dialog.get_by_label("Secret").input_value()
        await dialog.get_by_role("button", name="Copy secret").click()
        await expect(dialog.get_by_text("Secret copied.")).to_be_visible()
        assert await page.evaluate("navigator.clipboard.readText()") == secret
        listed = (await api.get(TENANT_API, headers=acme)).json()
        assert [token["clientId"] for token in listed] == [client_id]
        exchanged = await api.post(EXCHANGE, json={"clientId": client_id, "secret": secret})
        assert exchanged.status_code == 200, exchanged.text

        await dialog.get_by_role("button", name="Done").click()
        await expect(dialog).to_be_hidden()
        assert secret not in await shadow_html(page)  # gone from the page with its dialog
        row = page.get_by_role("row").filter(has_text="Billing export")
        await expect(row).to_contain_text("Client credentials")
        await expect(row).to_contain_text("7 days")
        await expect(row).to_contain_text(role_name)
        rows = page.get_by_role("row")
        reporting = rows.filter(has_text="Reporting").get_by_role("cell", name="Grace Hopper")
        await expect(reporting).to_have_attribute("data-label", "Created by")
        await expect(rows.filter(has_text="23 hours")).to_have_count(1)
        await expect(rows.filter(has_text="Expired")).to_have_count(1)
        await expect(page.get_by_role("heading", name="Account tokens (3)")).to_be_visible()
        await expect(page.get_by_role("heading", name="Personal tokens (2)")).to_be_visible()
        await screenshot(page, "console-accounts")

        delete = row.get_by_role("button", name="Delete")
        await delete.click()
        confirm = page.get_by_role("dialog", name="Delete this token?")
        await expect(confirm).to_contain_text("“Billing export”")
        await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
        await screenshot_viewport(page, "console-delete-confirm")
        await page.keyboard.press("Escape")  # closes, deletes nothing, focus back on Delete
        await expect(confirm).to_be_hidden()
        await expect(delete).to_be_focused()
        await delete.click()
        await confirm.get_by_role("button", name="Delete token").click()

        await expect(row).to_have_count(0)
        await expect(page.get_by_role("heading", name="Account tokens (2)")).to_be_visible()
        assert (await api.get(TENANT_API, headers=acme)).json() == []
        again = await api.post(EXCHANGE, json={"clientId": client_id, "secret": secret})
        assert again.status_code == 401, again.text
        await screenshot(page, "console-token-deleted")
    watched.assert_clean()


async def test_a_secret_is_rotated_with_an_overlap_shown_and_ended_early_and_a_token_rolled(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, _ = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    permission = await factory.permission()
    made = await api.post(
        TENANT_API_V2,
        headers=acme,
        json={"description": "Nightly sync", "permissionIds": [permission.id]},
    )
    assert made.status_code == 201, made.text
    client_id, old_secret = made.json()["clientId"], made.json()["secret"]
    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        row = page.get_by_role("row").filter(has_text="Nightly sync")
        opener = row.get_by_role("button", name="Rotate")
        await opener.click()
        dialog = page.get_by_role("dialog", name="Rotate this secret")
        await expect(dialog.get_by_label("Old one keeps working for")).to_have_value("2")
        await dialog.get_by_label("Old one keeps working for").select_option(label="1 hour")
        await dialog.get_by_role("button", name="Rotate secret").click()
        await expect(dialog).to_contain_text("This is the only time the service shows it")
        await expect(dialog).to_contain_text("The previous secret works until")
        assert await dialog.get_by_label("Client ID").input_value() == client_id
        new_secret = await dialog.get_by_label("Secret").input_value()
        assert new_secret != old_secret
        await screenshot_viewport(page, "console-rotation-secret")
        for secret in (old_secret, new_secret):
            exchanged = await api.post(EXCHANGE, json={"clientId": client_id, "secret": secret})
            assert exchanged.status_code == 200, exchanged.text
        await dialog.get_by_role("button", name="Done").click()
        await expect(dialog).to_be_hidden()
        assert new_secret not in await shadow_html(page)

        await expect(row).to_contain_text("Previous secret works until")
        await expect(row).to_contain_text("last used")
        await expect(row.get_by_role("button", name="Rotate")).to_be_disabled()
        await screenshot(page, "console-rotation-overlap")
        await row.get_by_role("button", name="End overlap").click()
        confirm = page.get_by_role("dialog", name="End the overlap now?")
        await expect(confirm).to_contain_text("It was used since the rotation")
        await confirm.get_by_role("button", name="End overlap").click()
        await expect(row).to_contain_text("Secret rotated")
        await expect(row.get_by_role("button", name="End overlap")).to_have_count(0)
        old = await api.post(EXCHANGE, json={"clientId": client_id, "secret": old_secret})
        assert old.status_code == 401, old.text
        new = await api.post(EXCHANGE, json={"clientId": client_id, "secret": new_secret})
        assert new.status_code == 200, new.text

        # An access token is rolled: the new one is shown once, the old one lives the overlap.
        reporting = page.get_by_role("row").filter(has_text="Reporting")
        await reporting.get_by_role("button", name="Rotate").click()
        roll = page.get_by_role("dialog", name="Roll this access token")
        await roll.get_by_role("button", name="Roll token").click()
        await expect(roll).to_contain_text("The old access token works until")
        rolled = await roll.get_by_label("Access token").input_value()
        assert (await validate(api, api_key(rolled))).status_code == 200
        await roll.get_by_role("button", name="Done").click()
        await expect(page.get_by_role("row").filter(has_text="Rolled over")).to_have_count(1)
        await expect(page.get_by_role("heading", name="Account tokens (4)")).to_be_visible()
        await screenshot(page, "console-rotation-ended")
    watched.assert_clean()


async def test_the_accounts_list_is_searched_and_paged(
    live_server: str, watched: Watched, factory: Factory
) -> None:
    for number in range(30):
        await factory.tenant(f"t{number:02d}", name=f"Tenant {number:02d}")
    page = watched.page
    await sign_in_to_console(page, live_server)
    await page.get_by_role("link", name="Accounts").click()

    await expect(page.get_by_text("Accounts 1 to 25 of 30")).to_be_visible()
    await expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    await page.get_by_role("button", name="Next page").click()
    await expect(page.get_by_text("Accounts 26 to 30 of 30")).to_be_visible()
    await expect(page.get_by_role("link", name="Tenant 29")).to_be_visible()
    await expect(page.get_by_role("button", name="Next page")).to_be_disabled()

    await page.get_by_label("Search accounts").fill("T1")
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("Accounts 1 to 10 of 10 matching “T1”")).to_be_visible()
    await page.get_by_label("Search accounts").fill("nothing like it")
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("No account matches “nothing like it”.")).to_be_visible()
    await screenshot(page, "console-accounts-search")


async def test_the_accounts_page_fits_a_phone(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, role_name = await populated_tenant(api, vendor_headers, factory, sessions)
    async with watched_page(browser, viewport=PHONE) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        await expect(page.get_by_role("heading", name="Acme Inc.", level=1)).to_be_visible()
        await expect(page.get_by_role("row").filter(has_text="Ada Lovelace")).to_have_count(2)

        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide on a 390 px phone"
        for name in ("M2M settings", "Accounts", "Roles", "Jobs"):
            link = page.get_by_role("navigation", name="Console").get_by_role("link", name=name)
            box = await link.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= PHONE["width"]

        await page.get_by_role("button", name="Create token").click()
        dialog = page.get_by_role("dialog", name="Create an account token")
        box = await dialog.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]
        await expect(dialog.get_by_label(role_name)).to_be_visible()
        await screenshot_viewport(page, "console-create-token-phone")
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await screenshot(page, "console-accounts-phone")
    watched.assert_clean()


# --- data is text -------------------------------------------------------------------------------

HOSTILE_TENANT = "<script>window.m2mInjected = 1</script>"
HOSTILE_DESCRIPTIONS = ("<img src=x onerror=alert(1)>", "<img src=x onerror=window.m2mInjected=1>")
HOSTILE_ROLE = "<svg onload=alert(1)>"
HOSTILE_USER = "<b onmouseover=alert(1)>Mallory</b>"


async def test_names_and_descriptions_are_shown_as_text_and_no_script_runs(
    live_server: str,
    watched: Watched,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
) -> None:
    tenant = await factory.tenant(name=HOSTILE_TENANT)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant.id}
    hostile = [{"key": "hostile", "name": HOSTILE_ROLE, "level": 1}]
    roles = await api.post(ROLES, headers=acme, json=hostile)
    role_id = roles.json()[0]["id"]
    mallory = await api.post(
        USERS,
        headers=acme,
        json={"email": "m@evil.test", "name": HOSTILE_USER, "roleIds": [role_id], "metadata": "{}"},
    )
    assert mallory.status_code == 201, mallory.text
    for description in HOSTILE_DESCRIPTIONS:
        created = await api.post(
            TENANT_API_V2, headers=acme, json={"description": description, "roleIds": [role_id]}
        )
        assert created.status_code == 201, created.text
    await user_credential(api, vendor_headers, tenant.id, mallory.json()["id"])
    page = watched.page
    await sign_in_to_console(page, live_server)

    await page.get_by_role("link", name="Roles").click()
    await expect(page.get_by_text(HOSTILE_ROLE, exact=True)).to_be_visible()
    await page.get_by_role("link", name="Accounts").click()
    await page.get_by_label("Search accounts").fill("<script>")
    await page.keyboard.press("Enter")
    link = page.get_by_role("link", name=HOSTILE_TENANT, exact=True)
    await expect(link).to_be_visible()
    await link.click()
    await expect(page.get_by_role("heading", name=HOSTILE_TENANT, level=1)).to_be_visible()
    for description in HOSTILE_DESCRIPTIONS:
        await expect(page.get_by_text(description, exact=True)).to_be_visible()
    await expect(page.get_by_role("row").filter(has_text=HOSTILE_ROLE)).to_have_count(2)
    await expect(page.get_by_role("row").filter(has_text="Mallory</b>")).to_have_count(1)
    assert await page.title() == f"{HOSTILE_TENANT} · Accounts · M2M tokens console"
    row = page.get_by_role("row").filter(has_text=HOSTILE_DESCRIPTIONS[0])
    await row.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete this token?")
    await expect(confirm).to_contain_text(HOSTILE_DESCRIPTIONS[0])
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()

    # Nothing ran: no alert, no marker, no element made from the data.
    assert await page.evaluate("window.m2mInjected") is None
    assert await page.locator("img, svg, b, script:not([src])").count() == 0
    assert watched.dialogs == []
    await screenshot(page, "console-data-as-text")


# --- Roles --------------------------------------------------------------------------------------


async def test_a_role_is_created_and_gains_write_tenant_api_tokens_and_another_loses_one(
    live_server: str,
    watched: Watched,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
) -> None:
    auditor = await factory.role("auditor", permission_keys=[READ])
    [write_id] = await factory.permission_ids([WRITE])
    page = watched.page
    await sign_in_to_console(page, live_server)
    await page.get_by_role("link", name="Roles").click()

    await page.get_by_role("button", name="Create role").click()
    create = page.get_by_role("dialog", name="Create a role")
    await create.get_by_label("Name").fill("Token admins")
    await expect(create.get_by_label("Key")).to_have_value("token-admins")
    await create.get_by_role("button", name="Create role").click()
    await expect(create).to_be_hidden()
    row = page.get_by_role("row").filter(has_text="Token admins")
    await expect(row).to_contain_text("Every account")

    await row.get_by_role("button", name="Edit permissions").click()
    edit = page.get_by_role("dialog", name="Permissions of Token admins")
    await edit.get_by_label(WRITE).check()
    await screenshot_viewport(page, "console-role-permissions")
    await edit.get_by_role("button", name="Save permissions").click()
    await expect(edit).to_be_hidden()
    await expect(row).to_contain_text(WRITE)

    await page.get_by_role("button", name=f"Edit permissions of {auditor.name}").click()
    edit = page.get_by_role("dialog", name=f"Permissions of {auditor.name}")
    await expect(edit.get_by_label(READ)).to_be_checked()
    await edit.get_by_label(READ).uncheck()
    await edit.get_by_role("button", name="Save permissions").click()
    await expect(edit).to_be_hidden()

    roles = {role["key"]: role for role in (await api.get(ROLES, headers=vendor_headers)).json()}
    assert roles["token-admins"]["name"] == "Token admins"
    assert roles["token-admins"]["tenantId"] is None
    assert roles["token-admins"]["permissions"] == [write_id]
    assert roles["auditor"]["permissions"] == []
    await screenshot(page, "console-roles")


# --- Jobs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "name"), [(DESKTOP, "console-jobs"), (PHONE, "console-jobs-phone")]
)
async def test_the_jobs_page_shows_an_overdue_job_as_overdue(
    live_server: str,
    browser: Browser,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    viewport: dict[str, int],
    name: str,
) -> None:
    ten_minutes_ago = utcnow() - timedelta(minutes=10)
    late = JobContext(sessions=sessions, validity=services.validity, clock=lambda: ten_minutes_ago)
    await job_runs.run_job(late, jobs.EXPIRE_TOKENS)  # every minute: two intervals missed
    now = JobContext(sessions=sessions, validity=services.validity, clock=utcnow)
    await job_runs.run_job(now, jobs.RECONCILE_CACHE)
    async with watched_page(browser, viewport=viewport) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)

        await page.get_by_role("link", name="Jobs").click()

        overdue = page.get_by_role("row").filter(has_text=jobs.EXPIRE_TOKENS)
        await expect(overdue).to_contain_text("Overdue")
        await expect(overdue).to_contain_text("Succeeded")
        await expect(page.get_by_role("row").filter(has_text=jobs.RECONCILE_CACHE)).to_contain_text(
            "On schedule"
        )
        warning = page.get_by_text("An overdue job has not succeeded")
        await expect(page.get_by_text("1 job is overdue:")).to_be_visible()
        # The whole table shows, badges included, with no sideways scrolling; a gap parts it
        # from the warning above.
        table = page.get_by_role("table", name="Scheduled jobs")
        assert await table.evaluate(
            "t => t.parentElement.scrollWidth <= t.parentElement.clientWidth"
        )
        assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        warning_box, table_box = await warning.bounding_box(), await table.bounding_box()
        assert warning_box is not None
        assert table_box is not None
        assert table_box["y"] - (warning_box["y"] + warning_box["height"]) >= 24
        await screenshot(page, name)
    watched.assert_clean()


# --- switched off -------------------------------------------------------------------------------


@pytest.mark.processes
async def test_with_m2m_console_enabled_false_the_console_is_404(
    settings: Settings, browser: Browser
) -> None:
    with running_server(settings, M2M_CONSOLE_ENABLED="false") as base:
        async with httpx.AsyncClient(base_url=base) as client:
            answer = await client.post(
                "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
            )
            vendor = {"x-access-token": answer.json()["token"]}
            for path in (
                "/console",
                "/console/assets/console.js",
                "/console/v1/tenants",
                "/console/v1/limits",
            ):
                assert (await client.get(path, headers=vendor)).status_code == 404, path
            assert (await client.get(CONFIG, headers=vendor)).status_code == 200
        async with watched_page(browser) as watched:
            response = await watched.page.goto(f"{base}/console")
            assert response is not None
            assert response.status == 404
            await screenshot(watched.page, "console-switched-off")


# --- themes -------------------------------------------------------------------------------------

# (text, background) pairs of the palette: each at a contrast of 4.5:1 or more.
TEXT_ON_BACKGROUND = [
    ("--_text", "--_background"),
    ("--_text", "--_surface"),
    ("--_text", "--_d-row"),
    ("--_muted", "--_background"),
    ("--_muted", "--_surface"),
    ("--_muted", "--_d-row"),
    ("--_primary", "--_background"),
    ("--_primary", "--_surface"),
    ("--_on-primary", "--_primary"),
    ("--_danger", "--_surface"),
    ("--_on-danger", "--_danger"),
    ("--_d-warning-text", "--_d-warning-bg"),
    ("--_d-ok-text", "--_d-ok-bg"),
]
READ_PALETTE = """names => {
    const style = getComputedStyle(document.querySelector('m2m-console'));
    return Object.fromEntries(names.map((name) => [name, style.getPropertyValue(name).trim()]));
}"""

READ_PAGE_BACKGROUND = """() => {
    const style = getComputedStyle(document.documentElement);
    const rgb = style.backgroundColor.match(/\\d+/g).slice(0, 3);
    const hex = rgb.map((channel) => Number(channel).toString(16).padStart(2, '0'));
    return [style.colorScheme, '#' + hex.join('')];
}"""


@pytest.mark.parametrize(
    ("system", "forced", "dark"),
    [
        ("light", None, False),
        ("dark", None, True),
        ("dark", "light", False),
        ("light", "dark", True),
    ],
)
async def test_the_console_is_light_or_dark_and_its_text_keeps_its_contrast(
    live_server: str, browser: Browser, system: str, forced: str | None, dark: bool
) -> None:
    async with watched_page(browser, color_scheme=system) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        if forced is not None:
            await page.evaluate(
                "theme => document.querySelector('m2m-console').setAttribute('theme', theme)",
                forced,
            )
        names = sorted({name for pair in TEXT_ON_BACKGROUND for name in pair})

        palette = await page.evaluate(READ_PALETTE, names)

        for text, background in TEXT_ON_BACKGROUND:
            ratio = contrast(palette[text], palette[background])
            assert ratio >= 4.5, (system, forced, text, background, ratio)
        assert (contrast(palette["--_background"], "#000000") < 4.5) is dark
        # The page around the console takes the same scheme and background, forced or not.
        page_scheme, page_background = await page.evaluate(READ_PAGE_BACKGROUND)
        assert page_scheme == ("dark" if dark else "light")
        assert page_background == palette["--_background"]
        await screenshot(page, f"console-theme-{system}-{forced or 'system'}")
    watched.assert_clean()


async def test_the_vendor_themes_the_console_with_custom_properties(
    live_server: str, watched: Watched
) -> None:
    page = watched.page
    await sign_in_to_console(page, live_server)

    await page.evaluate(
        """() => {
            const console = document.querySelector('m2m-console');
            console.style.setProperty('--m2m-color-primary', '#6b1f8f');
            console.style.setProperty('--m2m-radius', '0px');
            console.style.setProperty('--m2m-font-family', 'serif');
        }"""
    )

    save = page.get_by_role("button", name="Save settings")
    assert await save.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(107, 31, 143)"
    assert await save.evaluate("b => getComputedStyle(b).borderTopLeftRadius") == "0px"
    heading = page.get_by_role("heading", name="M2M settings", level=1)
    assert await heading.evaluate("h => getComputedStyle(h).fontFamily") == "serif"
    await screenshot(page, "console-themed")


async def test_an_accounts_activity_and_each_tokens_last_use_are_shown(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, _ = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    # Older events than a page holds, so the section pages.
    long_ago = utcnow() - timedelta(days=3)
    async with sessions() as session:
        session.add_all(
            AuditEvent(
                at=long_ago,
                actor_type="job",
                actor_id=jobs.EXPIRE_TOKENS,
                action="access_token.expired",
                target_type="access_token",
                target_id=f"old-token-{number}",
                tenant_id=tenant_id,
                details={},
            )
            for number in range(25)
        )
        await session.commit()
    await configure(api, vendor_headers, machineToMachineAuthStrategy="AccessToken")
    made = await api.post(
        TENANT_ACCESS,
        headers={**acme, "X-Request-ID": "made-monitoring"},
        json={"description": "Monitoring", "roleIds": []},
    )
    assert made.status_code == 201, made.text
    monitoring = made.json()
    used = await api.post(
        "/identity/resources/auth/v1/validate",
        headers={**api_key(monitoring["secret"]), "x-m2m-client-address": "203.0.113.50"},
    )
    assert used.status_code == 200, used.text

    async def written() -> bool:
        listed = (await api.get(TENANT_ACCESS, headers=acme)).json()["accessTokens"]
        return any(token["lastUsedAt"] for token in listed if token["id"] == monitoring["id"])

    await eventually_true(written, "the live server writes the use (every few seconds)")

    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        row = page.get_by_role("row").filter(has_text="Monitoring")
        await expect(row.get_by_role("cell", name="from 203.0.113.50")).to_have_attribute(
            "data-label", "Last used"
        )
        never = page.get_by_role("row").filter(has_text="Reporting")
        await expect(never.locator('td[data-label="Last used"]')).to_have_text("Never")

        activity = page.get_by_role("table", name="Account activity")
        created = activity.get_by_role("row").filter(has_text="made-monitoring")
        await expect(created).to_contain_text("token.created")
        await expect(created).to_contain_text("Vendor")
        await expect(created).to_contain_text(monitoring["id"])
        await expect(created).to_contain_text("127.0.0.1")
        await expect(activity.get_by_role("row")).to_have_count(21)  # the header and a page
        older = page.get_by_role("button", name="Show older activity")
        await older.click()
        await expect(activity.get_by_role("row").filter(has_text="old-token-0")).to_have_count(1)
        await expect(older).to_be_hidden()
        await screenshot(page, "console-account-activity")
    watched.assert_clean()


async def eventually_true(check: Any, what: str, within: float = 30.0) -> None:
    """Poll another process until `check` holds (it writes on its own schedule)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)  # polling another process, not standing in for time


async def test_revoking_every_token_of_an_account_is_confirmed_with_what_dies_and_ends_them(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, _ = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    await configure(api, vendor_headers, machineToMachineAuthStrategy="AccessToken")
    kept_elsewhere = await create_access_token(api, vendor_headers, (await factory.tenant()).id)
    doomed = await create_access_token(api, vendor_headers, tenant_id)
    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        await expect(page.get_by_role("heading", name="Acme Inc.", level=1)).to_be_visible()

        # One user's tokens first: the confirmation names the user and what of hers dies.
        ada_row = page.get_by_role("row").filter(has_text="Ada's laptop")
        await ada_row.get_by_role("button", name="Revoke every token of Ada Lovelace").click()
        confirm_user = page.get_by_role("dialog", name="Revoke every token of Ada Lovelace?")
        await expect(confirm_user).to_contain_text("1 access token and 1 client credential")
        await expect(confirm_user).to_contain_text("Ada Lovelace stays a user of Acme Inc.")
        await confirm_user.get_by_role("button", name="Revoke every token").click()
        await expect(page.get_by_role("heading", name="Personal tokens (0)")).to_be_visible()
        await expect(page.get_by_role("heading", name="Account tokens (3)")).to_be_visible()

        await page.get_by_role("button", name="Revoke every token of this account").click()
        confirm = page.get_by_role("dialog", name="Revoke every token of Acme Inc.?")
        # The expired one is not counted: it is dead already.
        await expect(confirm).to_contain_text("2 access tokens and 0 client credentials")
        await expect(confirm).to_contain_text("cannot be restored")
        await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
        await screenshot_viewport(page, "console-revoke-all-confirm")
        await page.keyboard.press("Escape")  # closes, revokes nothing
        await expect(confirm).to_be_hidden()
        assert (await validate(api, api_key(doomed["secret"]))).status_code == 200

        await page.get_by_role("button", name="Revoke every token of this account").click()
        await confirm.get_by_role("button", name="Revoke every token").click()
        await expect(page.get_by_role("heading", name="Account tokens (0)")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text(
            "Acme Inc.: revoked 2 access tokens"
        )
        await screenshot(page, "console-revoke-all-done")

    watched.assert_clean()
    assert (await validate(api, api_key(doomed["secret"]))).status_code == 401
    assert (await validate(api, api_key(kept_elsewhere["secret"]))).status_code == 200
    assert (await api.get(TENANT_ACCESS, headers=acme)).json() == {"accessTokens": []}
    assert (
        await api.get(f"/tenants/resources/tenants/v1/{tenant_id}", headers=vendor_headers)
    ).is_success


async def test_the_rotate_dialog_offers_only_the_overlaps_the_account_policy_allows(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # A longest overlap of 3 days: no 7 days, the policy's own longest offered, 1 day first.
    tenant_id, _ = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    saved = await api.put(
        "/identity/resources/tenants/token-policy/v1",
        headers=acme,
        json={"maxRotationOverlapMinutes": 3 * 1440},
    )
    assert saved.status_code == 200, saved.text
    permission = await factory.permission()
    made = await api.post(
        TENANT_API_V2,
        headers=acme,
        json={"description": "Nightly sync", "permissionIds": [permission.id]},
    )
    assert made.status_code == 201, made.text
    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        row = page.get_by_role("row").filter(has_text="Nightly sync")
        await row.get_by_role("button", name="Rotate").click()
        dialog = page.get_by_role("dialog", name="Rotate this secret")
        overlap = dialog.get_by_label("Old one keeps working for")
        await expect(overlap.locator("option")).to_have_text(
            ["No overlap: the old one stops now", "1 hour", "1 day", "3 days"]
        )
        await expect(overlap.locator("option:checked")).to_have_text("1 day")
        await overlap.select_option(label="3 days")
        await screenshot_viewport(page, "console-rotation-policy")
        await dialog.get_by_role("button", name="Rotate secret").click()
        await expect(dialog).to_contain_text("The previous secret works until")
    watched.assert_clean()

    (credential,) = [
        item
        for item in (
            await api.get("/identity/resources/tenants/api-tokens/v1", headers=acme)
        ).json()
        if item["clientId"] == made.json()["clientId"]
    ]
    rotated = datetime.fromisoformat(credential["rotatedAt"])
    until = datetime.fromisoformat(credential["previousSecretExpires"])
    assert until - rotated == timedelta(days=3)


async def test_the_account_token_policy_is_shown_and_edited_and_reports_what_exceeds_it(
    live_server: str,
    browser: Browser,
    api: httpx.AsyncClient,
    vendor_headers: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, _ = await populated_tenant(api, vendor_headers, factory, sessions)
    acme = {**vendor_headers, "frontegg-tenant-id": tenant_id}
    async with watched_page(browser) as watched:
        page = watched.page
        await sign_in_to_console(page, live_server)
        await page.goto(f"{live_server}/console#/accounts/{tenant_id}")
        policy = page.get_by_role("region", name="Token policy")
        await expect(policy).to_contain_text("No policy set")

        await policy.get_by_role("button", name="Edit policy").click()
        dialog = page.get_by_role("dialog", name="Edit the token policy")
        await dialog.get_by_label("Longest expiration").select_option(label="7 days")
        await dialog.get_by_label("Most access tokens per user").fill("0")
        await dialog.get_by_label("Longest rotation overlap (minutes)").fill("99999")
        await dialog.get_by_role("button", name="Save policy").click()
        await expect(dialog.get_by_role("alert")).to_contain_text("maxRotationOverlapMinutes")
        await dialog.get_by_label("Longest rotation overlap (minutes)").fill("60")
        await dialog.get_by_role("button", name="Save policy").click()

        # Reporting (never expires) and Ada's CI job (never) exceed the 7 days; Ada holds one
        # access token where the policy now allows none. Nothing is shortened.
        await expect(dialog).to_contain_text("lie outside the new policy")
        await expect(dialog.get_by_role("listitem")).to_have_count(3)
        await screenshot_viewport(page, "console-policy-exceeding")
        await dialog.get_by_role("button", name="Done").click()
        await expect(dialog).to_be_hidden()
        await expect(policy).to_contain_text("7 days")
        await expect(policy).to_contain_text("1 hour")
        await expect(page.get_by_role("heading", name="Personal tokens (2)")).to_be_visible()
        await screenshot(page, "console-policy")

    watched.assert_clean()
    stored = (await api.get("/identity/resources/tenants/token-policy/v1", headers=acme)).json()
    assert stored["maxExpiresInMinutes"] == 7 * 1440
    assert stored["maxRotationOverlapMinutes"] == 60
    assert stored["maxTokens"]["userAccessToken"] == 0
    await configure(api, vendor_headers, machineToMachineAuthStrategy="AccessToken")
    refused = await api.post(TENANT_ACCESS, headers=acme, json={"roleIds": []})
    assert refused.status_code == 400
    assert "maxExpiresInMinutes" in refused.json()["errors"][0]
