"""Dev mode's local session issuer: `m2m dev` trusts it (its key kept private in the data
directory) unless M2M_USER_JWT_* names another; `m2m portal-link` prints a /portal link signed
in as a user it makes when missing, on a dev data directory only; `m2m serve` never trusts it."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from playwright.async_api import expect

from api.cli import main
from api.dev import open_data_directory
from api.dev_sessions import (
    LOCAL_SESSION_ISSUER,
    SESSION_ISSUER_FILE,
    portal_link,
    session_issuer_key,
    trusting_local_sessions,
)
from domain.db import create_engine, create_session_factory
from domain.errors import Conflict
from domain.models import Permission, Role, User, role_permissions, user_roles
from domain.portal import DEV_PORTAL_ROLE_KEY, TOKEN_PERMISSION_KEYS
from domain.schema import upgrade_to_head
from domain.settings import Settings, load_settings
from tests.browser import chromium, screenshot
from tests.pages import DESKTOP, ScriptWatch, open_service_page, running_dev
from tests.processes import running_server
from tests.suite import VALID

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
# For CliRunner: the M2M_* variables of the test's own environment, unset.
WITHOUT_M2M_SETTINGS: dict[str, str | None] = {
    name: None for name in os.environ if name.startswith("M2M_")
}


def dev_environment() -> dict[str, str]:
    """The caller's environment without any M2M_* (so no M2M_USER_JWT_* trust of its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}


def portal_link_command(directory: Path, env: dict[str, str], *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", "portal-link", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip()


@pytest.mark.processes
async def test_after_pip_install_and_m2m_dev_one_command_opens_the_portal_signed_in(
    tmp_path: Path,
) -> None:
    env = dev_environment()
    with running_dev(tmp_path, env) as base:
        port = base.rsplit(":", 1)[1]
        link = portal_link_command(
            tmp_path, env, "--tenant", "acme", "--user", "ada@acme.test", "--port", port
        )
        again = portal_link_command(
            tmp_path, env, "--tenant", "acme", "--user", "ada@acme.test", "--port", port
        )

        assert link.startswith(f"{base}/portal#token=")
        key_file = tmp_path / ".m2m" / SESSION_ISSUER_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        first, second = (
            jwt.decode(u.split("#token=")[1], options={"verify_signature": False})
            for u in (link, again)
        )
        assert first["sub"] == second["sub"]  # the same user, made once
        assert (first["tenantId"], first["iss"]) == ("acme", LOCAL_SESSION_ISSUER)
        assert second["exp"] - second["iat"] == 3600

        async with chromium() as browser:
            page = await browser.new_page(viewport=DESKTOP)
            watch = ScriptWatch().attach(page)
            await open_service_page(page, link)
            await expect(page.get_by_text("Signed in as ada@acme.test in acme")).to_be_visible()
            await page.get_by_role("button", name="Create token").click()
            dialog = page.get_by_role("dialog", name="Create API token")
            await dialog.get_by_label("Description").fill("Tried in dev")
            await dialog.get_by_role("checkbox", name="API token admin").check()
            await dialog.get_by_role("button", name="Create token").click()
            await page.get_by_role("dialog").get_by_role("button", name="Done").click()
            await expect(page.get_by_role("row").filter(has_text="Tried in dev")).to_contain_text(
                "You"
            )
            await page.get_by_role("tab", name="Personal Tokens").click()
            await expect(page.get_by_text("You have no personal tokens yet.")).to_be_visible()
            await screenshot(page, "portal-dev-link")
            watch.assert_quiet()


def test_m2m_dev_trusts_its_own_issuer_unless_m2m_user_jwt_names_another(
    tmp_path: Path,
) -> None:
    environment = open_data_directory(tmp_path / "data")

    settings = trusting_local_sessions(environment.settings({}, port=8000), environment.path)

    key = session_issuer_key(environment.path)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert settings.user_jwt_public_key == public.decode()
    assert settings.user_jwt_issuer == LOCAL_SESSION_ISSUER
    assert stat.S_IMODE((environment.path / SESSION_ISSUER_FILE).stat().st_mode) == 0o600
    for own in (
        {"M2M_USER_JWT_ISSUER": "https://idp.example.test"},
        {"M2M_USER_JWT_JWKS_URL": "https://idp.example.test/jwks.json"},
    ):
        configured = environment.settings(own, port=8000)
        assert trusting_local_sessions(configured, environment.path) == configured


def test_serve_settings_never_carry_the_local_issuer(tmp_path: Path) -> None:
    open_data_directory(tmp_path / ".m2m")
    settings = load_settings(VALID, mode="serve")

    assert (settings.user_jwt_public_key, settings.user_jwt_issuer) == (None, None)


@pytest.mark.processes
def test_serve_started_beside_a_dev_directory_refuses_its_sessions(
    tmp_path: Path, settings: Settings
) -> None:
    environment = open_data_directory(tmp_path / ".m2m")
    token = jwt.encode(
        {"sub": "u", "tenantId": "acme", "iss": LOCAL_SESSION_ISSUER, "exp": 4102444800},
        session_issuer_key(environment.path),
        algorithm="ES256",
    )

    with running_server(settings, cwd=str(tmp_path)) as base:
        answer = httpx.get(
            f"{base}/portal/v1/session", headers={"Authorization": f"Bearer {token}"}
        )

    assert answer.status_code == 401


@pytest.mark.parametrize("what", ["missing", "empty directory", "file", "no database"])
def test_portal_link_refuses_anything_but_a_dev_data_directory(tmp_path: Path, what: str) -> None:
    target = tmp_path / "target"
    if what == "empty directory":
        target.mkdir()
    elif what == "file":
        target.write_text("not a directory")
    elif what == "no database":
        open_data_directory(target)
        (target / "m2m.db").unlink()
    before = sorted(p.name for p in tmp_path.rglob("*"))

    result = CliRunner().invoke(
        main,
        ["portal-link", "--tenant", "acme", "--user", "ada@acme.test", "--data", str(target)],
        env=WITHOUT_M2M_SETTINGS,
    )

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"m2m: {target} is not an m2m dev data directory")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


async def test_portal_link_makes_the_tenant_and_a_user_holding_the_token_permissions(
    tmp_path: Path,
) -> None:
    environment = open_data_directory(tmp_path / ".m2m")
    settings = environment.settings({}, port=8000)
    await asyncio.to_thread(upgrade_to_head, settings.database_url)  # it runs its own loop

    first = await portal_link(
        environment, settings, tenant_id="acme", email="Ada@Acme.test", port=8123, now=NOW
    )
    again = await portal_link(
        environment, settings, tenant_id="acme", email="ada@acme.test", port=8123, now=NOW
    )
    with pytest.raises(
        Conflict, match=re.escape("ada@acme.test is a user of account acme, not other")
    ):
        await portal_link(
            environment, settings, tenant_id="other", email="ada@acme.test", port=8123, now=NOW
        )

    assert first.startswith("http://127.0.0.1:8123/portal#token=")
    claims = jwt.decode(
        first.split("#token=")[1],
        session_issuer_key(environment.path).public_key(),
        algorithms=["ES256"],
        issuer=LOCAL_SESSION_ISSUER,
        options={"verify_exp": False},
    )
    assert claims["exp"] == int(NOW.timestamp()) + 3600
    engine = create_engine(settings.database_url, pooled=False)
    try:
        async with create_session_factory(engine)() as session:
            users = list(await session.scalars(sa.select(User)))
            granted = set(
                await session.scalars(
                    sa.select(Permission.key)
                    .join(role_permissions, role_permissions.c.permission_id == Permission.id)
                    .join(Role, Role.id == role_permissions.c.role_id)
                    .join(user_roles, user_roles.c.role_id == Role.id)
                    .where(user_roles.c.user_id == claims["sub"], Role.key == DEV_PORTAL_ROLE_KEY)
                )
            )
    finally:
        await engine.dispose()
    assert [(u.id, u.email, u.tenant_id) for u in users] == [
        (claims["sub"], "ada@acme.test", "acme")
    ]
    assert granted == set(TOKEN_PERMISSION_KEYS)
    assert again.split("#token=")[0] == first.split("#token=")[0]


def test_portal_link_refuses_a_user_that_is_not_an_email(tmp_path: Path) -> None:
    target = tmp_path / ".m2m"
    open_data_directory(target)

    result = CliRunner().invoke(
        main,
        ["portal-link", "--tenant", "acme", "--user", "ada", "--data", str(target)],
        env=WITHOUT_M2M_SETTINGS,
    )

    assert result.exit_code == 2
    assert result.stderr == "m2m: --user must be an email address, got 'ada'\n"
