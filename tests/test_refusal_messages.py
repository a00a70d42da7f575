"""Refusals that explain themselves: an enum field names the values it takes; a missing
frontegg-tenant-id header is refused in the same words on every route that needs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec.inspect as mi
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

import api.app  # noqa: F401  (imports every route, so every request body is a Body subclass)
from api.routes import tokens
from api.schemas.common import Body
from tests.factories import Factory

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

CONFIG = "/identity/resources/configurations/v1"
USERS_V2 = "/identity/resources/users/v2"
PERMISSIONS = "/identity/resources/permissions/v1"


@dataclass(frozen=True)
class EnumField:
    model: str
    route: str
    field: str
    allowed: tuple[str, ...]
    body: dict[str, Any]
    in_list: bool = False  # the route takes a list of these objects
    in_tenant: bool = False  # the route needs frontegg-tenant-id


ENUM_FIELDS = [
    EnumField(
        "ConfigurationRequest",
        CONFIG,
        "machineToMachineAuthStrategy",
        ("AccessToken", "ClientCredentials"),
        {},
    ),
    EnumField("ConfigurationRequest", CONFIG, "cookieSameSite", ("STRICT", "LAX", "NONE"), {}),
    EnumField("ConfigurationRequest", CONFIG, "jwtAlgorithm", ("RS256",), {}),
    EnumField(
        "ConfigurationRequest",
        CONFIG,
        "authStrategy",
        ("Code", "EmailAndPassword", "MagicLink", "NoLocalAuthentication", "SmsCode"),
        {},
    ),
    EnumField(
        "CreateUserRequest",
        USERS_V2,
        "provider",
        ("local", "saml", "google", "github", "facebook", "microsoft", "scim2", "slack", "apple"),
        {"email": "ada@example.com"},
        in_tenant=True,
    ),
    EnumField(
        "AddPermissionRequest",
        PERMISSIONS,
        "assignmentType",
        ("NEVER", "ALWAYS", "ASSIGNABLE"),
        {"key": "reports.read", "name": "Read reports"},
        in_list=True,
    ),
]


def _bodies() -> list[type[Body]]:
    found: list[type[Body]] = []
    todo = list(Body.__subclasses__())
    while todo:
        model = todo.pop()
        found.append(model)
        todo.extend(model.__subclasses__())
    return found


def _holds_an_enum(info: mi.Type) -> bool:
    if isinstance(info, mi.Metadata):
        return _holds_an_enum(info.type)
    if isinstance(info, mi.UnionType):
        return any(_holds_an_enum(member) for member in info.types)
    return isinstance(info, mi.LiteralType | mi.EnumType)


def test_the_table_lists_every_enum_field_of_every_request_body() -> None:
    declared = {
        (model.__name__, field.encode_name)
        for model in _bodies()
        for field in mi.type_info(model).fields  # type: ignore[attr-defined]
        if _holds_an_enum(field.type)
    }

    assert declared == {(case.model, case.field) for case in ENUM_FIELDS}


@pytest.mark.parametrize("case", ENUM_FIELDS, ids=lambda case: case.field)
@pytest.mark.parametrize("value", ["Foo", 7])
async def test_an_invalid_enum_value_is_refused_naming_the_allowed_values(
    case: EnumField,
    value: Any,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
) -> None:
    headers = dict(vendor)
    if case.in_tenant:
        headers["frontegg-tenant-id"] = (await factory.tenant()).id
    body: Any = {**case.body, case.field: value}

    response = await client.post(case.route, headers=headers, json=[body] if case.in_list else body)

    assert response.status_code == 400, response.text
    [message] = response.json()["errors"]
    assert case.field in message
    for allowed in case.allowed:
        assert repr(allowed) in message


TENANT_HEADER_MISSING = {"errors": ["The frontegg-tenant-id header is required"]}


def _routes_needing_the_tenant(app: Litestar) -> list[tuple[str, str]]:
    """Every route a vendor must name a tenant on: the token routes, and the directory routes
    that act in one tenant."""
    token_routes = {handler.fn for handler in tokens.ROUTES}
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.fn in token_routes or "tenant_id" in (handler.dependencies or {}):
                found.extend((method, route.path) for method in sorted(handler.http_methods))
    return found


def test_the_directory_routes_acting_in_one_tenant_are_walked(app: Litestar) -> None:
    walked = _routes_needing_the_tenant(app)

    assert ("POST", "/identity/resources/users/v2") in walked
    assert ("POST", "/identity/resources/users/v1/{user_id:str}/roles") in walked
    assert ("DELETE", "/identity/resources/users/v1/{user_id:str}/roles") in walked
    assert len(walked) >= 3 + len(tokens.ROUTES), walked  # and every token route


async def test_a_missing_tenant_header_is_refused_alike_on_every_route_that_needs_it(
    app: Litestar, client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    for method, template in _routes_needing_the_tenant(app):
        path = template.replace("{user_id:str}", "u1").replace("{token_id:str}", "t1")
        body = {"email": "ada@example.com"} if path.endswith("/users/v2") else {"roleIds": []}
        if "tokens" in path:
            body = {"overlapMinutes": 0} if path.endswith("/rotate") else {}
        content = b"" if method in {"GET", "DELETE"} and "tokens" in path else None

        response = await (
            client.request(method, path, headers=vendor, content=content)
            if content is not None
            else client.request(method, path, headers=vendor, json=body)
        )

        assert response.status_code == 400, (method, path, response.text)
        assert response.json() == TENANT_HEADER_MISSING, (method, path)
