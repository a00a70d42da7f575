"""The image and compose.yaml: pinned dependencies, the health check, a non-root user, and a
master key made without a database or any variable set (README: Docker Compose)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from domain.settings import Settings
from tests.processes import free_port, run_m2m, running_server

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
LOCK = ROOT / "requirements.lock"
IMAGE_API = "http://127.0.0.1:8000"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile line, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def locked_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", re.sub(r"\\\n", " ", LOCK.read_text())):
        if entry.startswith("#") or "==" not in entry:
            continue
        name, version = entry.split()[0].split("==")
        pins[canonicalize_name(name)] = (version, re.findall(r"--hash=sha256:(\w+)", entry))
    return pins


def image_requirements() -> list[Requirement]:
    """What the image installs: the runtime dependencies and the `ops` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["ops"]
    return [Requirement(name) for name in names]


def test_the_lock_pins_every_dependency_of_the_image_with_hashes() -> None:
    pins = locked_pins()
    for requirement in image_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run 'bash .ci/lock'"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, pyproject.toml wants {requirement}"
        )
        assert hashes, name
    # pip's hash-checking mode refuses a lock with any requirement left unhashed.
    assert all(hashes for _, hashes in pins.values())


def test_the_image_installs_the_lock_and_runs_as_a_user_other_than_root() -> None:
    instructions = dockerfile_instructions()
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert any("--require-hashes -r requirements.lock" in run for run in runs)
    # The project itself adds no dependency the lock has not pinned.
    assert any(re.search(r"pip install .*--no-deps \.$", run) for run in runs)
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    # Every process the image runs starts after the last USER.
    last_user = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "USER")
    assert all(
        i > last_user for i, (instruction, _) in enumerate(instructions) if instruction == "CMD"
    )


def health_check_command(base_url: str) -> list[str]:
    """The image's HEALTHCHECK, run by this interpreter against `base_url`."""
    instructions = dockerfile_instructions()
    (arguments,) = [a for instruction, a in instructions if instruction == "HEALTHCHECK"]
    command: list[str] = json.loads(arguments[arguments.index("CMD") + len("CMD") :])
    assert command[0] == "python"
    assert IMAGE_API in command[-1]
    return [sys.executable, *command[1:-1], command[-1].replace(IMAGE_API, base_url)]


@pytest.mark.processes
def test_the_image_health_check_passes_while_the_api_answers(serve_settings: Settings) -> None:
    with running_server(serve_settings) as base:
        answered = subprocess.run(health_check_command(base), capture_output=True, timeout=30)
    assert answered.returncode == 0, answered.stderr
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    refused = subprocess.run(health_check_command(nothing_listens), capture_output=True, timeout=30)
    assert refused.returncode != 0


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (which stops every command)."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3) or ""
        if shell.get(name):
            return shell[name]
        if operator == ":?":
            raise AssertionError(f"compose stops: {name}: {word}")
        return word

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


@pytest.mark.processes
def test_compose_makes_the_master_key_with_no_variable_set(tmp_path: Path) -> None:
    # `docker compose run --rm --no-deps -T api m2m keys master` (README: Docker Compose):
    # compose interpolates the whole file first, then the api service runs the command.
    compose = yaml.safe_load(COMPOSE.read_text())
    for service in compose["services"].values():
        for value in (service.get("environment") or {}).values():
            interpolate(str(value), {})
    environment = {
        name: interpolate(str(value), {})
        for name, value in compose["services"]["api"]["environment"].items()
    }
    result = run_m2m(["keys", "master"], {"PATH": "/usr/bin:/bin", **environment}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", result.stdout)


def test_compose_checks_health_only_where_a_process_answers_it() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # The api service keeps the image's check of /health/live.
    assert "healthcheck" not in services["api"]
    # The image's check would mark these unhealthy: they serve no /health/live.
    for name in ("migrate", "worker", "beat"):
        assert services[name]["healthcheck"] == {"disable": True}, name
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
