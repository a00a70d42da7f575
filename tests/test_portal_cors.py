"""CORS for the origins M2M_EMBED_ORIGINS lists, on the routes the embedded component calls
only; never with credentials. The browser's side of it is in tests/test_portal_embedding.py."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar

from api.app import create_app
from api.state import Services
from domain.settings import ConfigError, Settings, load_settings
from tests.suite import VALID

LISTED = "https://app.example.com"
ALSO_LISTED = "http://127.0.0.1:9000"
UNLISTED = "https://evil.example.net"
SESSION = "/portal/v1/session"
TENANT_API = "/identity/resources/tenants/api-tokens/v1"


@pytest.fixture
async def embedded(
    settings: Settings, services: Services, engine: object
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose M2M_EMBED_ORIGINS lists two origins."""
    app: Litestar = create_app(dataclasses.replace(settings, embed_origins=(LISTED, ALSO_LISTED)))
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
        yield client


def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", SESSION),
        ("POST", "/identity/resources/tenants/api-tokens/v2"),
        ("DELETE", f"{TENANT_API}/some-id"),
        ("POST", "/identity/resources/users/access-tokens/v1"),
    ],
)
async def test_a_listed_origin_may_call_the_routes_the_component_calls(
    embedded: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await embedded.options(
        path, headers=preflight(ALSO_LISTED, method, "authorization, content-type")
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALSO_LISTED
    assert "origin" in response.headers["vary"].lower()
    assert method in response.headers["access-control-allow-methods"]
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in response.headers


async def test_the_answer_itself_names_the_listed_origin_and_never_allows_credentials(
    embedded: httpx.AsyncClient,
) -> None:
    response = await embedded.get(SESSION, headers={"Origin": LISTED})

    assert response.status_code == 401  # no session: CORS lets the browser read the refusal
    assert response.headers["access-control-allow-origin"] == LISTED
    assert "access-control-allow-credentials" not in response.headers


async def test_an_unlisted_origin_is_granted_nothing(embedded: httpx.AsyncClient) -> None:
    refused = await embedded.options(SESSION, headers=preflight(UNLISTED))
    answer = await embedded.get(SESSION, headers={"Origin": UNLISTED})

    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in answer.headers


async def test_a_header_or_method_the_component_does_not_send_is_refused(
    embedded: httpx.AsyncClient,
) -> None:
    header = await embedded.options(SESSION, headers=preflight(LISTED, "GET", "x-access-token"))
    method = await embedded.options(f"{TENANT_API}/some-id", headers=preflight(LISTED, "PATCH"))

    assert "access-control-allow-origin" not in header.headers
    assert "access-control-allow-origin" not in method.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/auth/vendor"), ("GET", "/ops/jobs"), ("POST", "/identity/resources/roles/v1")],
)
async def test_routes_the_component_does_not_call_grant_no_origin(
    embedded: httpx.AsyncClient, method: str, path: str
) -> None:
    refused = await embedded.options(path, headers=preflight(LISTED, method, "content-type"))
    answer = await embedded.request(method, path, headers={"Origin": LISTED})

    assert cors_headers(refused) == {}
    assert cors_headers(answer) == {}


async def test_the_component_script_loads_from_any_origin(embedded: httpx.AsyncClient) -> None:
    listed = await embedded.get("/m2m-api-tokens.js", headers={"Origin": LISTED})
    unlisted = await embedded.get("/m2m-api-tokens.js", headers={"Origin": UNLISTED})

    assert listed.headers["access-control-allow-origin"] in {LISTED, "*"}
    assert unlisted.headers["access-control-allow-origin"] == "*"
    assert unlisted.headers["content-type"].startswith("text/javascript")


async def test_without_listed_origins_no_route_answers_cors(client: httpx.AsyncClient) -> None:
    refused = await client.options(SESSION, headers=preflight(LISTED))
    answer = await client.get(SESSION, headers={"Origin": LISTED})

    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in answer.headers


# --- the setting ------------------------------------------------------------------------------


def test_embed_origins_are_read_as_browsers_write_origins() -> None:
    settings = load_settings(
        {
            **VALID,
            "M2M_EMBED_ORIGINS": " https://App.Example.com:443, http://127.0.0.1:9000,,"
            " http://[::1]:3000 , https://app.example.com",
        }
    )

    assert settings.embed_origins == (
        "https://app.example.com",
        "http://127.0.0.1:9000",
        "http://[::1]:3000",
    )
    assert load_settings(VALID).embed_origins == ()


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example.com/",
        "https://app.example.com/portal",
        "app.example.com",
        "ftp://app.example.com",
        "https://*.example.com",
        "*",
        "https://user@app.example.com",
        "https://app.example.com?x=1",
        "https://app.example.com:99999",
        "https://app.example.com, https://ok.example.com/x",
    ],
)
def test_an_embed_origin_with_more_or_less_than_scheme_host_and_port_is_refused(
    value: str,
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**VALID, "M2M_EMBED_ORIGINS": value})

    assert error.value.variable == "M2M_EMBED_ORIGINS"
    assert "scheme, host and port only" in str(error.value)
