"""`m2m dev`: the whole service in one process on a SQLite file, with no server to install."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from api.dev import DataDirectoryError, first_start_settings, open_data_directory
from domain.settings import DevDefaults, load_settings
from tests.factories import Factory
from tests.processes import free_port, run_m2m

VALIDATE = "/identity/resources/auth/v1/validate"
TENANTS = "/tenants/resources/tenants/v1"
PERMISSIONS = "/identity/resources/permissions/v1"
ROLES = "/identity/resources/roles/v1"
USERS = "/identity/resources/users/v2"
USER_API = "/identity/resources/users/api-tokens/v1"
TENANT_API_V2 = "/identity/resources/tenants/api-tokens/v2"
TENANT_API = "/identity/resources/tenants/api-tokens/v1"
USER_ACCESS = "/identity/resources/users/access-tokens/v1"
TENANT_ACCESS = "/identity/resources/tenants/access-tokens/v1"
CONFIG = "/identity/resources/configurations/v1"
EXCHANGE = "/identity/resources/auth/v2/api-token"
REFRESH = "/identity/resources/auth/v2/api-token/token/refresh"

START_SECONDS = 60


# --- a trap for any connection to PostgreSQL or Redis -----------------------------------------


class Trap:
    """A listener that notes every connection made to it, and hangs up at once."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    listening = Trap()
    yield listening
    listening.close()


# --- `m2m dev` as a subprocess ----------------------------------------------------------------


@dataclass
class DevProcess:
    base: str
    output: list[str]
    process: subprocess.Popen[str]

    def text(self) -> str:
        return "\n".join(self.output)


def dev_environment(trap: Trap) -> dict[str, str]:
    """The caller's environment without M2M_*, and PostgreSQL, Redis and a broker that, were
    they contacted, would be the trap."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}
    return {
        **clean,
        "M2M_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{trap.port}/m2m",
        "M2M_REDIS_URL": f"redis://127.0.0.1:{trap.port}/0",
        "M2M_BROKER_URL": f"redis://127.0.0.1:{trap.port}/1",
    }


@contextlib.contextmanager
def running_dev(
    directory: Path, env: dict[str, str], port: int | None = None
) -> Iterator[DevProcess]:
    """`m2m dev --port P` started in `directory` (on a free port unless told); stopped
    (SIGTERM) at the end."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "dev", "--port", str(port)],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    errors: list[str] = []

    def pump(stream: Any, sink: Any) -> None:
        for line in stream:
            sink(line.rstrip("\n"))
        if sink is lines.put:
            lines.put(None)

    threads = [
        threading.Thread(target=pump, args=(process.stdout, lines.put), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, errors.append), daemon=True),
    ]
    for thread in threads:
        thread.start()
    dev = DevProcess(base=f"http://127.0.0.1:{port}", output=[], process=process)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError("m2m dev exited:\n" + "\n".join(errors[-40:]))
            try:
                httpx.get(f"{dev.base}/.well-known/jwks.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "m2m dev did not answer:\n" + "\n".join(errors[-40:])
                    ) from None
                time.sleep(0.05)  # waiting for a process to boot, not for a behaviour
        while not lines.empty():
            line = lines.get()
            if line is not None:
                dev.output.append(line)
        yield dev
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for thread in threads:
            thread.join(timeout=5)
    assert not [line for line in errors if "Traceback" in line], "\n".join(errors[-60:])


def printed(output: str, label: str) -> str:
    found = re.search(rf"^\s*{label}:\s*(\S+)\s*$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


@pytest.mark.processes
def test_m2m_dev_walks_the_readme_flow_and_keeps_its_credentials_across_restarts(
    tmp_path: Path, trap: Trap
) -> None:
    env = dev_environment(trap)
    with running_dev(tmp_path, env) as dev:
        output = dev.text()
        client_id = printed(output, "clientId")
        secret = printed(output, "secret")
        assert f"curl -s -X POST {dev.base}/auth/vendor" in output
        # The API reference it names is served, from the process alone.
        assert f"its reference at {dev.base}/schema" in output
        assert httpx.get(f"{dev.base}/schema/openapi.json").json()["openapi"].startswith("3.1")
        assert secret in output.split("Try it:")[1]  # the curl line works as printed
        tokens = walk_the_readme(dev.base, client_id, secret)

    data = tmp_path / ".m2m"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(path.name for path in data.iterdir())
    assert {"credentials.json", "m2m.db"} <= set(files)
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name

    with running_dev(tmp_path, env) as again:
        output = again.text()
        assert printed(output, "clientId") == client_id
        assert secret not in output
        with httpx.Client(base_url=again.base) as http:
            vendor = vendor_headers(http, client_id, secret)
            # The same database and the same signing key: what was made before still holds.
            assert ok(http.get(f"{TENANTS}/acme", headers=vendor))["name"] == "Acme Inc."
            assert ok(http.post(VALIDATE, headers={"X-API-KEY": tokens["tenant_access"]}))
            assert http.post(VALIDATE, headers={"X-API-KEY": tokens["deleted"]}).status_code == 401
            # The periodic jobs run in the process, first at its start: expiry among them.
            deadline = time.monotonic() + 30
            while True:
                listed = ok(http.get("/ops/jobs", headers=vendor))["jobs"]
                expiry = next(job for job in listed if job["job"] == "expire_tokens")
                if expiry["lastRun"] is not None and expiry["lastRun"]["outcome"] == "success":
                    break
                assert time.monotonic() < deadline, listed
                time.sleep(0.05)  # waiting on another process's first run, not on time
            assert expiry["overdue"] is False

    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert trap.connections == 0, "m2m dev contacted PostgreSQL or Redis"


def vendor_headers(http: httpx.Client, client_id: str, secret: str) -> dict[str, str]:
    answer = ok(http.post("/auth/vendor", json={"clientId": client_id, "secret": secret}))
    assert answer["expiresIn"] > 0
    return {"x-access-token": answer["token"]}


def walk_the_readme(base: str, client_id: str, secret: str) -> dict[str, str]:
    """The README's curl walk-through, then exchange, refresh, validation and deletion."""
    with httpx.Client(base_url=base) as http:
        vendor = vendor_headers(http, client_id, secret)
        acme = {**vendor, "frontegg-tenant-id": "acme"}

        ok(http.post(TENANTS, headers=vendor, json={"tenantId": "acme", "name": "Acme Inc."}), 201)
        permission = next(
            p["id"]
            for p in ok(http.get(PERMISSIONS, headers=vendor))
            if p["key"] == "fe.secure.read.tenantApiTokens"
        )
        role = ok(
            http.post(
                ROLES, headers=vendor, json=[{"key": "reader", "name": "Reader", "level": 1}]
            ),
            201,
        )[0]["id"]
        ok(
            http.put(
                f"{ROLES}/{role}/permissions", headers=vendor, json={"permissionIds": [permission]}
            ),
            200,
        )
        ada = ok(
            http.post(
                USERS,
                headers=acme,
                json={"email": "ada@acme.test", "name": "Ada", "roleIds": [role], "metadata": "{}"},
            ),
            201,
        )["id"]
        as_ada = {**acme, "frontegg-user-id": ada}

        user_credential = ok(
            http.post(
                USER_API,
                headers=as_ada,
                json={"description": "Ada CI job", "expiresInMinutes": 43200},
            ),
            201,
        )
        tenant_credential = ok(
            http.post(
                TENANT_API_V2,
                headers=acme,
                json={
                    "description": "Acme billing sync",
                    "roleIds": [role],
                    "metadata": {"team": "billing"},
                },
            ),
            201,
        )

        # Exchange, validate, refresh (single use), validate the new JWT.
        pair = ok(
            http.post(
                EXCHANGE,
                json={
                    "clientId": tenant_credential["clientId"],
                    "secret": tenant_credential["secret"],
                },
            )
        )
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        claims = ok(http.post(VALIDATE, headers=bearer))
        assert claims["type"] == "tenantApiToken"
        assert claims["tenantId"] == "acme"
        assert claims["roles"] == ["reader"]
        assert claims["permissions"] == ["fe.secure.read.tenantApiTokens"]
        rotated = ok(http.post(REFRESH, json={"refreshToken": pair["refresh_token"]}))
        assert rotated["refresh_token"] != pair["refresh_token"]
        spent = http.post(REFRESH, json={"refreshToken": pair["refresh_token"]})
        assert spent.status_code == 401, spent.text
        user_pair = ok(
            http.post(
                EXCHANGE,
                json={"clientId": user_credential["clientId"], "secret": user_credential["secret"]},
            )
        )
        user_claims = ok(
            http.post(VALIDATE, headers={"Authorization": f"Bearer {user_pair['access_token']}"})
        )
        assert (user_claims["type"], user_claims["userId"]) == ("userApiToken", ada)

        # Access tokens, under the AccessToken strategy.
        ok(
            http.post(CONFIG, headers=vendor, json={"machineToMachineAuthStrategy": "AccessToken"}),
            201,
        )
        user_access = ok(
            http.post(USER_ACCESS, headers=as_ada, json={"description": "Ada laptop"}), 201
        )
        tenant_access = ok(
            http.post(
                TENANT_ACCESS,
                headers=acme,
                json={
                    "description": "Acme reporting",
                    "expiresInMinutes": 1440,
                    "roleIds": [role],
                },
            ),
            201,
        )
        assert (
            ok(http.post(VALIDATE, headers={"X-API-KEY": user_access["secret"]}))["sub"]
            == (user_access["id"])
        )
        assert (
            ok(http.post(VALIDATE, headers={"X-API-KEY": tenant_access["secret"]}))["sub"]
            == (tenant_access["id"])
        )

        # Listings carry no secret.
        listing = http.get(TENANT_API, headers=acme)
        assert ok(listing)
        assert tenant_credential["secret"] not in listing.text
        listing = http.get(TENANT_ACCESS, headers=acme)
        assert ok(listing)
        assert tenant_access["secret"] not in listing.text

        # Deletion: invalid at once.
        ok(http.delete(f"{USER_ACCESS}/{user_access['id']}", headers=as_ada))
        gone = http.post(VALIDATE, headers={"X-API-KEY": user_access["secret"]})
        assert gone.status_code == 401, gone.text
        assert gone.json()["errors"]
        ok(http.delete(f"{TENANT_API}/{tenant_credential['clientId']}", headers=acme))
        assert http.post(VALIDATE, headers=bearer).status_code == 401
        refused = http.post(
            EXCHANGE,
            json={"clientId": tenant_credential["clientId"], "secret": tenant_credential["secret"]},
        )
        assert refused.status_code == 401, refused.text

    return {"tenant_access": tenant_access["secret"], "deleted": user_access["secret"]}


# --- its port and its issuer -----------------------------------------------------------------


@pytest.mark.processes
def test_m2m_dev_on_a_taken_port_stops_before_it_makes_a_directory_or_prints_a_secret(
    tmp_path: Path, trap: Trap
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_m2m(["dev", "--port", str(port)], dev_environment(trap), cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"m2m: port {port} on 127.0.0.1 is in use: stop what listens there, or choose --port"
    ]
    assert result.stdout == ""  # no banner, no secret
    assert list(tmp_path.iterdir()) == []


@pytest.mark.processes
def test_m2m_dev_with_a_bad_setting_makes_nothing(tmp_path: Path, trap: Trap) -> None:
    env = {**dev_environment(trap), "M2M_ISSUER": "tokens.example.test"}
    result = run_m2m(["dev", "--port", str(free_port())], env, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "m2m: configuration error: M2M_ISSUER: must be a URL with scheme http, https,"
        " got 'tokens.example.test'"
    ]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.processes
def test_m2m_dev_keeps_the_issuer_of_its_first_port_and_names_the_port_it_serves_now(
    tmp_path: Path, trap: Trap
) -> None:
    first_port, second_port = free_port(), free_port()
    first_issuer = f"http://localhost:{first_port}"
    env = dev_environment(trap)
    with running_dev(tmp_path, env, port=first_port) as dev:
        client_id = printed(dev.text(), "clientId")
        secret = printed(dev.text(), "secret")
        with httpx.Client(base_url=dev.base) as http:
            made_before = make_tenant_access_token(http, vendor_headers(http, client_id, secret))
            metadata = ok(http.get("/.well-known/oauth-authorization-server"))
        assert jwt.decode(made_before, options={"verify_signature": False})["iss"] == first_issuer
        assert metadata["issuer"] == first_issuer
        assert metadata["token_endpoint"] == f"{dev.base}/oauth/token"

    with running_dev(tmp_path, env, port=second_port) as again:
        assert again.base == f"http://127.0.0.1:{second_port}"
        with httpx.Client(base_url=again.base) as http:
            vendor = vendor_headers(http, client_id, secret)
            # The token made on the first port still validates; new ones carry the same issuer.
            assert ok(http.post(VALIDATE, headers={"X-API-KEY": made_before}))
            made_after = make_tenant_access_token(http, vendor)
            assert jwt.decode(made_after, options={"verify_signature": False})["iss"] == (
                first_issuer
            )
            metadata = ok(http.get("/.well-known/oauth-authorization-server"))
            assert metadata["issuer"] == first_issuer
            assert metadata["token_endpoint"] == f"{again.base}/oauth/token"
            assert metadata["introspection_endpoint"] == f"{again.base}/oauth/introspect"
            assert metadata["revocation_endpoint"] == f"{again.base}/oauth/revoke"
            assert metadata["jwks_uri"] == f"{again.base}/.well-known/jwks.json"
            # The endpoints named answer: an OAuth client reads them and gets a token there.
            permission = next(
                p["id"]
                for p in ok(http.get(PERMISSIONS, headers=vendor))
                if p["key"] == "fe.secure.read.tenantApiTokens"
            )
            strategy = {"machineToMachineAuthStrategy": "ClientCredentials"}
            ok(http.post(CONFIG, headers=vendor, json=strategy), 201)
            credential = ok(
                http.post(
                    TENANT_API_V2,
                    headers={**vendor, "frontegg-tenant-id": "acme"},
                    json={"description": "oauth client", "permissionIds": [permission]},
                ),
                201,
            )
            issued = ok(
                httpx.post(
                    metadata["token_endpoint"],
                    data={"grant_type": "client_credentials"},
                    auth=(credential["clientId"], credential["secret"]),
                )
            )
            claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
            assert claims["iss"] == first_issuer
    assert trap.connections == 0


def make_tenant_access_token(http: httpx.Client, vendor: dict[str, str]) -> str:
    """A tenant access token of tenant acme (made, with the AccessToken strategy, if need be)."""
    if http.get(f"{TENANTS}/acme", headers=vendor).status_code == 404:
        ok(http.post(TENANTS, headers=vendor, json={"tenantId": "acme", "name": "Acme"}), 201)
    ok(
        http.post(CONFIG, headers=vendor, json={"machineToMachineAuthStrategy": "AccessToken"}),
        201,
    )
    created = ok(
        http.post(
            TENANT_ACCESS,
            headers={**vendor, "frontegg-tenant-id": "acme"},
            json={"description": "made on this port"},
        ),
        201,
    )
    return str(created["secret"])


def test_a_new_environment_keeps_m2m_issuer_when_set_else_the_address_of_its_first_port(
    tmp_path: Path,
) -> None:
    assert first_start_settings({}, port=9123).issuer == "http://localhost:9123"
    given = {"M2M_ISSUER": "https://tokens.example.test"}
    assert first_start_settings(given, port=9123).issuer == "https://tokens.example.test"

    made = open_data_directory(tmp_path, issuer=first_start_settings(given, port=9123).issuer)
    # Kept in the data directory: later starts, on any port, without M2M_ISSUER, sign with it.
    settings = open_data_directory(tmp_path).settings({}, port=9555)
    assert made.created
    assert settings.issuer == "https://tokens.example.test"
    assert settings.served_url == "http://127.0.0.1:9555"
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600


def test_an_environment_made_before_its_issuer_was_kept_keeps_the_default_one(
    tmp_path: Path,
) -> None:
    environment = open_data_directory(tmp_path, issuer="http://localhost:9123")
    stored = json.loads((tmp_path / "credentials.json").read_text())
    del stored["issuer"]
    (tmp_path / "credentials.json").write_text(json.dumps(stored))

    assert open_data_directory(tmp_path).settings({}, port=9123).issuer == "http://localhost:8000"
    assert open_data_directory(tmp_path).credentials.master_key == (
        environment.credentials.master_key
    )


# --- the data directory -----------------------------------------------------------------------


def test_the_data_directory_is_made_private_and_reused(tmp_path: Path) -> None:
    first = open_data_directory(tmp_path / "data")
    again = open_data_directory(tmp_path / "data")

    assert first.created
    assert not again.created
    assert again.credentials == first.credentials
    assert len(first.credentials.vendor_secret) >= 32
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for path in (tmp_path / "data").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_second_dev_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    environment = open_data_directory(tmp_path)
    held = environment.lock()
    try:
        with pytest.raises(DataDirectoryError, match="another m2m dev is running"):
            open_data_directory(tmp_path).lock()
    finally:
        os.close(held)
    os.close(open_data_directory(tmp_path).lock())  # free again once the first one is gone


def test_a_damaged_credentials_file_stops_dev_with_one_line(tmp_path: Path) -> None:
    open_data_directory(tmp_path)
    (tmp_path / "credentials.json").write_text("{not json")

    with pytest.raises(DataDirectoryError, match="damaged"):
        open_data_directory(tmp_path)


def test_a_database_without_its_credentials_is_refused_not_given_new_keys(
    tmp_path: Path,
) -> None:
    open_data_directory(tmp_path)
    (tmp_path / "m2m.db").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "credentials.json").unlink()

    with pytest.raises(DataDirectoryError, match=r"without credentials\.json"):
        open_data_directory(tmp_path)
    assert not (tmp_path / "credentials.json").exists()


def test_dev_settings_ignore_stores_and_master_key_but_take_issuer_and_credentials(
    tmp_path: Path,
) -> None:
    environment = open_data_directory(tmp_path)
    settings = environment.settings(
        {
            "M2M_DATABASE_URL": "postgresql+asyncpg://elsewhere/prod",
            "M2M_REDIS_URL": "redis://elsewhere:6379/0",
            "M2M_MASTER_KEY": "not even base64!",
            "M2M_ISSUER": "https://tokens.example.test",
            "M2M_VENDOR_CLIENT_ID": "my-vendor",
        },
        port=8000,
    )

    assert settings.embedded
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'm2m.db'}"
    assert settings.issuer == "https://tokens.example.test"
    assert settings.vendor_client_id == "my-vendor"
    assert settings.vendor_secret == environment.credentials.vendor_secret
    # Without M2M_ISSUER, the issuer the environment kept, whatever the port now.
    assert environment.settings({}, port=9000).issuer == "http://localhost:8000"


def test_dev_mode_needs_its_data_directory() -> None:
    with pytest.raises(ValueError, match="data directory"):
        load_settings({}, mode="dev")
    defaults = DevDefaults(
        database_url="sqlite+aiosqlite:///m2m.db",
        vendor_client_id="v",
        vendor_secret="s" * 32,
        master_key="q" * 43,
    )
    assert load_settings({}, mode="dev", dev=defaults).embedded
    assert not load_settings({}, mode="migrate").embedded


# --- SQLite under concurrent writers ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")
async def test_concurrent_writes_on_sqlite_wait_their_turn_instead_of_failing(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    """Read-then-write transactions from many requests at once: none is "database is locked"."""
    await factory.tenant("acme")
    role = await factory.role("reader", permission_keys=["fe.secure.read.tenantApiTokens"])
    acme = {**vendor, "frontegg-tenant-id": "acme"}

    async def create_and_delete(index: int) -> list[int]:
        created = await client.post(
            TENANT_API_V2,
            headers=acme,
            json={"description": f"job {index}", "roleIds": [role.id]},
        )
        tenant = await client.post(TENANTS, headers=vendor, json={"name": f"T{index}"})
        deleted = await client.delete(
            f"{TENANT_API}/{created.json().get('clientId')}", headers=acme
        )
        return [created.status_code, tenant.status_code, deleted.status_code]

    statuses = await asyncio.gather(*(create_and_delete(i) for i in range(25)))

    assert statuses == [[201, 201, 200]] * 25


def test_two_first_starts_at_once_end_with_one_set_of_credentials(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        opened = list(pool.map(lambda _: open_data_directory(tmp_path / "data"), range(8)))

    stored = open_data_directory(tmp_path / "data").credentials
    assert {environment.credentials for environment in opened} == {stored}
    assert sum(environment.created for environment in opened) == 1
