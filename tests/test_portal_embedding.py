"""The <m2m-api-tokens> component embedded in a vendor's page served from another origin: it
works when M2M_EMBED_ORIGINS lists that origin, and the browser refuses its calls when not."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import expect

from domain.settings import Settings
from tests.browser import chromium, screenshot
from tests.factories import Factory
from tests.kinds import TOKEN_PERMISSIONS
from tests.pages import DESKTOP, ScriptWatch, VendorSite, portal_server, session_jwt

pytestmark = pytest.mark.processes


async def test_the_component_works_from_a_listed_origin_and_is_refused_from_another(
    settings: Settings, factory: Factory, idp_key: rsa.RSAPrivateKey
) -> None:
    tenant = await factory.tenant("acme", name="Acme Inc.")
    role = await factory.role("admin", permission_keys=TOKEN_PERMISSIONS)
    user = await factory.user(tenant.id, email="ada@acme.test", name="Ada", roles=[role])
    token = session_jwt(idp_key, user.id, tenant.id)

    with (
        VendorSite() as listed,
        VendorSite() as unlisted,
        portal_server(settings, embed_origins=(listed.origin,)) as base,
    ):
        for site in (listed, unlisted):
            site.service, site.session_token = base, token
        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await page.goto(listed.origin)

            # The session comes from the vendor's callback; reads, a creation (a preflighted
            # POST) and a deletion (a preflighted DELETE) all cross the origins.
            await expect(page.get_by_text("Signed in as Ada")).to_be_visible()
            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create API token")
            await dialog.get_by_label("Description").fill("Embedded")
            await dialog.get_by_role("checkbox", name="Admin").check()
            await dialog.get_by_role("button", name="Create token").click()
            await page.get_by_role("dialog").get_by_role("button", name="Done").click()
            row = page.get_by_role("row").filter(has_text="Embedded")
            await expect(row).to_contain_text("You")
            await page.get_by_role("button", name="Delete Embedded").click()
            await page.get_by_role("alertdialog").get_by_role("button", name="Delete token").click()
            await expect(page.get_by_text("This account has no API tokens yet.")).to_be_visible()
            watch.assert_quiet()
            await screenshot(page, "portal-embedded")

            refused_page = await browser.new_page(viewport=DESKTOP)
            await refused_page.goto(unlisted.origin)
            alert = refused_page.get_by_role("alert")
            # A person is told what is wrong, and who can put it right.
            await expect(alert).to_contain_text("The token service could not be reached")
            await expect(alert).to_contain_text(
                "If this page embeds the token service, this page's address must be allowed by "
                "the service (M2M_EMBED_ORIGINS)."
            )
            await expect(refused_page.get_by_role("button", name="Try again")).to_be_visible()
            await screenshot(refused_page, "portal-embedded-refused")

        async with httpx.AsyncClient(base_url=base) as http:
            preflight = {
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            }
            allowed = await http.options(
                "/portal/v1/session", headers={"Origin": listed.origin, **preflight}
            )
            refused = await http.options(
                "/portal/v1/session", headers={"Origin": unlisted.origin, **preflight}
            )
        assert allowed.headers["access-control-allow-origin"] == listed.origin
        assert "access-control-allow-origin" not in refused.headers
