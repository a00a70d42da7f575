"""The one Settings object, read from `M2M_*` environment variables once at start."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_pem_public_key

Mode = Literal["serve", "migrate", "worker", "dev"]

DEFAULT_DATABASE_URL = "postgresql+asyncpg://localhost/m2m"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_PREFIX = "m2m:"
DEFAULT_ISSUER = "http://localhost:8000"
MIN_VENDOR_SECRET_LENGTH = 16
MIN_MASTER_KEY_BYTES = 32
MIN_WEBHOOK_KEY_BYTES = 24

# `m2m dev` keeps its database and master key in its data directory and runs without Redis or a
# broker: these variables never point it anywhere else (a shell set up for `m2m serve` must not
# make a developer's experiments write to that database).
IGNORED_IN_DEV: Final = frozenset(
    {
        "M2M_DATABASE_URL",
        "M2M_REDIS_URL",
        "M2M_BROKER_URL",
        "M2M_REDIS_PREFIX",
        "M2M_MASTER_KEY",
    }
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    redis_prefix: str
    broker_url: str
    vendor_client_id: str
    vendor_secret: str
    master_key: bytes
    webhook_secret: str | None
    issuer: str
    user_jwt_public_key: str | None
    user_jwt_jwks_url: str | None
    user_jwt_issuer: str | None
    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int
    argon2_max_pending: int | None
    exchange_limit_per_client: int
    exchange_limit_per_address: int
    max_body_bytes: int
    job_batch_size: int = 2000
    broker_visibility_timeout: int = 300
    # `m2m dev`: one process, SQLite, no Redis or broker; cache, limits and jobs in memory.
    embedded: bool = False
    # Origins (`https://app.example.com`) allowed to embed the pages and call the API from them.
    embed_origins: tuple[str, ...] = ()

    @property
    def self_service_enabled(self) -> bool:
        return bool(self.user_jwt_public_key or self.user_jwt_jwks_url)


@dataclass(frozen=True)
class DevDefaults:
    """What `m2m dev` takes from its data directory, where the environment says nothing."""

    database_url: str
    vendor_client_id: str
    vendor_secret: str
    master_key: str

    def environment(self) -> dict[str, str]:
        return {
            "M2M_DATABASE_URL": self.database_url,
            "M2M_VENDOR_CLIENT_ID": self.vendor_client_id,
            "M2M_VENDOR_SECRET": self.vendor_secret,
            "M2M_MASTER_KEY": self.master_key,
        }


def load_settings(
    env: Mapping[str, str], mode: Mode = "serve", *, dev: DevDefaults | None = None
) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one.

    In "dev" mode `dev` supplies the database, master key and vendor credentials; the
    environment may override the credentials, never IGNORED_IN_DEV.
    """
    if mode == "dev":
        if dev is None:
            raise ValueError("dev mode reads its defaults from the data directory")
        env = {
            **dev.environment(),
            **{name: value for name, value in env.items() if name not in IGNORED_IN_DEV},
        }
    reader = _Reader(env)
    needs_credentials = mode in ("serve", "dev")
    redis_url = reader.url("M2M_REDIS_URL", DEFAULT_REDIS_URL, schemes={"redis", "rediss", "unix"})
    settings = Settings(
        database_url=reader.database_url(),
        redis_url=redis_url,
        redis_prefix=reader.optional("M2M_REDIS_PREFIX") or DEFAULT_REDIS_PREFIX,
        broker_url=reader.url(
            "M2M_BROKER_URL", redis_url, schemes={"redis", "rediss", "amqp", "amqps", "unix"}
        ),
        vendor_client_id=reader.text("M2M_VENDOR_CLIENT_ID", required=needs_credentials),
        vendor_secret=reader.vendor_secret(required=needs_credentials),
        master_key=reader.master_key(required=needs_credentials),
        webhook_secret=reader.webhook_secret(),
        issuer=reader.url("M2M_ISSUER", DEFAULT_ISSUER, schemes={"http", "https"}),
        user_jwt_public_key=reader.public_key("M2M_USER_JWT_PUBLIC_KEY"),
        user_jwt_jwks_url=reader.optional_url("M2M_USER_JWT_JWKS_URL"),
        user_jwt_issuer=reader.optional("M2M_USER_JWT_ISSUER"),
        argon2_time_cost=reader.integer("M2M_ARGON2_TIME_COST", 2, low=1, high=20),
        argon2_memory_kib=reader.integer("M2M_ARGON2_MEMORY_KIB", 19456, low=8, high=4_194_304),
        argon2_parallelism=reader.integer("M2M_ARGON2_PARALLELISM", 1, low=1, high=64),
        argon2_max_pending=reader.optional_integer("M2M_ARGON2_MAX_PENDING", low=1, high=1_000_000),
        exchange_limit_per_client=reader.integer(
            "M2M_EXCHANGE_LIMIT_PER_CLIENT", 60, low=1, high=1_000_000_000
        ),
        exchange_limit_per_address=reader.integer(
            "M2M_EXCHANGE_LIMIT_PER_ADDRESS", 600, low=1, high=1_000_000_000
        ),
        max_body_bytes=reader.integer("M2M_MAX_BODY_BYTES", 65536, low=1024, high=16_777_216),
        job_batch_size=reader.integer("M2M_JOB_BATCH_SIZE", 2000, low=1, high=100_000),
        broker_visibility_timeout=reader.integer(
            "M2M_BROKER_VISIBILITY_TIMEOUT", 300, low=1, high=86_400
        ),
        embedded=mode == "dev",
        embed_origins=reader.origins("M2M_EMBED_ORIGINS"),
    )
    if settings.user_jwt_public_key and settings.user_jwt_jwks_url:
        raise ConfigError(
            "M2M_USER_JWT_JWKS_URL", "set either it or M2M_USER_JWT_PUBLIC_KEY, not both"
        )
    return settings


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, *, required: bool) -> str:
        value = self.optional(name)
        if value is None:
            if required:
                raise ConfigError(name, "is required")
            return ""
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    def optional_integer(self, name: str, *, low: int, high: int) -> int | None:
        if self.optional(name) is None:
            return None
        return self.integer(name, low, low=low, high=high)

    def url(self, name: str, default: str, *, schemes: set[str]) -> str:
        value = self.optional(name) or default
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            expected = ", ".join(sorted(schemes))
            raise ConfigError(name, f"must be a URL with scheme {expected}, got {value!r}")
        return value

    def optional_url(self, name: str) -> str | None:
        if self.optional(name) is None:
            return None
        return self.url(name, "", schemes={"http", "https"})

    def origins(self, name: str) -> tuple[str, ...]:
        """Comma-separated web origins, each scheme://host[:port] and nothing more (a browser's
        Origin header has no path, so an origin with one would never match)."""
        value = self.optional(name)
        if value is None:
            return ()
        origins: list[str] = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            origin = _origin(item)
            if origin is None:
                raise ConfigError(
                    name, f"must list origins like https://app.example.com (no path), got {item!r}"
                )
            if origin not in origins:
                origins.append(origin)
        return tuple(origins)

    def database_url(self) -> str:
        name = "M2M_DATABASE_URL"
        value = self.optional(name) or DEFAULT_DATABASE_URL
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql+asyncpg", "sqlite+aiosqlite"}:
            raise ConfigError(
                name, f"must start with postgresql+asyncpg:// or sqlite+aiosqlite://, got {value!r}"
            )
        return value

    def webhook_secret(self) -> str | None:
        """Standard Webhooks form: `whsec_` (optional) and the base64 of at least 24 bytes."""
        name = "M2M_WEBHOOK_SECRET"
        value = self.optional(name)
        if value is None:
            return None
        encoded = value.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(name, "must be whsec_ and base64 (Standard Webhooks form)") from None
        if len(key) < MIN_WEBHOOK_KEY_BYTES:
            raise ConfigError(
                name, f"must decode to at least {MIN_WEBHOOK_KEY_BYTES} bytes, got {len(key)}"
            )
        return value

    def vendor_secret(self, *, required: bool) -> str:
        name = "M2M_VENDOR_SECRET"
        value = self.text(name, required=required)
        if value and len(value) < MIN_VENDOR_SECRET_LENGTH:
            raise ConfigError(name, f"must be at least {MIN_VENDOR_SECRET_LENGTH} characters")
        return value

    def master_key(self, *, required: bool) -> bytes:
        name = "M2M_MASTER_KEY"
        value = self.text(name, required=required)
        if not value:
            return b""
        try:
            key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise ConfigError(name, "must be base64; `m2m keys master` makes one") from None
        if len(key) < MIN_MASTER_KEY_BYTES:
            raise ConfigError(
                name, f"must decode to at least {MIN_MASTER_KEY_BYTES} bytes, got {len(key)}"
            )
        return key

    def public_key(self, name: str) -> str | None:
        value = self.optional(name)
        if value is None:
            return None
        pem = value.replace("\\n", "\n")
        try:
            load_pem_public_key(pem.encode())
        except ValueError:
            raise ConfigError(name, "must be a PEM public key (BEGIN PUBLIC KEY)") from None
        return pem


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def _origin(text: str) -> str | None:
    """`text` as a browser writes an origin (lower-case scheme and host, the port only when not
    the scheme's default), or None if it is not scheme://host[:port]."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (
        parts.scheme.lower() not in {"http", "https"}
        or host is None
        or port == 0
        or parts.username is not None
        or parts.password is not None
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith(("?", "#"))
    ):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6, as urlsplit leaves it bracketless
    elif not _HOST.match(host):
        return None
    scheme = parts.scheme.lower()
    default_port = {"http": 80, "https": 443}[scheme]
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{scheme}://{host}{suffix}"
