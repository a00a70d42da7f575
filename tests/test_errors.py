"""No input produces a 500: every route answers garbage with a JSON 4xx and changes nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AccessToken, AuditEvent, ClientCredential, Permission, Role, Tenant, User
from tests.factories import Factory, build_scene
from tests.kinds import TENANT_ACCESS, TENANT_API, USER_ACCESS, USER_API, Kind
from tests.steps import answers_forever, create, use_strategy, vendor_acting

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

GARBAGE_BODIES: list[bytes] = [
    b"",
    b"{oops",
    b"null",
    b"[]",
    b'"text"',
    b"12",
    b'{"description": "\\u0000"}',
    b'{"name": "' + b"n" * 10_000 + b'"}',
    b'{"description": "' + b"d" * 10_000 + b'"}',
    b'{"tenantId": "t", "createdByUserId": "u"}',
    b'{"expiresInMinutes": "soon", "roleIds": "all"}',
    b'[{"key": null}]',
    b'{"metadata": "' + b"\\u0000" + b'"}',
]

GARBAGE_IDS = ["%00", "x" * 300, "%F0%9F%92%A9", "..", "' OR 1=1 --"]

PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _paths(app: Litestar) -> list[tuple[str, str]]:
    """Every route but those whose answer never ends (see answers_forever)."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if answers_forever(route):
            continue
        for method in sorted(getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}):
            found.append((method, route.path))
    return found


async def _stored_counts(db: AsyncSession) -> dict[str, int]:
    counts = {}
    for model in (Tenant, User, Role, Permission, AccessToken, ClientCredential, AuditEvent):
        counts[model.__name__] = int(
            await db.scalar(sa.select(sa.func.count()).select_from(model)) or 0
        )
    return counts


def _assert_no_server_error(response: Any, label: str, *, must_fail: bool) -> None:
    if must_fail:
        assert 400 <= response.status_code < 500, (label, response.status_code, response.text)
    assert response.status_code < 500, (label, response.status_code, response.text)
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body.get("errors"), list), (label, body)
    assert body["errors"], (label, body)
    text = response.text.lower()
    for leak in ("traceback", "sqlalchemy", "asyncpg", "select ", "insert "):
        assert leak not in text, (label, response.text)


async def test_every_route_answers_garbage_with_a_json_4xx_and_stores_nothing(
    app: Litestar, client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    before = await _stored_counts(db)
    headers_sets = [
        {**vendor, "content-type": "application/json"},
        {
            **vendor,
            "content-type": "application/json",
            "frontegg-tenant-id": "no-such-tenant",
            "frontegg-user-id": "no-such-user",
        },
        {"content-type": "application/json"},
        {"content-type": "application/json", "x-access-token": "garbage"},
        {"content-type": "application/json", "Authorization": "Bearer a.b.c"},
    ]
    routes = _paths(app)
    assert len(routes) > 20, routes
    for method, template in routes:
        for garbage_id in GARBAGE_IDS:
            path = PLACEHOLDER.sub(garbage_id, template)
            for headers in headers_sets:
                bodies = GARBAGE_BODIES if method in {"POST", "PUT", "PATCH"} else [b""]
                for body in bodies:
                    response = await client.request(method, path, headers=headers, content=body)
                    _assert_no_server_error(
                        response,
                        f"{method} {path} {headers} {body[:40]!r}",
                        must_fail=method in {"POST", "PUT", "PATCH"},
                    )
    assert await _stored_counts(db) == before


@pytest.mark.parametrize("path", ["/nowhere", "/identity/resources/nothing/v1"])
async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == {"errors": ["Not Found"]}


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/auth/vendor")
    assert response.status_code == 405
    assert response.json()["errors"]


# --- JSON nested deeper than any body needs ------------------------------------------------------

# 500 levels of metadata fit in its 8 KiB; 5,000 do not (both fit in the body size limit).
DEPTHS = [500, 5_000]


def nested_object(depth: int) -> bytes:
    """`{"a": {"a": ... 1 ...}}`, `depth` objects deep (json.dumps itself cannot build it)."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def with_field(name: str, value: bytes, **others: Any) -> bytes:
    rest = b"".join(
        b', "' + key.encode() + b'": ' + json.dumps(v).encode() for key, v in others.items()
    )
    return b'{"' + name.encode() + b'": ' + value + rest + b"}"


CREATE_ROUTES = [USER_API, USER_ACCESS, TENANT_API, TENANT_ACCESS]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", CREATE_ROUTES, ids=lambda kind: kind.name)
async def test_metadata_nested_deeply_is_a_400_on_every_create_route_and_stores_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
    depth: int,
) -> None:
    scene = await build_scene(factory)
    await use_strategy(client, vendor, kind)
    headers = {**vendor_acting(vendor, kind, scene.tenant.id, scene.user.id)}
    headers["content-type"] = "application/json"
    before = await _stored_counts(db)

    for value in (nested_object(depth), nested_list(depth)):
        body = with_field("metadata", value, **kind.body)
        response = await client.post(kind.creates, headers=headers, content=body)

        assert response.status_code == 400, (len(body), response.status_code, response.text)
        assert response.json()["errors"], response.text
    assert await _stored_counts(db) == before


@pytest.mark.parametrize("depth", DEPTHS)
async def test_metadata_nested_deeply_is_a_400_on_patch_and_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    depth: int,
) -> None:
    scene = await build_scene(factory)
    await use_strategy(client, vendor, TENANT_API)
    headers = vendor_acting(vendor, TENANT_API, scene.tenant.id, None)
    created = await create(client, headers, TENANT_API, {"metadata": {"team": "billing"}})

    for value in (nested_object(depth), nested_list(depth)):
        response = await client.patch(
            TENANT_API.item(created["clientId"]),
            headers={**headers, "content-type": "application/json"},
            content=with_field("metadata", value),
        )

        assert response.status_code == 400, response.text
    stored = await db.get(ClientCredential, created["clientId"])
    assert stored is not None
    assert stored.metadata_json == {"team": "billing"}


async def test_metadata_up_to_32_levels_deep_is_stored_and_one_more_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    await use_strategy(client, vendor, TENANT_API)
    headers = {**vendor_acting(vendor, TENANT_API, scene.tenant.id, None)}
    headers["content-type"] = "application/json"

    deepest = await client.post(
        TENANT_API.creates,
        headers=headers,
        content=with_field("metadata", nested_object(32), **TENANT_API.body),
    )
    too_deep = await client.post(
        TENANT_API.creates,
        headers=headers,
        content=with_field("metadata", nested_object(33), **TENANT_API.body),
    )

    assert deepest.status_code == 201, deepest.text
    assert json.dumps(deepest.json()["metadata"]).count("{") == 32
    assert too_deep.status_code == 400
    assert too_deep.json()["errors"] == ["`metadata` must not nest deeper than 32 levels"]


def _deep_bodies() -> list[bytes]:
    bodies: list[bytes] = []
    for depth in (*DEPTHS, 20_000):  # 20,000: lists still fit in the body, objects do not
        bodies += [nested_object(depth), nested_list(depth)]
        for field in ("metadata", "emailMetadata", "roleIds", "description", "data", "password"):
            bodies.append(with_field(field, nested_list(depth)))
    return bodies


async def test_every_route_answers_a_deeply_nested_body_with_a_4xx_and_stores_nothing(
    app: Litestar,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    before = await _stored_counts(db)
    headers_sets = [
        {
            **vendor,
            "content-type": "application/json",
            "frontegg-tenant-id": scene.tenant.id,
            "frontegg-user-id": scene.user.id,
        },
        {"content-type": "application/json"},
    ]
    routes = _paths(app)
    bodies = _deep_bodies()
    for method, template in routes:
        if method not in {"POST", "PUT", "PATCH"}:
            continue
        path = PLACEHOLDER.sub("x", template)
        for headers in headers_sets:
            for body in bodies:
                response = await client.request(method, path, headers=headers, content=body)
                _assert_no_server_error(
                    response, f"{method} {path} {len(body)} bytes {body[:30]!r}", must_fail=True
                )
    assert await _stored_counts(db) == before


async def test_a_request_carries_one_credential_an_empty_x_access_token_is_a_missing_one(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {vendor['x-access-token']}"}
    path = "/identity/resources/configurations/v1"
    assert (await client.get(path, headers=bearer)).status_code == 200

    both = await client.get(path, headers={**bearer, "x-access-token": ""})

    assert both.status_code == 401, both.text
    assert both.json() == {"errors": ["Missing vendor token"]}
