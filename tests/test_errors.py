"""No input produces a 500: every route answers garbage with a JSON 4xx and changes nothing."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AccessToken, AuditEvent, ClientCredential, Permission, Role, Tenant, User

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
    found: list[tuple[str, str]] = []
    for route in app.routes:
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
