"""What the `m2m` command says about itself: its version, and where `m2m serve` listens (the API,
its reference, the console)."""

from __future__ import annotations

import dataclasses
import os
from importlib.metadata import version

import pytest

from api.cli import serve_addresses
from domain.settings import Settings
from tests.processes import run_m2m


@pytest.mark.processes
def test_version_prints_the_installed_version() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}

    done = run_m2m(["--version"], clean)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"m2m {version('m2m-tokens')}\n"


def test_serve_names_the_api_its_reference_and_the_console(settings: Settings) -> None:
    lines = serve_addresses(
        dataclasses.replace(settings, console_enabled=True), host="0.0.0.0", port=8080
    )

    assert lines == [
        "m2m serve: the API at http://0.0.0.0:8080",
        "m2m serve: the API reference at http://0.0.0.0:8080/schema",
        "m2m serve: the vendor's console at http://0.0.0.0:8080/console",
    ]


def test_serve_names_no_console_when_it_is_disabled(settings: Settings) -> None:
    lines = serve_addresses(
        dataclasses.replace(settings, console_enabled=False), host="::1", port=8000
    )

    assert lines == [
        "m2m serve: the API at http://[::1]:8000",
        "m2m serve: the API reference at http://[::1]:8000/schema",
    ]
