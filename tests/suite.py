"""What every app and process of a test run shares: the stores, the vendor, the keys, argon2id."""

from __future__ import annotations

import base64
import os

import pytest

from domain.secrets import Argon2Parameters

PG_SERVER = os.environ.get("M2M_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("M2M_TEST_REDIS", "redis://127.0.0.1:6379/0")

VENDOR_CLIENT_ID = "test-vendor"
VENDOR_SECRET = "test-vendor-secret-0123456789abcdefghij"
MASTER_KEY = "q" * 43
ISSUER = "http://m2m.test"
IDP_ISSUER = "https://idp.example.test"
# Standard Webhooks form: whsec_ and the base64 of the key.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-key-0123456789abcdef").decode()

# The cheapest argon2id parameters the settings accept: every app and every process the suite
# starts hashes client secrets with them. One test (tests/test_settings.py) pins the production
# defaults; the overload tests (tests/test_ratelimit.py) give their hashers parameters of their own.
ARGON2_PARAMETERS = Argon2Parameters(time_cost=1, memory_kib=8, parallelism=1)
ARGON2_ENVIRONMENT = {
    "M2M_ARGON2_MEMORY_KIB": str(ARGON2_PARAMETERS.memory_kib),
    "M2M_ARGON2_TIME_COST": str(ARGON2_PARAMETERS.time_cost),
    "M2M_ARGON2_PARALLELISM": str(ARGON2_PARAMETERS.parallelism),
}

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
