"""Logs: one JSON object per line in every process, the request id on every line of a request
and on every answer, and no secret in any line, whatever a request carries or a database call
fails with."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

from api.state import Services
from domain.clock import utcnow
from domain.logs import JsonFormatter, ReadableFormatter, current_request_id, log_config
from domain.models import Tenant
from domain.ratelimit import RateLimiter
from domain.secrets import sha256_hex
from domain.settings import Settings
from tests.factories import Factory
from tests.processes import free_port, serve_environment
from tests.suite import MASTER_KEY, VENDOR_CLIENT_ID, VENDOR_SECRET, WEBHOOK_SECRET, _plain_dsn

VENDOR_AUTH = "/auth/vendor"
CONFIG = "/identity/resources/configurations/v1"
TENANT_API_V2 = "/identity/resources/tenants/api-tokens/v2"
TENANT_ACCESS = "/identity/resources/tenants/access-tokens/v1"
EXCHANGE = "/identity/resources/auth/v2/api-token"
REFRESH = "/identity/resources/auth/v2/api-token/token/refresh"
VALIDATE = "/identity/resources/auth/v1/validate"
WEBHOOK = "/webhooks/users/deleted"
LIVE = "/health/live"

# Every logger the app's lines come through; None is the root, which the others propagate to.
CAPTURED_LOGGERS = ("m2m", "uvicorn", "litestar", "sqlalchemy", None)
LINE_KEYS = {"time", "level", "logger", "message"}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Captured:
    """What the app logged during a test: the records as caplog holds them, and the lines the
    service's JSON handler wrote."""

    caplog: pytest.LogCaptureFixture
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def text(self) -> str:
        """Every record as caplog formats it (tracebacks included), then every JSON line."""
        return self.caplog.text + self.stream.getvalue()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Captured]:
    """Everything logged at DEBUG and above, through caplog and through the JSON formatter."""
    for name in CAPTURED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield Captured(caplog, stream)
    finally:
        root.removeHandler(handler)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


async def new_credential(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> dict[str, Any]:
    """Tenant client credentials holding one permission: clientId and secret."""
    tenant = await factory.tenant()
    permission = await factory.permission()
    response = await client.post(
        TENANT_API_V2,
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"permissionIds": [permission.id]},
    )
    created: dict[str, Any] = ok(response, 201)
    return created


def signed_user_deletion(user_id: str) -> tuple[bytes, dict[str, str]]:
    """A Standard Webhooks delivery of `user.deleted`, signed with the service's secret."""
    body = json.dumps({"type": "user.deleted", "data": {"userId": user_id}})
    webhook_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now().astimezone()
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(webhook_id, at, body),
        "content-type": "application/json",
    }
    return body.encode(), headers


async def kill_database_connections(settings: Settings) -> int:
    """PostgreSQL ends every other connection to the test database: the app's pooled ones die."""
    admin = await asyncpg.connect(_plain_dsn(settings.database_url))
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    return killed


# --- no secret in any line ----------------------------------------------------------------------


async def test_no_secret_of_any_kind_reaches_a_log_line_even_when_a_database_call_fails(
    logs: Captured,
    client: httpx.AsyncClient,
    factory: Factory,
    settings: Settings,
    engine: AsyncEngine,
) -> None:
    vendor_token = ok(
        await client.post(VENDOR_AUTH, json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET})
    )["token"]
    vendor = {"x-access-token": vendor_token}
    tenant = await factory.tenant()
    in_tenant = {**vendor, "frontegg-tenant-id": tenant.id}

    credential = await new_credential(client, vendor, factory)
    body = {"clientId": credential["clientId"], "secret": credential["secret"]}
    exchanged = ok(await client.post(EXCHANGE, json=body))
    bearer = {"Authorization": f"Bearer {exchanged['access_token']}"}
    ok(await client.post(VALIDATE, headers=bearer))
    refreshed = ok(await client.post(REFRESH, json={"refreshToken": exchanged["refresh_token"]}))

    ok(
        await client.post(
            CONFIG, headers=vendor, json={"machineToMachineAuthStrategy": "AccessToken"}
        ),
        201,
    )
    access = ok(await client.post(TENANT_ACCESS, headers=in_tenant, json={"roleIds": []}), 201)
    ok(await client.post(VALIDATE, headers={"X-API-KEY": access["secret"]}))

    delivery, signature = signed_user_deletion("nobody")
    assert (await client.post(WEBHOOK, content=delivery, headers=signature)).status_code == 204

    # The refresh's first statement meets a dead connection: it fails with the token's hash
    # bound to it.
    assert await kill_database_connections(settings) >= 1
    await engine.dispose()  # the test's own connections died too: the cleanup needs new ones
    failed = await client.post(
        REFRESH,
        json={"refreshToken": refreshed["refresh_token"]},
        headers={"X-Request-ID": "failing-refresh"},
    )
    assert failed.status_code == 503, failed.text
    assert failed.headers["x-request-id"] == "failing-refresh"

    secrets = {
        "vendor secret": VENDOR_SECRET,
        "vendor token": vendor_token,
        "client credential secret": credential["secret"],
        "exchanged access token": exchanged["access_token"],
        "exchanged refresh token": exchanged["refresh_token"],
        "refreshed access token": refreshed["access_token"],
        "refreshed refresh token": refreshed["refresh_token"],
        "access token": access["secret"],
        "webhook secret": WEBHOOK_SECRET,
        "webhook key": WEBHOOK_SECRET.removeprefix("whsec_"),
        "master key": MASTER_KEY,
        # SQL parameter values: what the refreshes looked up and stored.
        "hash of the exchanged refresh token": sha256_hex(exchanged["refresh_token"]),
        "hash of the refreshed refresh token": sha256_hex(refreshed["refresh_token"]),
    }
    text = logs.text()
    assert [name for name, value in secrets.items() if value in text] == []

    # The test can fail: the statements were logged, and so was the failing call.
    lines = logs.lines()
    statements = [line for line in lines if line["logger"].startswith("sqlalchemy.engine")]
    assert any("refresh_tokens" in line["message"] for line in statements)
    assert any("parameters hidden" in line["message"] for line in statements)
    assert any(
        line["logger"] == "m2m.api"
        and "dependency unavailable" in line["message"]
        and line.get("request_id") == "failing-refresh"
        for line in lines
    )
    assert all(set(line) >= LINE_KEYS for line in lines)


async def test_a_database_error_logged_with_its_traceback_shows_no_value_bound_to_it(
    logs: Captured, services: Services, factory: Factory
) -> None:
    secret_like = f"secret-{uuid.uuid4().hex}"
    await factory.tenant(tenant_id=secret_like)
    now = utcnow()
    async with services.sessions() as session:
        session.add(Tenant(id=secret_like, name="Twice", created_at=now, updated_at=now))
        with pytest.raises(IntegrityError) as raised:
            await session.flush()
    assert secret_like not in str(raised.value)  # the parameters are hidden

    logging.getLogger("m2m.api").error("unhandled error", exc_info=raised.value)

    [line] = [line for line in logs.lines() if line["logger"] == "m2m.api"]
    assert "IntegrityError" in line["error"]
    assert "Traceback" in line["error"]
    # PostgreSQL's "DETAIL: Key (id)=(...)", which the driver's error chained beneath carries.
    assert secret_like not in line["error"]


# --- the request id -----------------------------------------------------------------------------


async def test_every_line_logged_while_answering_carries_the_request_id_in_one_json_object(
    logs: Captured,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credential = await new_credential(client, vendor, factory)
    # The limiter, domain code, logs a warning during the exchange: it cannot reach Redis.
    unreachable = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.25)
    limiter = RateLimiter(redis=unreachable, prefix=services.settings.redis_prefix)
    monkeypatch.setattr(services, "limiter", limiter)
    before = len(logs.lines())

    response = await client.post(
        EXCHANGE,
        json={"clientId": credential["clientId"], "secret": credential["secret"]},
        headers={"X-Request-ID": "exchange-1"},
    )
    await unreachable.aclose()

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "exchange-1"
    during = logs.lines()[before:]
    ours = [line for line in during if line["logger"].startswith(("m2m", "sqlalchemy"))]
    assert any(line["logger"] == "m2m.ratelimit" for line in ours)
    assert any(line["logger"].startswith("sqlalchemy.engine") for line in ours)
    for line in ours:
        assert LINE_KEYS | {"request_id"} <= set(line), line
        assert line["request_id"] == "exchange-1", line
        assert datetime.fromisoformat(line["time"]).utcoffset() is not None
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert current_request_id.get() is None  # nothing outlives the request


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", LIVE, 200),
        ("POST", VALIDATE, 401),  # a domain error
        ("GET", "/nowhere", 404),  # answered by the router itself
        ("DELETE", LIVE, 405),
        ("POST", EXCHANGE, 400),  # a body that does not validate
    ],
)
async def test_the_request_id_given_is_echoed_on_every_answer(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    given = "3f2a9c1e-7b4d-4e8a-9f00-1c2d3e4f5a6b"
    response = await client.request(method, path, headers={"X-Request-ID": given}, json=[])
    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == [given]


async def test_without_a_request_id_each_answer_carries_a_new_one(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.get(LIVE)).headers["x-request-id"]
    second = (await client.get("/nowhere")).headers["x-request-id"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "hostile",
    [
        b"a" * 129,
        b"abc\x01def",
        b"abc\ndef",
        b"abc\x7f",
        b"abc def",
        b'"}{"level": "CRITICAL"',
        "caf\u00e9".encode(),
        b"",
    ],
    ids=["too long", "control", "newline", "delete", "space", "json", "non-ascii", "empty"],
)
async def test_a_request_id_too_long_or_with_odd_characters_is_replaced(
    client: httpx.AsyncClient, hostile: bytes
) -> None:
    response = await client.get(LIVE, headers={"X-Request-ID": hostile})
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


# --- the processes ------------------------------------------------------------------------------


def test_readable_lines_carry_the_same_fields_as_json_ones() -> None:
    record = logging.LogRecord("m2m.api", logging.WARNING, __file__, 1, "cache %s", ("down",), None)
    token = current_request_id.set("req-1")
    try:
        readable = ReadableFormatter().format(record)
        as_json = json.loads(JsonFormatter().format(record))
    finally:
        current_request_id.reset(token)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d WARNING m2m\.api: cache down  \[request_id=req-1\]", readable
    )
    assert as_json["message"] == "cache down"
    assert as_json["request_id"] == "req-1"
    assert log_config(readable=True)["formatters"]["m2m"]["()"] is ReadableFormatter
    assert log_config()["formatters"]["m2m"]["()"] is JsonFormatter


def _wait_for(condition: Any, process: subprocess.Popen[bytes], describe: Any) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, describe()
        assert time.monotonic() < deadline, describe()
        time.sleep(0.1)  # waiting for a process to boot, not for a behaviour


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.processes
def test_m2m_serve_writes_its_lines_as_json_with_the_request_id_and_no_query(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-c", "from api.cli import main; main()", "serve"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env=serve_environment(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _answers(base + LIVE), process, log.read_text)
        response = httpx.get(
            f"{base}{LIVE}?access_token=query-secret", headers={"X-Request-ID": "live-1"}
        )
        assert response.headers["x-request-id"] == "live-1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(set(line) >= LINE_KEYS for line in lines), text
    assert any(line["message"] == "Application startup complete." for line in lines), text
    [access] = [line for line in lines if line.get("request_id") == "live-1"]
    assert access["logger"] == "m2m.access"
    assert (access["method"], access["path"], access["status"]) == ("GET", LIVE, 200)
    assert "query-secret" not in text
    assert "\\u001b" not in text  # no copy of a line with terminal colours


@pytest.mark.processes
def test_m2m_dev_on_a_terminal_writes_readable_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}
    leader, terminal = pty.openpty()
    command = [sys.executable, "-c", "from api.cli import main; main()", "dev"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--data", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    written = bytearray()

    def read_terminal() -> str:
        while select.select([leader], [], [], 0)[0]:
            try:
                written.extend(os.read(leader, 65536))
            except OSError:  # the process closed its side
                break
        return written.decode(errors="replace")

    try:
        _wait_for(
            lambda: "Application startup complete." in read_terminal(), process, read_terminal
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        output = read_terminal()
        os.close(leader)

    startup = next(line for line in output.splitlines() if "startup complete" in line)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO +uvicorn\.error: Application startup complete\.", startup.strip()
    ), startup
