"""The end users' portal in a real browser: the hosted /portal page (the <m2m-api-tokens>
component) against a live `m2m serve` on PostgreSQL and Redis, signed in with session JWTs of
the test IdP. Each test saves a screenshot of the page it ends on (docs/screenshots/)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.clock import utcnow
from domain.last_used import UsageRecorder
from domain.models import Role, Tenant, User
from domain.settings import Settings
from tests.browser import chromium, screenshot
from tests.factories import Factory
from tests.kinds import TOKEN_PERMISSIONS
from tests.pages import (
    DESKTOP,
    PHONE,
    ScriptWatch,
    open_portal,
    portal_server,
    screenshot_viewport,
    session_jwt,
    tab_to,
)
from tests.steps import EXCHANGE, TENANT_API_V2, USER_API, configure

ROLES = "/identity/resources/roles/v1"

pytestmark = pytest.mark.processes

READ = ["fe.secure.read.tenantApiTokens", "fe.secure.read.userApiTokens"]
TENANT_ONLY = ["fe.secure.read.tenantApiTokens", "fe.secure.write.tenantApiTokens"]


async def account(
    factory: Factory, permission_keys: list[str], *, extra_role: bool = False
) -> tuple[Tenant, Role, User]:
    """Acme Inc. and Ada, who holds a role with these permissions (and a second role with none)."""
    tenant = await factory.tenant("acme", name="Acme Inc.")
    role = await factory.role("admin", permission_keys=permission_keys)
    roles = [role]
    if extra_role:
        roles.append(await factory.role("billing"))
    user = await factory.user(tenant.id, email="ada@acme.test", name="Ada Lovelace", roles=roles)
    return tenant, role, user


def shadow_html(page: Page) -> Any:
    """Everything the component holds: its markup and the value of every input."""
    return page.evaluate(
        """() => {
            const root = document.querySelector('m2m-api-tokens').shadowRoot;
            const values = [...root.querySelectorAll('input')].map((input) => input.value);
            return root.innerHTML + values.join(' ');
        }"""
    )


async def renew_session(page: Page, token: str) -> None:
    """What the embedding app does when its IdP renews the session."""
    await page.evaluate(
        "token => { document.querySelector('m2m-api-tokens').sessionToken = token; }", token
    )


async def test_a_reader_sees_the_tokens_but_no_create_or_delete_button(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, role, user = await account(factory, READ)
    made = await client.post(
        TENANT_API_V2,
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"description": "Nightly export", "roleIds": [role.id], "expiresInMinutes": 1440},
    )
    assert made.status_code == 201, made.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            row = page.get_by_role("row").filter(has_text="Nightly export")
            await expect(row).to_contain_text("Client credentials")
            await expect(row).to_contain_text("Service provider")
            await expect(row).to_contain_text("1 day")
            await expect(row).to_contain_text("Admin")
            await expect(page.get_by_role("tab", name="Personal Tokens")).to_be_visible()
            await expect(page.get_by_role("button", name="Create token")).to_have_count(0)
            await expect(page.get_by_role("button", name="Delete Nightly export")).to_have_count(0)
            await expect(page.get_by_role("button", name="Rotate Nightly export")).to_have_count(0)
            await expect(page.get_by_text("Signed in as Ada Lovelace")).to_be_visible()
            # The session left the address bar at once.
            assert page.url == f"{base}/portal"
            await screenshot(page, "portal-reader")
            watch.assert_quiet()


async def test_a_writer_creates_a_client_credential_for_7_days_sees_its_secret_once_and_deletes_it(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, role, user = await account(factory, TOKEN_PERMISSIONS, extra_role=True)
    grace = await factory.user(tenant.id, name="Grace Hopper", roles=[role])
    # The account's other tokens: one a colleague made, one the vendor made.
    for headers, description, minutes in (
        (
            {"Authorization": f"Bearer {session_jwt(idp_key, grace.id, tenant.id)}"},
            "Billing sync",
            90 * 1440,
        ),
        ({**vendor, "frontegg-tenant-id": tenant.id}, "Nightly export", None),
    ):
        body: dict[str, Any] = {"description": description, "roleIds": [role.id]}
        if minutes:
            body["expiresInMinutes"] = minutes
        made = await client.post(TENANT_API_V2, headers=headers, json=body)
        assert made.status_code == 201, made.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(
                viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
            )
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            billing = page.get_by_role("row").filter(has_text="Billing sync")
            for text in ("Grace Hopper", "90 days"):
                await expect(billing).to_contain_text(text)

            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create API token")
            await expect(dialog).to_be_visible()
            await dialog.get_by_label("Description").fill("CI deploy")
            await dialog.get_by_role("checkbox", name="Admin").check()
            # Only the environment's kind, with the six expirations.
            await expect(dialog).to_contain_text("client ID and a secret")
            options = dialog.get_by_label("Expiration").locator("option")
            await expect(options).to_have_text(
                [
                    "Never",
                    "After 1 day",
                    "After 7 days",
                    "After 30 days",
                    "After 90 days",
                    "After 365 days",
                ]
            )
            await dialog.get_by_label("Expiration").select_option(label="After 7 days")
            await screenshot(page, "portal-create-dialog")
            await dialog.get_by_role("button", name="Create token").click()

            shown = page.get_by_role("dialog", name="Your new API token")
            await expect(shown).to_contain_text("shown only this once")
            await expect(page.get_by_role("row")).to_have_count(4)  # the list behind, read again
            await expect(shown.get_by_label("Secret")).not_to_have_value("")
            shown_secret = await shown.get_by_label("Secret").input_value()
            # The app renewing the session meanwhile takes nothing off the page.
            await renew_session(page, session_jwt(idp_key, user.id, tenant.id))
            await expect(shown.get_by_label("Secret")).to_have_value(shown_secret)
            # What the user takes away is what the Copy buttons put on the clipboard.
            copied = {}
            for label in ("Client ID", "Secret"):
                await shown.get_by_role("button", name=f"Copy {label}").click()
                await expect(shown.get_by_role("status")).to_have_text(f"{label} copied.")
                copied[label] = await page.evaluate("navigator.clipboard.readText()")
            client_id, secret = copied["Client ID"], copied["Secret"]
            await screenshot(page, "portal-secret")
            await shown.get_by_role("button", name="Done").click()

            await expect(page.get_by_role("dialog")).to_have_count(0)
            row = page.get_by_role("row").filter(has_text="CI deploy")
            for text in ("Client credentials", "You", "7 days", "Admin"):
                await expect(row).to_contain_text(text)
            assert secret not in await shadow_html(page)
            assert secret not in await page.content()
            await screenshot(page, "portal-table")

            async with httpx.AsyncClient(base_url=base) as http:
                pair = {"clientId": client_id, "secret": secret}
                exchanged = await http.post(EXCHANGE, json=pair)
                assert exchanged.status_code == 200, exchanged.text

                await page.get_by_role("button", name="Delete CI deploy").click()
                confirm = page.get_by_role("alertdialog", name="Delete this token?")
                await expect(confirm).to_contain_text("CI deploy")
                await confirm.get_by_role("button", name="Delete token").click()
                await expect(row).to_have_count(0)
                await expect(page.get_by_role("row")).to_have_count(3)

                refused = await http.post(EXCHANGE, json=pair)
                assert refused.status_code == 401, refused.text
            await screenshot(page, "portal-deleted")
            watch.assert_quiet()


async def test_a_writer_rotates_a_secret_with_an_overlap_sees_its_state_and_ends_it_early(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, role, user = await account(factory, TOKEN_PERMISSIONS)
    made = await client.post(
        TENANT_API_V2,
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"description": "Nightly export", "roleIds": [role.id]},
    )
    assert made.status_code == 201, made.text
    client_id, old_secret = made.json()["clientId"], made.json()["secret"]

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            row = page.get_by_role("row").filter(has_text="Nightly export")
            await row.get_by_role("button", name="Rotate Nightly export").click()
            dialog = page.get_by_role("dialog", name="Rotate secret")
            overlap = dialog.get_by_label("Old one keeps working for")
            await expect(overlap).to_be_focused()
            await expect(overlap.locator("option")).to_have_text(
                ["No overlap: the old one stops now", "1 hour", "1 day", "7 days"]
            )
            await overlap.select_option(label="1 hour")
            await dialog.get_by_role("button", name="Rotate secret").click()

            shown = page.get_by_role("dialog", name="Your new secret")
            await expect(shown).to_contain_text("The previous secret works until")
            await expect(shown).to_contain_text("shown only this once")
            await expect(shown.get_by_label("Client ID")).to_have_value(client_id)
            await expect(shown.get_by_label("Secret")).not_to_have_value("")
            new_secret = await shown.get_by_label("Secret").input_value()
            assert new_secret != old_secret
            await screenshot(page, "portal-rotation-secret")
            await shown.get_by_role("button", name="Done").click()
            await expect(page.get_by_role("dialog")).to_have_count(0)
            assert new_secret not in await shadow_html(page)

            await expect(row).to_contain_text("Previous secret works until")
            await expect(row).to_contain_text("not used since")
            await expect(row.get_by_role("button", name="Rotate Nightly export")).to_have_count(0)
            await screenshot(page, "portal-rotation-overlap")
            async with httpx.AsyncClient(base_url=base) as http:
                for secret in (old_secret, new_secret):
                    pair = {"clientId": client_id, "secret": secret}
                    exchanged = await http.post(EXCHANGE, json=pair)
                    assert exchanged.status_code == 200, exchanged.text

                await row.get_by_role("button", name="End overlap of Nightly export").click()
                confirm = page.get_by_role("alertdialog", name="End the overlap now?")
                await expect(confirm).to_contain_text("Nightly export")
                await confirm.get_by_role("button", name="End overlap").click()
                await expect(row).to_contain_text("Secret rotated")
                await expect(
                    row.get_by_role("button", name="Rotate Nightly export")
                ).to_be_visible()

                old = await http.post(EXCHANGE, json={"clientId": client_id, "secret": old_secret})
                assert old.status_code == 401, old.text
                new = await http.post(EXCHANGE, json={"clientId": client_id, "secret": new_secret})
                assert new.status_code == 200, new.text
            await screenshot(page, "portal-rotation-ended")
            watch.assert_quiet()


async def test_the_rotate_dialog_offers_only_the_overlaps_the_account_policy_allows(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    # Under a policy whose longest overlap is 12 hours, the usual 1 day would be refused with 400:
    # the dialog offers what the policy allows and starts on the largest of it up to 1 day.
    tenant, role, user = await account(factory, TOKEN_PERMISSIONS)
    acme = {**vendor, "frontegg-tenant-id": tenant.id}
    saved = await client.put(
        "/identity/resources/tenants/token-policy/v1",
        headers=acme,
        json={"maxRotationOverlapMinutes": 12 * 60},
    )
    assert saved.status_code == 200, saved.text
    made = await client.post(
        TENANT_API_V2, headers=acme, json={"description": "Nightly export", "roleIds": [role.id]}
    )
    assert made.status_code == 201, made.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            row = page.get_by_role("row").filter(has_text="Nightly export")
            await row.get_by_role("button", name="Rotate Nightly export").click()
            dialog = page.get_by_role("dialog", name="Rotate secret")
            overlap = dialog.get_by_label("Old one keeps working for")
            await expect(overlap.locator("option")).to_have_text(
                ["No overlap: the old one stops now", "1 hour", "12 hours"]
            )
            await expect(overlap).to_have_value(str(12 * 60))
            await screenshot(page, "portal-rotation-policy")
            await dialog.get_by_role("button", name="Rotate secret").click()
            shown = page.get_by_role("dialog", name="Your new secret")
            await expect(shown).to_contain_text("The previous secret works until")
            await shown.get_by_role("button", name="Done").click()
            await expect(row).to_contain_text("Previous secret works until")
            watch.assert_quiet()

    listed = await client.get("/identity/resources/tenants/api-tokens/v1", headers=acme)
    (credential,) = listed.json()
    rotated = datetime.fromisoformat(credential["rotatedAt"])
    until = datetime.fromisoformat(credential["previousSecretExpires"])
    assert until - rotated == timedelta(hours=12)


async def test_a_user_who_may_not_read_personal_tokens_sees_no_personal_tokens_tab(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant, _, user = await account(factory, TENANT_ONLY)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            await expect(page.get_by_role("tab", name="API Tokens")).to_have_attribute(
                "aria-selected", "true"
            )
            await expect(page.get_by_role("button", name="Create token")).to_be_visible()
            await expect(page.get_by_role("tab", name="Personal Tokens")).to_have_count(0)
            await expect(page.get_by_text("This account has no API tokens yet.")).to_be_visible()
            await screenshot(page, "portal-no-personal-tab")


async def test_personal_tokens_are_created_as_the_user_without_roles_to_choose(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant, _, user = await account(
        factory, ["fe.secure.read.userApiTokens", "fe.secure.write.userApiTokens"]
    )

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            await expect(page.get_by_role("tab", name="Personal Tokens")).to_have_attribute(
                "aria-selected", "true"
            )
            await expect(page.get_by_role("tab", name="API Tokens")).to_have_count(0)
            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create personal token")
            await expect(dialog.get_by_role("checkbox")).to_have_count(0)
            await dialog.get_by_label("Description").fill("Laptop scripts")
            await dialog.get_by_label("Expiration").select_option(label="Never")
            await dialog.get_by_role("button", name="Create token").click()
            await page.get_by_role("dialog").get_by_role("button", name="Done").click()

            row = page.get_by_role("row").filter(has_text="Laptop scripts")
            for text in ("You", "Never", "Your roles"):
                await expect(row).to_contain_text(text)
            async with httpx.AsyncClient(base_url=base) as http:
                listed = await http.get(
                    USER_API,
                    headers={"Authorization": f"Bearer {session_jwt(idp_key, user.id, tenant.id)}"},
                )
                assert [token["description"] for token in listed.json()] == ["Laptop scripts"]
            await screenshot(page, "portal-personal")


async def test_an_expired_session_shows_the_session_message(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant, _, user = await account(factory, TOKEN_PERMISSIONS)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id, minutes=-5))

            alert = page.get_by_role("alert")
            await expect(alert).to_contain_text("Your session has expired")
            await expect(alert).to_contain_text("Sign in again")
            await expect(page.get_by_role("tab")).to_have_count(0)
            await screenshot(page, "portal-session-expired")
            # The browser reports the 401 itself; nothing else may be said.
            watch.assert_quiet(expected_console=("401",))

            # A session handed over again starts the page afresh.
            await renew_session(page, session_jwt(idp_key, user.id, tenant.id))
            await expect(page.get_by_role("button", name="Create token")).to_be_visible()
            await expect(page.get_by_text("This account has no API tokens yet.")).to_be_visible()
            await screenshot(page, "portal-session-renewed")


async def test_without_a_session_in_the_fragment_the_page_says_to_open_it_from_the_app(
    settings: Settings, factory: Factory
) -> None:
    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            # A token in the query string is never taken.
            await page.goto(f"{base}/portal?token=not-taken")

            await expect(page.get_by_role("alert")).to_contain_text("You are not signed in")
            await screenshot(page, "portal-signed-out")


async def test_while_m2m_is_off_the_portal_says_api_tokens_are_disabled(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, _, user = await account(factory, TOKEN_PERMISSIONS)
    await configure(client, vendor, apiTokensEnabled=False)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            notice = page.get_by_role("status").filter(has_text="API tokens are disabled")
            await expect(notice).to_contain_text("turned off")
            await expect(page.get_by_role("button", name="Create token")).to_have_count(0)
            await screenshot(page, "portal-disabled")


async def test_data_is_shown_as_text_and_runs_no_script(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant = await factory.tenant("acme", name="<script>window.__m2mXss = 'tenant'</script>")
    role = await factory.role(
        "admin", permission_keys=TOKEN_PERMISSIONS, name="<b onmouseover=alert('role')>Admin</b>"
    )
    user = await factory.user(tenant.id, name="<img src=x onerror=alert('name')>", roles=[role])
    colleague = await factory.user(
        tenant.id, name="<img src=x onerror=window.__m2mXss='creator'>", roles=[role]
    )
    descriptions = ["<img src=x onerror=alert(1)>", "<img src=x onerror=window.__m2mXss=1>"]
    for description in descriptions:
        made = await client.post(
            TENANT_API_V2,
            headers={"Authorization": f"Bearer {session_jwt(idp_key, colleague.id, tenant.id)}"},
            json={
                "description": description,
                "roleIds": [role.id],
                "metadata": {"x": "<svg/onload=alert(2)>"},
            },
        )
        assert made.status_code == 201, made.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            for description in descriptions:
                await expect(page.get_by_role("cell", name=description, exact=True)).to_be_visible()
            identity = page.get_by_text("Signed in as")
            await expect(identity).to_contain_text(tenant.name)
            await expect(identity).to_contain_text(user.name or "")
            await expect(
                page.get_by_role("row")
                .filter(has_text=descriptions[0])
                .get_by_role("cell", name=colleague.name)
            ).to_be_visible()
            # The role's name in the create dialog, and a description in the delete dialog.
            await page.get_by_role("button", name="Create token").click()
            await expect(
                page.get_by_role("checkbox", name="<b onmouseover=alert('role')>Admin</b>")
            ).to_be_visible()
            await page.keyboard.press("Escape")
            await page.get_by_role("button", name=f"Delete {descriptions[0]}").click()
            await expect(page.get_by_role("alertdialog")).to_contain_text(descriptions[0])
            await page.keyboard.press("Escape")
            await expect(page.get_by_role("alertdialog")).to_have_count(0)

            assert await page.evaluate("() => window.__m2mXss") is None
            created = await page.evaluate(
                """() => document.querySelector('m2m-api-tokens').shadowRoot
                    .querySelectorAll('img, script, svg, b').length"""
            )
            assert created == 0
            watch.assert_quiet()
            await screenshot(page, "portal-xss")


async def test_a_token_is_created_and_deleted_with_the_keyboard_alone(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant, _, user = await account(factory, TOKEN_PERMISSIONS, extra_role=True)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            create = page.get_by_role("button", name="Create token")
            await expect(create).to_be_visible()

            # Tabs: the arrow keys move between them (and Home goes back to the first).
            api_tab = page.get_by_role("tab", name="API Tokens")
            await tab_to(page, api_tab)
            await page.keyboard.press("ArrowRight")
            await expect(page.get_by_role("tab", name="Personal Tokens")).to_be_focused()
            await expect(page.get_by_role("tab", name="Personal Tokens")).to_have_attribute(
                "aria-selected", "true"
            )
            await page.keyboard.press("Home")
            await expect(api_tab).to_be_focused()

            await tab_to(page, create)
            await page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog", name="Create API token")
            description = dialog.get_by_label("Description")
            await expect(description).to_be_focused()
            # The focus stays in the dialog: back from the first field is its last button.
            await page.keyboard.press("Shift+Tab")
            await expect(dialog.get_by_role("button", name="Create token")).to_be_focused()
            await page.keyboard.press("Tab")
            await expect(description).to_be_focused()

            await page.keyboard.type("Keyboard token")
            await page.keyboard.press("Tab")
            admin = dialog.get_by_role("checkbox", name="Admin")
            await expect(admin).to_be_focused()
            await page.keyboard.press("Space")
            await expect(admin).to_be_checked()
            expiration = dialog.get_by_label("Expiration")
            await tab_to(page, expiration)
            await page.keyboard.press("ArrowUp")  # from "After 30 days"
            await expect(expiration.locator("option:checked")).to_have_text("After 7 days")
            await tab_to(page, dialog.get_by_role("button", name="Create token"))
            await page.keyboard.press("Enter")

            shown = page.get_by_role("dialog", name="Your new API token")
            await expect(shown.get_by_role("button", name="Copy client id")).to_be_focused()
            await page.keyboard.press("Escape")
            await expect(page.get_by_role("dialog")).to_have_count(0)
            await expect(create).to_be_focused()
            row = page.get_by_role("row").filter(has_text="Keyboard token")
            await expect(row).to_contain_text("7 days")

            delete = page.get_by_role("button", name="Delete Keyboard token")
            await tab_to(page, delete)
            await page.keyboard.press("Enter")
            confirm = page.get_by_role("alertdialog")
            await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
            await page.keyboard.press("Tab")
            await page.keyboard.press("Enter")
            await expect(row).to_have_count(0)
            await expect(page.get_by_text("This account has no API tokens yet.")).to_be_visible()
            await expect(api_tab).to_be_focused()
            await screenshot(page, "portal-keyboard")


async def test_the_portal_fits_a_phone(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, role, user = await account(factory, TOKEN_PERMISSIONS)
    for description, minutes in (
        ("Billing sync for the accounting team's nightly reconciliation run", 43200),
        ("Deploy", None),
    ):
        body: dict[str, Any] = {"description": description, "roleIds": [role.id]}
        if minutes:
            body["expiresInMinutes"] = minutes
        made = await client.post(
            TENANT_API_V2, headers={**vendor, "frontegg-tenant-id": tenant.id}, json=body
        )
        assert made.status_code == 201, made.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=PHONE, color_scheme="dark")
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            await expect(page.get_by_text("Billing sync", exact=False)).to_be_visible()

            width = await page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"]
            await screenshot(page, "portal-phone")

            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create API token")
            box = await dialog.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= PHONE["width"]
            await screenshot_viewport(page, "portal-phone-dialog")


async def test_a_permission_lost_meanwhile_is_said_as_such(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, role, user = await account(factory, TOKEN_PERMISSIONS)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create API token")
            await dialog.get_by_label("Description").fill("Too late")
            await dialog.get_by_role("checkbox", name="Admin").check()
            # An administrator takes the role's permissions away while the dialog is open.
            taken = await client.put(
                f"{ROLES}/{role.id}/permissions", headers=vendor, json={"permissionIds": []}
            )
            assert taken.status_code == 200, taken.text
            await dialog.get_by_role("button", name="Create token").click()

            alert = page.get_by_role("alert")
            await expect(alert).to_contain_text("You no longer have access to API tokens")
            await expect(page.get_by_role("dialog")).to_have_count(0)
            await screenshot(page, "portal-permission-lost")


async def test_an_unavailable_service_is_said_as_such_and_tried_again(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant, _, user = await account(factory, TOKEN_PERMISSIONS)

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            # A load balancer's answer while every API process is down.
            await page.route(
                f"{base}/portal/v1/session",
                lambda route: route.fulfill(status=503, json={"errors": ["unavailable"]}),
            )
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))

            alert = page.get_by_role("alert")
            await expect(alert).to_contain_text("The token service is unavailable")
            # It answered: nothing about reaching it or about the embedding origins.
            await expect(alert).not_to_contain_text("could not be reached")
            await expect(alert).not_to_contain_text("M2M_EMBED_ORIGINS")
            await page.unroute(f"{base}/portal/v1/session")
            await page.get_by_role("button", name="Try again").click()
            await expect(page.get_by_role("button", name="Create token")).to_be_visible()
            await expect(page.get_by_text("This account has no API tokens yet.")).to_be_visible()
            await screenshot(page, "portal-unavailable")


async def test_each_tokens_last_use_is_shown_as_time_since(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant, role, user = await account(factory, READ)
    made = {}
    for description in ("Nightly export", "Spare"):
        answer = await client.post(
            TENANT_API_V2,
            headers={**vendor, "frontegg-tenant-id": tenant.id},
            json={"description": description, "roleIds": [role.id]},
        )
        assert answer.status_code == 201, answer.text
        made[description] = answer.json()["clientId"]
    # Three hours ago, as an API process writes it (tests/test_last_used.py drives the routes).
    uses = UsageRecorder()
    uses.note_credential(made["Nightly export"], utcnow() - timedelta(hours=3), "203.0.113.9")
    assert await uses.write(sessions) == 1

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            await expect(page.get_by_role("columnheader", name="Last used")).to_be_visible()
            used = page.get_by_role("row").filter(has_text="Nightly export")
            await expect(used.get_by_role("cell", name="3 hours ago")).to_have_attribute(
                "data-label", "Last used"
            )
            spare = page.get_by_role("row").filter(has_text="Spare")
            await expect(spare.locator('td[data-label="Last used"]')).to_have_text("Never")
            await screenshot(page, "portal-last-used")
            watch.assert_quiet()


async def test_the_portal_offers_only_the_expirations_the_account_policy_allows_and_shows_it(
    settings: Settings,
    factory: Factory,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    idp_key: rsa.RSAPrivateKey,
) -> None:
    tenant, _, user = await account(
        factory, ["fe.secure.read.userApiTokens", "fe.secure.write.userApiTokens"]
    )
    saved = await client.put(
        "/identity/resources/tenants/token-policy/v1",
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"maxExpiresInMinutes": 45 * 1440, "maxTokens": {"userApiToken": 2}},
    )
    assert saved.status_code == 200, saved.text

    with portal_server(settings) as base:
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            await open_portal(page, base, session_jwt(idp_key, user.id, tenant.id))
            policy_note = (
                "Your account's token policy: tokens expire within 45 days; at most 2 per person."
            )
            await expect(page.get_by_role("tabpanel")).to_contain_text(policy_note)

            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create personal token")
            expiration = dialog.get_by_label("Expiration")
            # No "Never", nothing past 45 days, and the policy's longest offered as such.
            await expect(expiration.locator("option")).to_have_text(
                ["After 1 day", "After 7 days", "After 30 days", "After 45 days"]
            )
            await expect(expiration).to_have_value(str(30 * 1440))  # the usual default
            await expect(expiration).to_have_accessible_description(policy_note)
            await dialog.get_by_label("Description").fill("Within the policy")
            await expiration.select_option(label="After 45 days")
            await screenshot_viewport(page, "portal-policy-create")
            await dialog.get_by_role("button", name="Create token").click()
            await page.get_by_role("dialog").get_by_role("button", name="Done").click()

            row = page.get_by_role("row").filter(has_text="Within the policy")
            await expect(row).to_contain_text("45 days")
            await screenshot(page, "portal-policy")
