"""The console's Events page in a real browser against a live `m2m serve`: an endpoint is added
(its secret shown once), a test event reaches a real receiver, the delivery log shows it, the
secret is rotated, the endpoint deleted with confirmation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import jobs
from domain.job_runs import run_job
from tests.browser import chromium, screenshot
from tests.pages import Watched, screenshot_viewport, sign_in_to_console, watched_page
from tests.receiver import Receiver, running_receiver
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET
from tests.test_events import job_context


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    async with watched_page(browser) as page:
        yield page
    page.assert_clean()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def test_an_endpoint_is_added_tested_logged_rotated_and_deleted(
    live_server: str,
    watched: Watched,
    receiver: Receiver,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    page = watched.page
    await sign_in_to_console(page, live_server)
    await page.get_by_role("link", name="Events").click()
    await expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    await expect(page.get_by_text("No endpoints yet")).to_be_visible()

    await page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add an event endpoint")
    await dialog.get_by_label("URL").fill(receiver.url("/console-hook"))
    await dialog.get_by_label("Description (optional)").fill("Billing")
    await dialog.get_by_role("button", name="Add endpoint").click()
    secret_box = dialog.get_by_label("Signing secret")
    await expect(secret_box).to_be_visible()
    secret = await secret_box.input_value()
    assert secret.startswith("whsec_")
    receiver.inbox("/console-hook").secret = secret
    await screenshot_viewport(page, "console-events-secret")
    await dialog.get_by_role("button", name="Done").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    row = page.get_by_role("row").filter(has_text="/console-hook")
    await expect(row).to_contain_text("token.created")
    await expect(row).to_contain_text("On")
    assert secret not in await page.content()

    await row.get_by_role("button", name="Send test").click()
    async with httpx.AsyncClient(base_url=live_server) as api:
        token = (
            await api.post(
                "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
            )
        ).json()["token"]
        (endpoint,) = (await api.get("/events/endpoints", headers={"x-access-token": token})).json()
    # What a worker does (none runs beside this server): the delivery job, on its database.
    await run_job(job_context(services, sessions), jobs.DELIVER_EVENTS)
    inbox = receiver.inbox("/console-hook")
    assert inbox.types() == ["test"]
    assert inbox.events[0]["data"] == {"endpointId": endpoint["id"]}

    await row.get_by_role("button", name="Deliveries").click()
    log = page.get_by_role("dialog", name="Deliveries to")
    await expect(log.get_by_role("row").filter(has_text="test")).to_contain_text("Delivered")
    await expect(log).to_contain_text("204 in")
    await screenshot_viewport(page, "console-events-deliveries")
    await log.get_by_role("button", name="Close").click()

    await row.get_by_role("button", name="Rotate secret").click()
    await page.get_by_role("dialog").get_by_role("button", name="Rotate secret").click()
    new_box = page.get_by_role("dialog", name="The new signing secret").get_by_label(
        "Signing secret"
    )
    new_secret = await new_box.input_value()
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    await page.get_by_role("button", name="Done").click()

    await row.get_by_role("button", name="Turn off").click()
    await expect(row).to_contain_text("Off")
    await screenshot(page, "console-events")

    await row.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete this endpoint?")
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    await confirm.get_by_role("button", name="Delete endpoint").click()
    await expect(page.get_by_text("No endpoints yet")).to_be_visible()
