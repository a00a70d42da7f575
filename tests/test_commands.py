"""The `m2m` commands other than serve and dev: what each needs, and what it says it did."""

from __future__ import annotations

import base64
import dataclasses
import os

import asyncpg
import httpx
import jwt
import pytest

from domain.keys import MasterKey, MasterKeyMismatch
from domain.settings import Settings
from tests.processes import free_port, run_m2m, running_server
from tests.suite import MASTER_KEY, _plain_dsn

pytestmark = pytest.mark.processes

# Were anything to reach for these, it would find nothing listening (and never the shared Redis).
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/m2m"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
OTHER_MASTER_KEY = "r" * 43
NEW_MASTER_KEY = "n" * 43


def clean_environment(**variables: str) -> dict[str, str]:
    """The caller's environment without any M2M_* variable, and then `variables`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("M2M_")} | variables


async def active_kids(database_url: str) -> list[str]:
    connection = await asyncpg.connect(_plain_dsn(database_url))
    try:
        rows = await connection.fetch(
            "SELECT kid FROM signing_keys WHERE activated_at IS NOT NULL AND retired_at IS NULL"
        )
    finally:
        await connection.close()
    return [row["kid"] for row in rows]


# --- worker and beat --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "beat"])
@pytest.mark.parametrize(
    ("given", "missing"),
    [
        # The broker named, but not the database.
        ({"M2M_REDIS_URL": UNREACHABLE_REDIS}, "M2M_DATABASE_URL"),
        # The database and a broker named, but not the Redis holding the validity cache.
        (
            {"M2M_DATABASE_URL": UNREACHABLE_DATABASE, "M2M_BROKER_URL": UNREACHABLE_REDIS},
            "M2M_REDIS_URL",
        ),
    ],
)
def test_worker_and_beat_without_an_explicit_store_stop_with_one_line(
    command: str, given: dict[str, str], missing: str
) -> None:
    result = run_m2m([command], clean_environment(**given), timeout=30)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"m2m: configuration error: {missing}: is required"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_refuse_what_serve_refuses_with_the_same_line(command: str) -> None:
    env = clean_environment(
        M2M_DATABASE_URL=UNREACHABLE_DATABASE,
        M2M_REDIS_URL=UNREACHABLE_REDIS,
        M2M_ARGON2_MEMORY_KIB="8",
    )
    result = run_m2m([command], env, timeout=30)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "m2m: configuration error: M2M_ARGON2_MEMORY_KIB: must be at least 19456"
        " (the OWASP minimum), got 8"
    ]


# --- migrate ----------------------------------------------------------------------------------


def test_migrate_says_it_created_the_database_only_when_it_did(scratch_url: str) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url)
    name = scratch_url.rsplit("/", 1)[1]

    first = run_m2m(["migrate"], env)
    again = run_m2m(["migrate"], env)

    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert first.stdout.splitlines() == [
        f"m2m: created the database {name}",
        "m2m: database is at the newest migration",
    ]
    assert again.stdout.splitlines() == ["m2m: database is at the newest migration"]


# --- keys rotate ------------------------------------------------------------------------------


async def test_keys_rotate_needs_only_the_database_and_the_master_key(scratch_url: str) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0

    result = run_m2m(["keys", "rotate"], env)

    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("m2m: key ")
    kid = line.split()[2]
    assert await active_kids(scratch_url) == [kid]


async def test_keys_rotate_with_another_master_key_changes_nothing(scratch_url: str) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    [kid] = await active_kids(scratch_url)

    result = run_m2m(["keys", "rotate"], {**env, "M2M_MASTER_KEY": OTHER_MASTER_KEY})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "m2m: M2M_MASTER_KEY cannot decrypt the stored signing keys; no key was rotated"
    ]
    # The API processes, which hold the right key, still find a key they can read.
    assert await active_kids(scratch_url) == [kid]


def test_keys_rotate_without_a_master_key_or_a_database_stops_with_one_line() -> None:
    without_key = run_m2m(["keys", "rotate"], clean_environment())
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/m2m"
    without_database = run_m2m(
        ["keys", "rotate"],
        clean_environment(M2M_DATABASE_URL=unreachable, M2M_MASTER_KEY=MASTER_KEY),
    )

    assert without_key.returncode == 2
    assert without_key.stderr.strip().splitlines() == [
        "m2m: configuration error: M2M_MASTER_KEY: is required"
    ]
    assert without_database.returncode == 2
    [line] = without_database.stderr.strip().splitlines()
    assert line.startswith("m2m: cannot reach the database named by M2M_DATABASE_URL: ")


# --- keys reencrypt ---------------------------------------------------------------------------


async def sealed_keys(database_url: str) -> dict[str, bytes]:
    """Every stored signing key's kid and its encrypted private half."""
    connection = await asyncpg.connect(_plain_dsn(database_url))
    try:
        rows = await connection.fetch("SELECT kid, private_key_encrypted FROM signing_keys")
    finally:
        await connection.close()
    return {row["kid"]: bytes(row["private_key_encrypted"]) for row in rows}


def readable_by(key: str, sealed: dict[str, bytes]) -> list[str]:
    """The kids among `sealed` that the master key `key` decrypts."""
    master = MasterKey(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
    readable = []
    for kid, blob in sealed.items():
        try:
            master.decrypt(blob, kid.encode())
        except MasterKeyMismatch:
            continue
        readable.append(kid)
    return readable


async def test_keys_reencrypt_moves_every_key_to_the_new_master_key(
    scratch_url: str, serve_settings: Settings
) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0
    # Two keys: a retired one and the active one; both must move.
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    [active] = await active_kids(scratch_url)

    result = run_m2m(["keys", "reencrypt"], {**env, "M2M_NEW_MASTER_KEY": NEW_MASTER_KEY})

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "m2m: 2 signing keys re-encrypted with M2M_NEW_MASTER_KEY; restart every API process "
        "with it as M2M_MASTER_KEY"
    ]
    sealed = await sealed_keys(scratch_url)
    assert sorted(readable_by(NEW_MASTER_KEY, sealed)) == sorted(sealed)
    assert readable_by(MASTER_KEY, sealed) == []
    # The old key no longer reads the keys: a rotation with it is refused.
    refused = run_m2m(["keys", "rotate"], env)
    assert refused.returncode == 2
    assert await active_kids(scratch_url) == [active]

    # An API started with the new key signs with the same key, and verifies what it signed.
    moved = dataclasses.replace(
        serve_settings,
        database_url=scratch_url,
        master_key=base64.urlsafe_b64decode(NEW_MASTER_KEY + "="),
        redis_prefix=f"{serve_settings.redis_prefix}reencrypt:",
    )
    with running_server(moved) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            vendor = await client.post(
                "/auth/vendor",
                json={"clientId": moved.vendor_client_id, "secret": moved.vendor_secret},
            )
            vendor_auth = {"x-access-token": vendor.json()["token"]}
            tenant = {**vendor_auth, "frontegg-tenant-id": "acme"}
            created = await client.post(
                "/tenants/resources/tenants/v1",
                headers=vendor_auth,
                json={"tenantId": "acme", "name": "Acme"},
            )
            assert created.status_code == 201, created.text
            permissions = await client.get(
                "/identity/resources/permissions/v1", headers=vendor_auth
            )
            credential = await client.post(
                "/identity/resources/tenants/api-tokens/v2",
                headers=tenant,
                json={"permissionIds": [permissions.json()[0]["id"]]},
            )
            assert credential.status_code == 201, credential.text
            exchanged = await client.post(
                "/identity/resources/auth/v2/api-token",
                json={k: credential.json()[k] for k in ("clientId", "secret")},
            )
            token = exchanged.json()["access_token"]
            validated = await client.post(
                "/identity/resources/auth/v1/validate",
                headers={"Authorization": f"Bearer {token}"},
            )
    assert jwt.get_unverified_header(token)["kid"] == active
    assert validated.status_code == 200, validated.text


async def test_keys_reencrypt_names_the_new_key_by_its_variable(scratch_url: str) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0

    result = run_m2m(
        ["keys", "reencrypt", "--new-key-env", "VAULT_M2M_KEY"],
        {**env, "VAULT_M2M_KEY": NEW_MASTER_KEY},
    )

    assert result.returncode == 0, result.stderr
    sealed = await sealed_keys(scratch_url)
    assert readable_by(NEW_MASTER_KEY, sealed) == list(sealed)


async def test_keys_reencrypt_with_a_wrong_current_key_changes_nothing(scratch_url: str) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    before = await sealed_keys(scratch_url)

    result = run_m2m(
        ["keys", "reencrypt"],
        {**env, "M2M_MASTER_KEY": OTHER_MASTER_KEY, "M2M_NEW_MASTER_KEY": NEW_MASTER_KEY},
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "m2m: M2M_MASTER_KEY cannot decrypt the stored signing keys; nothing was re-encrypted"
    ]
    assert await sealed_keys(scratch_url) == before


@pytest.mark.parametrize(
    ("new_key", "line"),
    [
        (None, "m2m: configuration error: M2M_NEW_MASTER_KEY: is required"),
        (
            "shortkey",
            "m2m: configuration error: M2M_NEW_MASTER_KEY: must decode to at least 32 bytes, got 6",
        ),
        (
            MASTER_KEY,
            "m2m: M2M_NEW_MASTER_KEY holds the current M2M_MASTER_KEY; nothing was re-encrypted",
        ),
    ],
)
async def test_keys_reencrypt_refuses_a_missing_bad_or_unchanged_new_key(
    scratch_url: str, new_key: str | None, line: str
) -> None:
    env = clean_environment(M2M_DATABASE_URL=scratch_url, M2M_MASTER_KEY=MASTER_KEY)
    assert run_m2m(["migrate"], env).returncode == 0
    assert run_m2m(["keys", "rotate"], env).returncode == 0
    before = await sealed_keys(scratch_url)
    extra = {} if new_key is None else {"M2M_NEW_MASTER_KEY": new_key}

    result = run_m2m(["keys", "reencrypt"], {**env, **extra})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]
    assert await sealed_keys(scratch_url) == before
