"""The `m2m` commands other than serve and dev: what each needs, and what it says it did."""

from __future__ import annotations

import os

import asyncpg
import pytest

from tests.processes import free_port, run_m2m
from tests.suite import MASTER_KEY, _plain_dsn

pytestmark = pytest.mark.processes

# Were anything to reach for these, it would find nothing listening (and never the shared Redis).
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/m2m"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
OTHER_MASTER_KEY = "r" * 43


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
