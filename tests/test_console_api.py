"""The vendor console's own routes (/console/v1: tenants found a page at a time, every token of a
tenant, the configuration limits), its page and assets as served, and M2M_CONSOLE_ENABLED."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from api.app import create_app
from api.dev import DevCredentials, DevEnvironment, banner
from api.state import Services
from domain.clock import utcnow
from domain.models import Tenant, User
from domain.settings import ConfigError, Settings, load_settings
from tests.factories import READ, Factory, add_access_token, add_credential, mark_deleted
from tests.steps import create_access_token, tenant_credential, user_credential
from tests.suite import VALID

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

TENANTS = "/console/v1/tenants"
LIMITS = "/console/v1/limits"
WEB = Path(__file__).resolve().parent.parent / "api" / "web" / "console"


def tokens_of(tenant_id: str) -> str:
    return f"{TENANTS}/{tenant_id}/tokens"


async def names(client: httpx.AsyncClient, vendor: dict[str, str], **query: Any) -> list[str]:
    response = await client.get(TENANTS, headers=vendor, params=query)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


# --- tenants ------------------------------------------------------------------------------------


async def test_tenants_are_found_by_any_case_substring_of_name_or_id_by_name(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme-prod", name="Acme Production")
    await factory.tenant("globex", name="Globex")
    await factory.tenant("umbrella-7", name="acme labs")
    await factory.tenant("initech", name="Initech")

    response = await client.get(TENANTS, headers=vendor, params={"search": "ACME"})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {
                "tenantId": "umbrella-7",
                "name": "acme labs",
                "createdAt": response_time(response, 0),
            },
            {
                "tenantId": "acme-prod",
                "name": "Acme Production",
                "createdAt": response_time(response, 1),
            },
        ],
        "total": 2,
    }
    assert await names(client, vendor, search="bex") == ["Globex"]
    assert await names(client, vendor, search="umbrella") == ["acme labs"]  # by id
    assert await names(client, vendor) == ["acme labs", "Acme Production", "Globex", "Initech"]


def response_time(response: httpx.Response, index: int) -> str:
    created: str = response.json()["items"][index]["createdAt"]
    assert created.endswith("Z")
    return created


async def test_tenants_come_a_page_at_a_time_with_the_total(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    for number in range(30):
        await factory.tenant(f"t{number:02d}", name=f"Tenant {number:02d}")

    first = (await client.get(TENANTS, headers=vendor)).json()
    second = (await client.get(TENANTS, headers=vendor, params={"offset": 25})).json()
    small = (await client.get(TENANTS, headers=vendor, params={"offset": 3, "limit": 2})).json()

    assert first["total"] == second["total"] == small["total"] == 30
    assert [item["tenantId"] for item in first["items"]] == [f"t{n:02d}" for n in range(25)]
    assert [item["tenantId"] for item in second["items"]] == [f"t{n:02d}" for n in range(25, 30)]
    assert [item["tenantId"] for item in small["items"]] == ["t03", "t04"]


async def test_search_wildcards_are_plain_characters_and_deleted_tenants_are_gone(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: Any
) -> None:
    await factory.tenant("a", name="100% Pure")
    await factory.tenant("b", name="1000 Pure")
    await factory.tenant("c", name="snake_case")
    await factory.tenant("d", name="snakeXcase")
    await factory.tenant("gone", name="100% Gone")
    await mark_deleted(db, Tenant, "gone")

    assert await names(client, vendor, search="0%") == ["100% Pure"]
    assert await names(client, vendor, search="e_c") == ["snake_case"]
    page = (await client.get(TENANTS, headers=vendor, params={"search": "100"})).json()
    assert page == {"items": [page["items"][0], page["items"][1]], "total": 2}
    assert {item["tenantId"] for item in page["items"]} == {"a", "b"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "limit must be from 1 to 100"),
        ({"limit": "101"}, "limit must be from 1 to 100"),
        ({"offset": "-1"}, "offset must be from 0 to 2147483647"),
        ({"offset": "99999999999"}, "offset must be from 0 to 2147483647"),
        ({"search": "x" * 256}, "search must be at most 255 characters, without NUL"),
        ({"search": "a\x00b"}, "search must be at most 255 characters, without NUL"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "1.5"}, "offset"),
    ],
)
async def test_a_bad_page_is_refused_with_400(
    client: httpx.AsyncClient, vendor: dict[str, str], query: dict[str, str], message: str
) -> None:
    response = await client.get(TENANTS, headers=vendor, params=query)

    assert response.status_code == 400, response.text
    assert message in response.json()["errors"][0]


async def test_the_console_routes_are_for_the_vendor_only(
    client: httpx.AsyncClient, factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    role = await factory.role(tenant_id=tenant.id, permission_keys=[READ])
    user = await factory.user(tenant.id, roles=[role])

    for path in (TENANTS, tokens_of(tenant.id), LIMITS):
        assert (await client.get(path)).status_code == 401
        as_user = await client.get(path, headers=end_user(user.id, tenant.id))
        assert as_user.status_code == 401, as_user.text


# --- a tenant's tokens --------------------------------------------------------------------------


async def test_a_tenants_tokens_are_every_kind_with_their_owners_and_creators(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant("acme", name="Acme")
    admin_role = await factory.role(
        "admin",
        tenant_id=tenant.id,
        permission_keys=[READ, "fe.secure.write.tenantApiTokens", "fe.secure.write.userApiTokens"],
    )
    ada = await factory.user(tenant.id, email="ada@acme.test", roles=[admin_role])
    other = await factory.tenant("other", name="Other")

    by_ada = await tenant_credential(
        client, end_user(ada.id, tenant.id), tenant.id, role_ids=[admin_role.id]
    )
    personal = await user_credential(client, end_user(ada.id, tenant.id), tenant.id, ada.id)
    access = await create_access_token(client, vendor, tenant.id, role_ids=[admin_role.id])
    laptop = await create_access_token(client, vendor, tenant.id, user_id=ada.id, minutes=60)
    await create_access_token(client, vendor, other.id)

    response = await client.get(tokens_of(tenant.id), headers=vendor)

    assert response.status_code == 200, response.text
    body = response.json()
    listed = {token["id"]: token for token in body["tokens"]}
    assert [token["id"] for token in body["tokens"]] == [
        by_ada.client_id,
        personal.client_id,
        access["id"],
        laptop["id"],
    ]
    assert listed[by_ada.client_id] == {
        "kind": "tenantApiToken",
        "id": by_ada.client_id,
        "description": listed[by_ada.client_id]["description"],
        "userId": None,
        "createdByUserId": ada.id,
        "createdAt": listed[by_ada.client_id]["createdAt"],
        "expires": None,
        "roleIds": [admin_role.id],
        "permissionIds": [],
        "rotatedAt": None,
        "previousSecretExpires": None,
        "previousSecretLastUsedAt": None,
        "replacedBy": None,
        "lastUsedAt": None,
        "lastUsedFrom": [],
    }
    assert listed[personal.client_id]["kind"] == "userApiToken"
    assert listed[personal.client_id]["userId"] == ada.id
    assert listed[access["id"]]["kind"] == "tenantAccessToken"
    assert listed[access["id"]]["createdByUserId"] is None  # the vendor made it
    assert listed[access["id"]]["roleIds"] == [admin_role.id]
    assert listed[laptop["id"]]["kind"] == "userAccessToken"
    assert listed[laptop["id"]]["expires"] == laptop["expires"]
    assert body["users"] == {ada.id: {"email": "ada@acme.test", "name": "Test User"}}
    assert by_ada.secret not in response.text
    assert personal.secret not in response.text


async def test_the_personal_tokens_of_a_user_being_deleted_are_not_listed(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, sessions: Any, db: Any
) -> None:
    tenant = await factory.tenant()
    leaving = await factory.user(tenant.id)
    staying = await factory.user(tenant.id)
    await add_credential(sessions, tenant.id, leaving.id)
    kept = await add_access_token(sessions, tenant.id, staying.id, utcnow() - timedelta(days=1))
    await mark_deleted(db, User, leaving.id)

    body = (await client.get(tokens_of(tenant.id), headers=vendor)).json()

    assert [token["id"] for token in body["tokens"]] == [kept]  # expired, but still there
    assert list(body["users"]) == [staying.id]


async def test_the_tokens_of_an_unknown_or_deleted_tenant_are_404(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: Any
) -> None:
    tenant = await factory.tenant("leaving")
    await mark_deleted(db, Tenant, tenant.id)

    for tenant_id in ("nobody", "leaving"):
        response = await client.get(tokens_of(tenant_id), headers=vendor)
        assert response.status_code == 404
        assert response.json() == {"errors": [f"Tenant {tenant_id} not found"]}


async def test_the_limits_are_those_the_configuration_route_enforces(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    limits = (await client.get(LIMITS, headers=vendor)).json()

    assert limits == {
        "defaultTokenExpiration": {"min": 1, "max": 2_592_000},
        "defaultRefreshTokenExpiration": {"min": 60, "max": 15_552_000},
    }
    for field, bounds in limits.items():
        for value, status in ((bounds["min"], 201), (bounds["max"], 201), (bounds["max"] + 1, 400)):
            answer = await client.post(
                "/identity/resources/configurations/v1", headers=vendor, json={field: value}
            )
            assert answer.status_code == status, (field, value, answer.text)
        below = await client.post(
            "/identity/resources/configurations/v1", headers=vendor, json={field: bounds["min"] - 1}
        )
        assert below.status_code == 400


# --- the page and its assets --------------------------------------------------------------------


class InlineCode(HTMLParser):
    """What a strict Content-Security-Policy would block in a page: inline scripts, style
    elements and attributes, event-handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            source = dict(attrs).get("src")
            if not source:
                self.found.append("an inline <script>")
            else:
                self.scripts.append(source)
        if tag == "style":
            self.found.append("a <style> element")
        self.found += [f"{name} on <{tag}>" for name in names if name == "style"]
        self.found += [f"{name} on <{tag}>" for name in names if name.startswith("on")]


async def test_the_page_has_no_inline_script_or_style_and_its_assets_are_served_typed(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/console")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    parser = InlineCode()
    parser.feed(page.text)
    assert parser.found == []
    assert parser.scripts == ["/console/assets/console.js"]
    for path in sorted((WEB / "assets").iterdir()):
        served = await client.get(f"/console/assets/{path.name}")
        assert served.status_code == 200, path.name
        assert served.content == path.read_bytes()
        expected = "text/javascript" if path.suffix == ".js" else "text/css"
        assert served.headers["content-type"].startswith(expected), path.name
        # No script builds markup from strings: data is set as text.
        assert "innerHTML" not in served.text.replace('"innerHTML"', ""), path.name
        assert "insertAdjacentHTML" not in served.text
        assert "document.write" not in served.text
    assert (await client.get("/console/assets/nothing.js")).status_code == 404
    assert (await client.get("/console/assets/../index.html")).status_code == 404


# --- switched off -------------------------------------------------------------------------------


@pytest.fixture
async def console_off(
    settings: Settings, services: Services, client: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    app: Litestar = create_app(dataclasses.replace(settings, console_enabled=False))
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as off:
        yield off


async def test_with_the_console_off_its_page_assets_and_routes_are_404(
    console_off: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()

    for path in ("/console", "/console/assets/console.js", TENANTS, tokens_of(tenant.id), LIMITS):
        response = await console_off.get(path, headers=vendor)
        assert response.status_code == 404, path
    # The API the console used is the API still.
    still = await console_off.get("/tenants/resources/tenants/v1", headers=vendor)
    assert still.status_code == 200


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("true", True), ("1", True), ("Yes", True), ("false", False), ("0", False)],
)
def test_m2m_console_enabled_reads_a_boolean(value: str | None, enabled: bool) -> None:
    env = {**VALID} if value is None else {**VALID, "M2M_CONSOLE_ENABLED": value}

    assert load_settings(env).console_enabled is enabled


def test_a_malformed_m2m_console_enabled_stops_the_start_naming_it() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**VALID, "M2M_CONSOLE_ENABLED": "maybe"})

    assert raised.value.variable == "M2M_CONSOLE_ENABLED"
    assert str(raised.value) == "M2M_CONSOLE_ENABLED: must be true or false, got 'maybe'"


# --- m2m dev --------------------------------------------------------------------------------------


def test_m2m_dev_prints_the_api_its_reference_and_the_console_url(tmp_path: Path) -> None:
    credentials = DevCredentials.generate(issuer="http://localhost:8123")
    for created in (True, False):
        environment = DevEnvironment(path=tmp_path, credentials=credentials, created=created)
        settings = environment.settings({}, port=8123)

        printed = banner(environment, settings, port=8123)

        assert "  console:  http://127.0.0.1:8123/console" in printed.splitlines()
        assert (
            "m2m dev: the API at http://127.0.0.1:8123, its reference at "
            "http://127.0.0.1:8123/schema"
        ) in printed.splitlines()
        off = banner(environment, dataclasses.replace(settings, console_enabled=False), port=8123)
        assert "/console" not in off
