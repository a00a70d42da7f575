"""What every app and process of a test run shares: the stores, the vendor, the keys."""

from __future__ import annotations

import base64
import os

import pytest

PG_SERVER = os.environ.get("M2M_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("M2M_TEST_REDIS", "redis://127.0.0.1:6379/0")

VENDOR_CLIENT_ID = "test-vendor"
VENDOR_SECRET = "test-vendor-secret-0123456789"
MASTER_KEY = "q" * 43
ISSUER = "http://m2m.test"
IDP_ISSUER = "https://idp.example.test"
# Standard Webhooks form: whsec_ and the base64 of the key.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-key-0123456789abcdef").decode()

# The least that `load_settings` accepts in serve mode.
VALID = {
    "M2M_VENDOR_CLIENT_ID": "vendor",
    "M2M_VENDOR_SECRET": "a-vendor-secret-long-enough",
    "M2M_MASTER_KEY": "q" * 43,
}

both_backends = pytest.mark.both_backends
serve_only = pytest.mark.serve_only


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
