"""The API reference: /schema/openapi.json and .yaml describe every route of the app (bodies from
the structs the routes decode with, errors, who may call, the Frontegg operation), and the page
at /schema works from the service alone (no CDN) under its strict Content-Security-Policy."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from litestar import Litestar
from playwright.async_api import Browser, Request, expect

from api.reference import EXAMPLES, FRONTEGG_OPERATIONS, api_routes, path_template
from api.schemas.common import declared_body
from api.schemas.directory import CreateTenantRequest
from api.schemas.events import EndpointChangeRequest, EndpointRequest
from api.schemas.leaks import LeakReportRequest
from api.schemas.policy import TokenPolicyRequest
from api.schemas.tokens import RotateRequest
from tests.browser import chromium, screenshot
from tests.pages import screenshot_viewport, watched_page
from tests.test_frontegg_reference import reference_operations

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
# What a handler calls when it reads a body: each such route must declare it (opt=reads(...)).
READS_A_BODY = re.compile(r"read_body\(|read_form\(|request\.form\(|request\.body\(")
# The web pages and their assets: not the API, and not in its document.
PAGES = {
    "/console",
    "/console/assets/{name:str}",
    "/portal",
    "/portal/assets/{name:str}",
    "/m2m-api-tokens.js",
    "/schema",
    "/schema/assets/{name:str}",
    "/schema/openapi.json",
    "/schema/openapi.yaml",
    "/schema/{path:str}",
}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    described: dict[str, Any] = response.json()
    return described


def served_routes(app: Litestar) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, the web pages aside, path as the document
    writes it (`{token_id}`)."""
    return {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in app.routes
        for handler in getattr(route, "route_handlers", ())
        for method in handler.http_methods
        if method in METHODS and route.path not in PAGES
    }


def reads_a_body(handler: Any) -> bool:
    return READS_A_BODY.search(inspect.getsource(handler.fn)) is not None


async def test_the_document_describes_every_route_of_the_app_with_its_body(
    app: Litestar, document: dict[str, Any]
) -> None:
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    undescribed = sorted(served_routes(app) - described)
    without_body = sorted(
        f"{method} {path} ({handler.fn.__name__}: declare opt=reads(Struct))"
        for method, path, handler in api_routes(app)
        if reads_a_body(handler) and "requestBody" not in document["paths"][path][method.lower()]
    )

    assert document["openapi"].startswith("3.1")
    assert undescribed == [], "routes the API reference does not describe"
    assert without_body == [], "routes that read a body the API reference does not describe"
    assert len(described) > 40


async def test_the_yaml_document_is_the_json_document(client: httpx.AsyncClient) -> None:
    as_json = await client.get("/schema/openapi.json")
    as_yaml = await client.get("/schema/openapi.yaml")

    assert as_yaml.status_code == 200
    assert as_yaml.headers["content-type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(as_yaml.text) == as_json.json()


async def test_a_body_is_described_by_the_struct_the_route_decodes_with(
    app: Litestar, document: dict[str, Any], client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    create = document["paths"]["/tenants/resources/tenants/v1"]["post"]
    handler = next(
        h for m, p, h in api_routes(app) if (m, p) == ("POST", "/tenants/resources/tenants/v1")
    )
    body = create["requestBody"]["content"]["application/json"]
    component = document["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]

    assert declared_body(handler) is CreateTenantRequest
    assert component["additionalProperties"] is False  # unknown fields are refused
    assert component["properties"]["name"]["maxLength"] == 255
    assert "name" in component["required"]
    assert body["example"]["tenantId"] == "acme"
    # and the same struct refuses what the document says is out of bounds:
    refused = await client.post(
        "/tenants/resources/tenants/v1", json={"tenantId": "t", "name": "x" * 256}, headers=vendor
    )
    assert refused.status_code == 400
    assert "length <= 255" in refused.json()["errors"][0]


async def test_every_example_is_a_body_its_struct_decodes_and_the_new_bodies_have_one(
    app: Litestar, document: dict[str, Any]
) -> None:
    for body, example in EXAMPLES.items():
        msgspec.json.decode(msgspec.json.encode(example), type=body)  # raises if it is not
    shown = {
        declared_body(handler): document["paths"][path][method.lower()]["requestBody"]["content"]
        for method, path, handler in api_routes(app)
        if declared_body(handler) is not None
    }
    for body in (
        RotateRequest,
        TokenPolicyRequest,
        LeakReportRequest,
        EndpointRequest,
        EndpointChangeRequest,
    ):
        (content,) = shown[body].values()
        assert content["example"] == EXAMPLES[body], body


async def test_the_rotation_overlap_states_its_bounds(document: dict[str, Any]) -> None:
    # Stated only: the range is checked once, in domain.rotation, with its own message
    # ("overlapMinutes must be from 0 to 10080", asserted in tests/test_rotation.py).
    overlap = document["components"]["schemas"]["RotateRequest"]["properties"]["overlapMinutes"]
    assert (overlap["type"], overlap["minimum"], overlap["maximum"]) == ("integer", 0, 10080)


async def test_validate_declares_the_client_address_header(document: dict[str, Any]) -> None:
    validate = document["paths"]["/identity/resources/auth/v1/validate"]["post"]
    (header,) = [item for item in validate["parameters"] if item["name"] == "x-m2m-client-address"]
    assert (header["in"], header["required"], header["schema"]["type"]) == (
        "header",
        False,
        "string",
    )
    assert "Last used" in header["description"]


async def test_a_whole_number_written_as_a_float_is_the_integer_it_names(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    """JSON has one kind of number and JSON Schema's integer takes 1.0: the API reference says
    integer, so the routes take 1.0 as 1; 1.5 and "1" stay refused."""
    roles = "/identity/resources/roles/v1"
    whole = await client.post(roles, json=[{"key": "a", "name": "A", "level": 2.0}], headers=vendor)
    half = await client.post(roles, json=[{"key": "b", "name": "B", "level": 1.5}], headers=vendor)
    text = await client.post(roles, json=[{"key": "c", "name": "C", "level": "1"}], headers=vendor)
    listed = await client.get(roles, headers=vendor)

    assert whole.status_code == 201, whole.text
    assert whole.json()[0]["level"] == 2
    assert half.status_code == 400
    assert half.json()["errors"] == ["Expected `int`, got `float` - at `$[0].level`"]
    assert text.status_code == 400
    assert text.json()["errors"] == ["Expected `int`, got `str` - at `$[0].level`"]
    assert sorted(role["key"] for role in listed.json()) == ["a"]


async def test_every_body_string_is_described_without_nul(document: dict[str, Any]) -> None:
    create = document["components"]["schemas"]["CreateTenantApiTokenRequest"]["properties"]

    assert create["roleIds"]["items"]["pattern"] == "^[^\\x00]*$"
    assert create["metadata"]["propertyNames"] == {"pattern": "^[^\\x00]*$"}


async def test_every_operation_says_who_may_call_it_and_how_it_refuses(
    document: dict[str, Any],
) -> None:
    operations = {
        (method.upper(), path): operation
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    }
    schemes = document["components"]["securitySchemes"]
    tokens = operations[("POST", "/identity/resources/users/api-tokens/v1")]
    validate = operations[("POST", "/identity/resources/auth/v1/validate")]
    oauth = operations[("POST", "/oauth/token")]

    assert schemes["vendorToken"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-access-token",
        "description": schemes["vendorToken"]["description"],
    }
    assert {name for option in tokens["security"] for name in option} == {
        "vendorToken",
        "vendorBearer",
        "endUserSession",
    }
    assert validate["security"] == [{"accessTokenKey": []}, {"clientCredentialBearer": []}]
    assert validate["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidatedOut"
    )
    assert oauth["security"] == [{"oauthClientBasic": []}, {}]
    assert "application/x-www-form-urlencoded" in oauth["requestBody"]["content"]
    assert oauth["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OAuthErrorOut"
    )
    assert tokens["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorOut"
    )
    assert operations[("GET", "/health/live")]["security"] == []
    for (method, path), operation in operations.items():
        assert {"400", "503"} <= set(operation["responses"]), (method, path)
        assert any(code.startswith("2") for code in operation["responses"]), (method, path)


async def test_every_frontegg_operation_of_the_reference_names_its_operation(
    document: dict[str, Any],
) -> None:
    named = {
        (method.upper(), path_template(path)): operation.get("x-frontegg-operation")
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    }
    unnamed = [
        f"{method} {path}"
        for method, path in reference_operations()
        if named.get((method, path)) != FRONTEGG_OPERATIONS.get((method, path))
        or named.get((method, path)) is None
    ]

    assert unnamed == []


async def test_an_unknown_reference_asset_or_page_is_a_json_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("/schema/assets/app.py")
    script = await client.get("/schema/assets/reference.js")
    elsewhere = await client.get("/schema/redoc")

    assert elsewhere.status_code == 404
    assert elsewhere.json() == {"errors": ["Not Found"]}
    assert missing.status_code == 404
    assert missing.json() == {"errors": ["No reference asset app.py"]}
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def test_the_reference_page_works_from_the_service_alone_under_its_csp(
    live_server: str, browser: Browser
) -> None:
    elsewhere: list[str] = []
    async with watched_page(browser) as watched:
        page = watched.page

        def outside(request: Request) -> None:
            if not request.url.startswith(live_server) and not request.url.startswith("data:"):
                elsewhere.append(request.url)

        page.on("request", outside)
        # A closed network: nothing but the service answers.
        await page.route(
            re.compile(r"^(?!" + re.escape(live_server) + r"|data:).*"),
            lambda route: route.abort(),
        )
        await page.goto(f"{live_server}/schema")

        await expect(page.get_by_role("heading", name=re.compile("m2m-tokens"))).to_be_visible()
        tokens = page.get_by_text("/identity/resources/users/api-tokens/v1", exact=True).first
        await expect(tokens).to_be_visible()
        await expect(page.get_by_role("button", name="Authorize")).to_be_visible()
        await screenshot(page, "api-reference")
        # An operation opens on its body's schema, from the struct the route decodes with.
        create = page.get_by_role(
            "button", name=re.compile(r"^POST\s*\/identity\/resources\/users\/api-tokens\/v1\s")
        )
        await create.click()
        await expect(page.get_by_text("expiresInMinutes").first).to_be_visible()
        await screenshot_viewport(page, "api-reference-operation")
    watched.assert_clean()
    assert elsewhere == []


async def test_options_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    roles = await client.options("/identity/resources/roles/v1")
    tokens = await client.options("/identity/resources/tenants/access-tokens/v1")

    assert roles.status_code == 204
    assert roles.headers["allow"] == "GET, OPTIONS, POST"
    assert tokens.headers["allow"] == "GET, OPTIONS, POST"
