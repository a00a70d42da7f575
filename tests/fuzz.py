"""Fuzz a live `m2m serve` with schemathesis against its own API reference (/schema/openapi.json).

    python -m tests.fuzz [--seed N] [--max-time SECONDS]

The server runs as the suite's processes do (tests/processes.py): PostgreSQL and Redis, a
database and a Redis prefix of its own, dropped at the end. Schemathesis runs its four phases
(examples, coverage, fuzzing, stateful) with every check, twice: as the vendor, then as an end
user whose session (a JWT of the vendor's identity provider) holds every permission in an
account. No answer may be a server error, and every answer must be one the document describes
(status, headers, body). The seed is printed first, so a failure can be replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from redis import Redis

from domain.schema import upgrade_to_head
from domain.settings import Settings, load_settings
from tests.processes import running_server
from tests.suite import (
    IDP_ISSUER,
    ISSUER,
    MASTER_KEY,
    PG_SERVER,
    REDIS_URL,
    VENDOR_CLIENT_ID,
    VENDOR_SECRET,
    WEBHOOK_SECRET,
    _plain_dsn,
)

# Each identity's share of the time budget: schemathesis stops its phases when it is spent.
DEFAULT_MAX_TIME = 40
MAX_EXAMPLES = 25
REPORTS = Path(__file__).resolve().parent.parent / "schemathesis-report"
CONFIG = Path(__file__).resolve().parent / "fuzz.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=random.randrange(2**31))
    parser.add_argument("--max-time", type=int, default=DEFAULT_MAX_TIME, help="per identity")
    arguments = parser.parse_args()
    print(f"fuzz: seed {arguments.seed} (replay with python -m tests.fuzz --seed {arguments.seed})")
    sys.stdout.flush()

    idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    database = f"m2m_fuzz_{uuid.uuid4().hex[:12]}"
    prefix = f"m2m-fuzz-{uuid.uuid4().hex[:12]}:"
    upgrade_to_head(f"{PG_SERVER}/{database}")
    try:
        settings = _settings(f"{PG_SERVER}/{database}", prefix)
        REPORTS.mkdir(exist_ok=True)
        log = REPORTS / "m2m-serve.log"
        with running_server(settings, log=log, **_identity_provider(idp_key)) as base:
            vendor, end_user = asyncio.run(_identities(base, idp_key))
            # The end user first: the vendor's run may delete the end user's account (its
            # stateful phase follows the links to DELETE), which would leave nothing to try.
            failed = [
                name
                for name, headers in (("end user", end_user), ("vendor", vendor))
                if _schemathesis(base, name, headers, arguments.seed, arguments.max_time) != 0
            ]
    finally:
        asyncio.run(_drop(database))
        _forget(prefix)
    if failed:
        print(f"fuzz: failures as {' and '.join(failed)} (seed {arguments.seed})")
        return 1
    print(f"fuzz: no failure (seed {arguments.seed})")
    return 0


def _settings(database_url: str, prefix: str) -> Settings:
    return load_settings(
        {
            "M2M_DATABASE_URL": database_url,
            "M2M_REDIS_URL": REDIS_URL,
            "M2M_REDIS_PREFIX": prefix,
            "M2M_VENDOR_CLIENT_ID": VENDOR_CLIENT_ID,
            "M2M_VENDOR_SECRET": VENDOR_SECRET,
            "M2M_MASTER_KEY": MASTER_KEY,
            "M2M_ISSUER": ISSUER,
        }
    )


def _identity_provider(idp_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """What `m2m serve` needs beyond the settings: the end users' identity provider, and
    the webhook secret."""
    public_pem = (
        idp_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "M2M_USER_JWT_PUBLIC_KEY": public_pem,
        "M2M_USER_JWT_ISSUER": IDP_ISSUER,
        "M2M_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


async def _identities(base: str, idp_key: rsa.RSAPrivateKey) -> tuple[list[str], list[str]]:
    """The vendor's headers (its token, acting in an account), and an end user's session header:
    a member of that account whose role holds every permission."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answer = await client.post(
            "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
        )
        answer.raise_for_status()
        token = answer.json()["token"]
        vendor = {"x-access-token": token}
        tenant_id = f"fuzz-{uuid.uuid4().hex[:8]}"
        in_tenant = {**vendor, "frontegg-tenant-id": tenant_id}
        body = {"tenantId": tenant_id, "name": "Fuzz"}
        (
            await client.post("/tenants/resources/tenants/v1", headers=vendor, json=body)
        ).raise_for_status()
        roles = await client.post(
            "/identity/resources/roles/v1",
            headers=vendor,
            json=[{"key": "fuzz-all", "name": "Everything", "level": 1}],
        )
        roles.raise_for_status()
        role_id = roles.json()[0]["id"]
        permissions = await client.get("/identity/resources/permissions/v1", headers=vendor)
        permissions.raise_for_status()
        every = {"permissionIds": [permission["id"] for permission in permissions.json()]}
        (
            await client.put(
                f"/identity/resources/roles/v1/{role_id}/permissions", headers=vendor, json=every
            )
        ).raise_for_status()
        user = await client.post(
            "/identity/resources/users/v2",
            headers=in_tenant,
            json={"email": "fuzz@example.test", "roleIds": [role_id]},
        )
        user.raise_for_status()
    now = datetime.now(UTC)
    session = jwt.encode(
        {
            "sub": user.json()["id"],
            "tenantId": tenant_id,
            "iss": IDP_ISSUER,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(hours=1)).timestamp()),
        },
        idp_key,
        algorithm="RS256",
    )
    acting = [f"frontegg-tenant-id: {tenant_id}", f"frontegg-user-id: {user.json()['id']}"]
    return [f"x-access-token: {token}", *acting], [f"Authorization: Bearer {session}"]


def _schemathesis(base: str, name: str, headers: list[str], seed: int, max_time: int) -> int:
    print(f"fuzz: as the {name}, for at most {max_time} s")
    sys.stdout.flush()
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        f"--config-file={CONFIG}",
        "run",
        f"{base}/schema/openapi.json",
        "--phases=examples,coverage,fuzzing,stateful",
        "--checks=all",
        f"--seed={seed}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--max-time={max_time}",
        "--workers=2",
        "--request-timeout=10",
        "--suppress-health-check=all",
        "--no-color",
        f"--report-dir={REPORTS / name.replace(' ', '-')}",
        "--report=junit",
        *(option for header in headers for option in ("--header", header)),
    ]
    # A hard stop above schemathesis's own budget, so CI stays bounded whatever happens.
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks"}
    return subprocess.run(
        command, env=environment, timeout=max_time * 2 + 120, check=False
    ).returncode


async def _drop(database: str) -> None:
    connection = await asyncpg.connect(_plain_dsn(f"{PG_SERVER}/postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


def _forget(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
