"""Schemathesis hooks for tests/fuzz.py (SCHEMATHESIS_HOOKS=tests.fuzz_hooks): how to make the
string formats the API reference names beyond JSON Schema's own."""

from __future__ import annotations

import json

import schemathesis
from hypothesis import strategies as st

from api.schemas.directory import JSON_OBJECT_FORMAT

# Frontegg's stringified user metadata: a JSON object, as a string.
schemathesis.openapi.format(
    JSON_OBJECT_FORMAT,
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3).map(
        json.dumps
    ),
)
