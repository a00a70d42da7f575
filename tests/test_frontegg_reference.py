"""Every operation of the Frontegg reference subset this service speaks is routed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from litestar import Litestar

# CI clones the repository with the shared documents beside it.
REFERENCE = (
    Path(__file__).parents[2] / "shared" / "reference" / "frontegg-identity-subset.openapi.yml"
)
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def template(path: str) -> str:
    """A path with every parameter unnamed: `/users/v1/{userId}` and `{user_id:str}` agree."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


def reference_operations() -> list[tuple[str, str]]:
    if not REFERENCE.is_file():
        pytest.skip(f"the Frontegg reference is not beside the repository: {REFERENCE}")
    document = yaml.safe_load(REFERENCE.read_text())
    # The document gives no `servers`: it says its routes are relative to {base}/identity.
    assert "relative to {base}/identity" in document["info"]["description"]
    return sorted(
        (method.upper(), template("/identity" + path))
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    )


def routed(app: Litestar) -> set[tuple[str, str]]:
    return {
        (method, template(route.path))
        for route in app.routes
        for method in getattr(route, "methods", ())
    }


def test_every_operation_of_the_frontegg_reference_is_routed(app: Litestar) -> None:
    operations = reference_operations()

    missing = [
        f"{method} {path}" for method, path in operations if (method, path) not in routed(app)
    ]

    assert operations, "the reference lists no operation"
    assert missing == []
