"""Settings come from M2M_* variables; a missing or malformed one stops start-up with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain.secrets import Argon2Parameters, SecretHasher
from domain.settings import EXAMPLE_VENDOR_SECRETS, ConfigError, DevDefaults, load_settings
from tests.suite import VALID


async def test_defaults_follow_the_spec() -> None:
    settings = load_settings(VALID)
    assert settings.database_url == "postgresql+asyncpg://localhost/m2m"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.broker_url == settings.redis_url
    assert settings.issuer == "http://localhost:8000"
    assert settings.webhook_secret is None
    assert settings.self_service_enabled is False
    assert (
        settings.argon2_memory_kib,
        settings.argon2_time_cost,
        settings.argon2_parallelism,
    ) == (19456, 2, 1)
    # The one test of the production argon2id parameters (every app the suite starts runs cheap
    # ones): the hasher the app builds from these settings makes hashes that carry them.
    parameters = Argon2Parameters(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    assert parameters == Argon2Parameters()
    hasher = SecretHasher(parameters, workers=1)
    try:
        encoded = await hasher.hash("a-client-secret")
        assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await hasher.verify(encoded, "a-client-secret")
    finally:
        hasher.close()


def test_broker_defaults_to_redis_url_and_can_differ() -> None:
    settings = load_settings({**VALID, "M2M_REDIS_URL": "redis://cache:6379/2"})
    assert settings.broker_url == "redis://cache:6379/2"
    settings = load_settings({**VALID, "M2M_BROKER_URL": "amqp://guest@mq//"})
    assert settings.broker_url == "amqp://guest@mq//"


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"M2M_VENDOR_CLIENT_ID": ""}, "M2M_VENDOR_CLIENT_ID"),
        ({"M2M_VENDOR_SECRET": ""}, "M2M_VENDOR_SECRET"),
        ({"M2M_VENDOR_SECRET": "short"}, "M2M_VENDOR_SECRET"),
        ({"M2M_VENDOR_SECRET": "s" * 31}, "M2M_VENDOR_SECRET"),
        ({"M2M_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, "M2M_TRUSTED_PROXIES"),
        ({"M2M_TRUSTED_PROXIES": "10.0.0.0/33"}, "M2M_TRUSTED_PROXIES"),
        ({"M2M_MASTER_KEY": ""}, "M2M_MASTER_KEY"),
        ({"M2M_MASTER_KEY": "not base64!"}, "M2M_MASTER_KEY"),
        ({"M2M_MASTER_KEY": "c2hvcnQ"}, "M2M_MASTER_KEY"),
        ({"M2M_WEBHOOK_SECRET": "my-webhook-secret"}, "M2M_WEBHOOK_SECRET"),
        ({"M2M_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "M2M_WEBHOOK_SECRET"),
        ({"M2M_WEBHOOK_SECRET": "whsec_"}, "M2M_WEBHOOK_SECRET"),
        ({"M2M_JOB_BATCH_SIZE": "0"}, "M2M_JOB_BATCH_SIZE"),
        ({"M2M_BROKER_VISIBILITY_TIMEOUT": "soon"}, "M2M_BROKER_VISIBILITY_TIMEOUT"),
        ({"M2M_DATABASE_URL": "mysql://x/y"}, "M2M_DATABASE_URL"),
        ({"M2M_REDIS_URL": "http://x"}, "M2M_REDIS_URL"),
        ({"M2M_BROKER_URL": "ftp://x"}, "M2M_BROKER_URL"),
        ({"M2M_ISSUER": "not a url"}, "M2M_ISSUER"),
        ({"M2M_USER_JWT_PUBLIC_KEY": "garbage"}, "M2M_USER_JWT_PUBLIC_KEY"),
        ({"M2M_USER_JWT_JWKS_URL": "file:///etc/passwd"}, "M2M_USER_JWT_JWKS_URL"),
        ({"M2M_ARGON2_MEMORY_KIB": "lots"}, "M2M_ARGON2_MEMORY_KIB"),
        ({"M2M_ARGON2_TIME_COST": "0"}, "M2M_ARGON2_TIME_COST"),
        ({"M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE": "maybe"}, "M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE"),
        (
            {"M2M_EVENT_ENDPOINT_DISABLE_AFTER_SECONDS": "10"},
            "M2M_EVENT_ENDPOINT_DISABLE_AFTER_SECONDS",
        ),
        ({"M2M_EXPIRY_WARNING_DAYS": "30,seven"}, "M2M_EXPIRY_WARNING_DAYS"),
        ({"M2M_EXPIRY_WARNING_DAYS": "0"}, "M2M_EXPIRY_WARNING_DAYS"),
        ({"M2M_EXPIRY_WARNING_DAYS": "400"}, "M2M_EXPIRY_WARNING_DAYS"),
        ({"M2M_REVOCATION_FEED_RETENTION_SECONDS": "5"}, "M2M_REVOCATION_FEED_RETENTION_SECONDS"),
    ],
)
def test_bad_setting_names_the_variable(changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, **changes})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    ("variable", "value", "minimum"),
    [
        ("M2M_ARGON2_MEMORY_KIB", "19455", 19456),
        ("M2M_ARGON2_MEMORY_KIB", "8", 19456),
        ("M2M_ARGON2_TIME_COST", "1", 2),
        ("M2M_ARGON2_PARALLELISM", "0", 1),
    ],
)
def test_argon2_parameters_below_the_owasp_minimum_are_refused(
    variable: str, value: str, minimum: int
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, variable: value})
    assert (
        str(caught.value)
        == f"{variable}: must be at least {minimum} (the OWASP minimum), got {value}"
    )
    for mode in ("migrate", "worker"):
        with pytest.raises(ConfigError):
            load_settings({**VALID, variable: value}, mode=mode)


def test_argon2_parameters_at_or_above_the_owasp_minimum_are_taken() -> None:
    settings = load_settings(
        {
            **VALID,
            "M2M_ARGON2_MEMORY_KIB": "65536",
            "M2M_ARGON2_TIME_COST": "3",
            "M2M_ARGON2_PARALLELISM": "1",
        }
    )
    assert (
        settings.argon2_memory_kib,
        settings.argon2_time_cost,
        settings.argon2_parallelism,
    ) == (65536, 3, 1)


def test_migrate_needs_no_vendor_credentials() -> None:
    settings = load_settings({}, mode="migrate")
    assert settings.vendor_client_id == ""


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.processes
def test_serve_without_a_required_setting_prints_one_line_and_no_traceback() -> None:
    result = _run_cli(["serve"], {"M2M_VENDOR_CLIENT_ID": "vendor"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["m2m: configuration error: M2M_VENDOR_SECRET: is required"]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.processes
def test_serve_with_a_malformed_master_key_names_it() -> None:
    result = _run_cli(["serve"], {**VALID, "M2M_MASTER_KEY": "tooshort"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("m2m: configuration error: M2M_MASTER_KEY:")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.processes
def test_keys_master_prints_a_usable_master_key() -> None:
    result = _run_cli(["keys", "master"], {})
    assert result.returncode == 0
    key = result.stdout.strip()
    assert load_settings({**VALID, "M2M_MASTER_KEY": key}).master_key.__len__() == 32


@pytest.mark.parametrize(
    "origins",
    [
        "https://app.example.com/",  # a path, even "/"
        "https://*.example.com",  # a wildcard: CORS cannot answer one
        "app.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:99999",
        "https://app.example.com 'unsafe-inline'",
        "https://app.example.com; script-src *",
        "null",
    ],
)
def test_embed_origins_must_each_be_a_plain_origin(origins: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, "M2M_EMBED_ORIGINS": f"https://ok.example.com,{origins}"})
    assert caught.value.variable == "M2M_EMBED_ORIGINS"
    assert str(caught.value).startswith("M2M_EMBED_ORIGINS: must be origins like ")


def test_embed_origins_are_read_as_a_browser_writes_them() -> None:
    unset = load_settings(VALID)
    listed = load_settings(
        {
            **VALID,
            "M2M_EMBED_ORIGINS": " https://App.Example.com:443, http://localhost:3000 ,,"
            "https://[::1]:8443,https://app.example.com",
        }
    )
    assert unset.embed_origins == ()
    assert listed.embed_origins == (
        "https://app.example.com",
        "http://localhost:3000",
        "https://[::1]:8443",
    )


def test_metrics_are_private_unless_m2m_metrics_public_says_true() -> None:
    assert load_settings(VALID).metrics_public is False
    assert load_settings({**VALID, "M2M_METRICS_PUBLIC": "true"}).metrics_public is True
    assert load_settings({**VALID, "M2M_METRICS_PUBLIC": "FALSE"}).metrics_public is False
    with pytest.raises(ConfigError) as caught:
        load_settings({**VALID, "M2M_METRICS_PUBLIC": "sometimes"})
    assert str(caught.value) == "M2M_METRICS_PUBLIC: must be true or false, got 'sometimes'"


def test_the_vendor_secret_needs_32_characters() -> None:
    assert load_settings({**VALID, "M2M_VENDOR_SECRET": "s" * 32}).vendor_secret == "s" * 32
    with pytest.raises(ConfigError) as refused:
        load_settings({**VALID, "M2M_VENDOR_SECRET": "s" * 31})
    assert str(refused.value) == "M2M_VENDOR_SECRET: must be at least 32 characters"


def test_the_readme_s_example_vendor_secret_is_refused() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert EXAMPLE_VENDOR_SECRETS
    for example in EXAMPLE_VENDOR_SECRETS:
        assert f"`{example}`" in readme  # the README names what it refuses
        with pytest.raises(ConfigError) as refused:
            load_settings({**VALID, "M2M_VENDOR_SECRET": example})
        assert str(refused.value).startswith("M2M_VENDOR_SECRET: is the README's example")


@pytest.mark.processes
def test_serve_with_the_readme_s_example_vendor_secret_refuses_to_start_in_one_line() -> None:
    for example in EXAMPLE_VENDOR_SECRETS:
        result = _run_cli(["serve"], {**VALID, "M2M_VENDOR_SECRET": example})
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "m2m: configuration error: M2M_VENDOR_SECRET: is the README's example;"
            " choose a secret of your own"
        ]


def test_trusted_proxies_are_none_unless_set() -> None:
    assert load_settings(VALID).trusted_proxies == ()
    listed = load_settings({**VALID, "M2M_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.5 ,2001:db8::/32"})
    assert listed.trusted_proxies == ("10.0.0.0/8", "192.0.2.5/32", "2001:db8::/32")


def test_dev_trusts_no_proxy_whatever_the_setting() -> None:
    defaults = DevDefaults(
        database_url="sqlite+aiosqlite:///m2m.db",
        vendor_client_id="v",
        vendor_secret="s" * 32,
        master_key="q" * 43,
    )
    dev = load_settings({"M2M_TRUSTED_PROXIES": "0.0.0.0/0"}, mode="dev", dev=defaults)
    assert dev.trusted_proxies == ()


@pytest.mark.processes
def test_serve_with_argon2_below_the_owasp_minimum_stops_with_one_line() -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/m2m"
    result = _run_cli(
        ["serve"], {**VALID, "M2M_DATABASE_URL": unreachable, "M2M_ARGON2_TIME_COST": "1"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "m2m: configuration error: M2M_ARGON2_TIME_COST: must be at least 2 (the OWASP minimum),"
        " got 1"
    ]
    assert result.stdout == ""


def test_event_settings_default_and_are_read() -> None:
    defaults = load_settings(VALID)
    assert defaults.event_endpoints_allow_private is False
    assert defaults.event_endpoint_disable_after_seconds == 5 * 86_400
    assert defaults.expiry_warning_days == (30, 7, 1)
    assert defaults.revocation_feed_retention_seconds == 86_400
    chosen = load_settings(
        {
            **VALID,
            "M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE": "true",
            "M2M_EVENT_ENDPOINT_DISABLE_AFTER_SECONDS": "3600",
            "M2M_EXPIRY_WARNING_DAYS": "1, 14,14",
            "M2M_REVOCATION_FEED_RETENTION_SECONDS": "600",
        }
    )
    assert chosen.event_endpoints_allow_private is True
    assert chosen.event_endpoint_disable_after_seconds == 3600
    assert chosen.expiry_warning_days == (14, 1)
    assert chosen.revocation_feed_retention_seconds == 600
