"""The headers that protect every answer: nosniff everywhere, no caching of any answer that carries
a secret (errors too), and on HTML a strict Content-Security-Policy and framing rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar, MediaType, get

from api.app import create_app
from api.state import Services
from domain.settings import Settings
from tests.factories import Factory, build_scene
from tests.kinds import TENANT_ACCESS, TENANT_API, USER_ACCESS, USER_API, Kind
from tests.steps import (
    EXCHANGE,
    OAUTH_TOKEN,
    REFRESH,
    answers_forever,
    exchange_ok,
    posted,
    simple_credential,
    use_strategy,
    vendor_acting,
)
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

EXCHANGE_V1 = "/identity/resources/auth/v1/api-token"
PLACEHOLDER = re.compile(r"\{[^}]+\}")


def assert_never_cached(response: httpx.Response, label: str) -> None:
    assert response.headers.get_list("cache-control") == ["no-store"], (label, response.headers)
    assert response.headers.get_list("pragma") == ["no-cache"], (label, response.headers)
    assert response.headers["x-content-type-options"] == "nosniff", label


async def test_vendor_authentication_is_never_cached_whether_it_succeeds_or_fails(
    client: httpx.AsyncClient,
) -> None:
    good = await client.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    wrong = await client.post("/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": "no"})
    malformed = await client.post("/auth/vendor", content=b"{oops")

    assert (good.status_code, wrong.status_code, malformed.status_code) == (200, 401, 400)
    for response, label in ((good, "200"), (wrong, "401"), (malformed, "400")):
        assert_never_cached(response, label)


@pytest.mark.parametrize(
    "kind", [USER_API, USER_ACCESS, TENANT_API, TENANT_ACCESS], ids=lambda kind: kind.name
)
async def test_each_token_creation_is_never_cached_whether_it_succeeds_or_fails(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    scene = await build_scene(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, scene.tenant.id, scene.user.id)

    created = await client.post(kind.creates, headers=headers, json=kind.body)
    refused = await client.post(kind.creates, headers=headers, json={"expiresInMinutes": "soon"})
    unauthenticated = await client.post(kind.creates, json=kind.body)

    assert created.status_code == 201, created.text
    assert "secret" in created.json()
    assert (refused.status_code, unauthenticated.status_code) == (400, 401)
    for response, label in ((created, "201"), (refused, "400"), (unauthenticated, "401")):
        assert_never_cached(response, label)


async def test_exchange_refresh_and_oauth_token_are_never_cached_whether_they_succeed_or_fail(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    wrong = {"clientId": credential.client_id, "secret": "wrong"}

    pair = await exchange_ok(client, credential)
    oauth = {"grant_type": "client_credentials", **posted(credential)}

    answers = {
        "exchange v2": (await client.post(EXCHANGE, json=credential.body), 200),
        "exchange v1": (await client.post(EXCHANGE_V1, json=credential.body), 200),
        "exchange v2, wrong secret": (await client.post(EXCHANGE, json=wrong), 401),
        "exchange v1, wrong secret": (await client.post(EXCHANGE_V1, json=wrong), 401),
        "refresh": (await client.post(REFRESH, json={"refreshToken": pair["refresh_token"]}), 200),
        "refresh, unknown token": (await client.post(REFRESH, json={"refreshToken": "no"}), 401),
        "oauth token": (await client.post(OAUTH_TOKEN, data=oauth), 200),
        "oauth token, no grant": (await client.post(OAUTH_TOKEN, data={}), 400),
    }

    for label, (response, status) in answers.items():
        assert response.status_code == status, (label, response.text)
        assert_never_cached(response, label)


def _paths(app: Litestar) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if answers_forever(route):
            continue
        for method in sorted(getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}):
            found.append((method, PLACEHOLDER.sub("x", route.path)))
    return found


async def test_every_answer_of_every_route_says_nosniff(
    app: Litestar, client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    requests = [
        *_paths(app),
        ("GET", "/nowhere"),  # the router's own 404
        ("DELETE", "/auth/vendor"),  # and 405
    ]
    for method, path in requests:
        for headers in ({}, vendor):
            response = await client.request(method, path, headers=headers)
            assert response.headers.get_list("x-content-type-options") == ["nosniff"], (
                method,
                path,
                response.status_code,
            )


async def test_answers_without_a_secret_keep_their_own_caching(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert "no-store" not in response.headers.get("cache-control", "")
    assert "pragma" not in response.headers


# --- HTML pages -------------------------------------------------------------------------------


@get("/test-only/page", media_type=MediaType.HTML)
async def page() -> str:
    return "<!doctype html><title>page</title><p>hello</p>"


@pytest.fixture
async def html_client(
    settings: Settings, services: Services, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """An app built as `m2m serve` builds it, with M2M_EMBED_ORIGINS as the test says, and one
    HTML page (the service's own pages come with the console and portal)."""
    origins: tuple[str, ...] = getattr(request, "param", ())
    application = create_app(dataclasses.replace(settings, embed_origins=origins))
    application.register(page)
    application.state.services = services
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
        yield client


async def test_an_html_page_has_a_strict_policy_and_may_not_be_framed_by_default(
    html_client: httpx.AsyncClient,
) -> None:
    response = await html_client.get("/test-only/page")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no other origin
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "html_client", [("https://app.example.com", "http://localhost:3000")], indirect=True
)
async def test_the_vendors_embed_origins_may_frame_an_html_page(
    html_client: httpx.AsyncClient,
) -> None:
    response = await html_client.get("/test-only/page")

    policy = response.headers["content-security-policy"]
    assert "frame-ancestors https://app.example.com http://localhost:3000" in policy
    assert "script-src 'self'" in policy
    # X-Frame-Options cannot name a list of origins: a browser that knows CSP ignores it anyway.
    assert "x-frame-options" not in response.headers


async def test_json_answers_carry_no_page_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in response.headers
