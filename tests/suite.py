"""What every app and process of a test run shares: the stores, the vendor, the keys, argon2id."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest

from domain.secrets import Argon2Parameters
from domain.settings import Settings

PG_SERVER = os.environ.get("M2M_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("M2M_TEST_REDIS", "redis://127.0.0.1:6379/0")

VENDOR_CLIENT_ID = "test-vendor"
VENDOR_SECRET = "test-vendor-secret-0123456789abcdefghij"
MASTER_KEY = "q" * 43
ISSUER = "http://m2m.test"
IDP_ISSUER = "https://idp.example.test"
# Standard Webhooks form: whsec_ and the base64 of the key.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-key-0123456789abcdef").decode()

# The cheapest argon2id parameters argon2 allows: every app the suite builds in its own process
# hashes client secrets with them, set after the settings are read (`with_cheap_argon2`), since
# the settings refuse less than the OWASP minimum. The processes the suite starts (`m2m serve`,
# `m2m dev`, `m2m worker`) run the production defaults. One test (tests/test_settings.py) pins
# those; the overload tests (tests/test_ratelimit.py) give their hashers parameters of their own.
ARGON2_PARAMETERS = Argon2Parameters(time_cost=1, memory_kib=8, parallelism=1)


def with_cheap_argon2(settings: Settings) -> Settings:
    """`settings`, hashing with ARGON2_PARAMETERS."""
    return dataclasses.replace(
        settings,
        argon2_time_cost=ARGON2_PARAMETERS.time_cost,
        argon2_memory_kib=ARGON2_PARAMETERS.memory_kib,
        argon2_parallelism=ARGON2_PARAMETERS.parallelism,
    )


# The least that `load_settings` accepts in serve mode.
VALID = {
    "M2M_VENDOR_CLIENT_ID": "vendor",
    "M2M_VENDOR_SECRET": "a-vendor-secret-long-enough-for-serve",
    "M2M_MASTER_KEY": "q" * 43,
}

both_backends = pytest.mark.both_backends
serve_only = pytest.mark.serve_only


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
