"""The one Settings object, read from `M2M_*` environment variables once at start."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from domain.secrets import DEFAULT_SECRET_PREFIX, SECRET_PREFIX_PATTERN

Mode = Literal["serve", "migrate", "worker", "dev", "keys"]
LeakPolicy = Literal["revoke", "notify"]
LEAK_POLICIES: Final[tuple[LeakPolicy, ...]] = ("revoke", "notify")

DEFAULT_DATABASE_URL = "postgresql+asyncpg://localhost/m2m"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_REDIS_PREFIX = "m2m:"
DEFAULT_ISSUER = "http://localhost:8000"
MIN_VENDOR_SECRET_LENGTH = 32
# The vendor secret earlier versions of the README showed: a copy of it is no secret.
EXAMPLE_VENDOR_SECRETS: Final = frozenset({"change-me-vendor-secret"})
MIN_MASTER_KEY_BYTES = 32
MIN_WEBHOOK_KEY_BYTES = 24
DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}
BOOLEANS: Final = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}
# An origin's host and port: letters, digits, dots and dashes, or an IPv6 address in brackets.
_ORIGIN_HOST: Final = re.compile(r"(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
# OWASP's minimum for argon2id (Password Storage Cheat Sheet): 19 MiB of memory, 2 passes, 1 lane.
# Less would make each guess at a stolen hash cheaper.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2
ARGON2_MIN_PARALLELISM = 1

# `m2m worker` and `m2m beat` never fall back to localhost for these: a worker that did would run
# the jobs on, and evict the cache entries of, another environment than its API's.
REQUIRED_BY_WORKERS: Final = ("M2M_DATABASE_URL", "M2M_REDIS_URL")

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
        # It binds 127.0.0.1 only: no proxy stands in front of it whose word could be trusted.
        "M2M_TRUSTED_PROXIES",
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
    argon2_max_wait_ms: int
    exchange_limit_per_client: int
    exchange_limit_per_address: int
    max_body_bytes: int
    job_batch_size: int = 2000
    broker_visibility_timeout: int = 300
    # Proxies whose X-Forwarded-For names the client address the rate limits count by: CIDRs,
    # each as ipaddress.ip_network reads it (kept as text: Litestar validates what DI provides).
    trusted_proxies: tuple[str, ...] = ()
    # PostgreSQL cancels an API statement running, or waiting for a lock, longer than these.
    database_statement_timeout_ms: int = 5000
    database_lock_timeout_ms: int = 2000
    # M2M_DATABASE_URL names PgBouncer (or another pooler) in transaction mode.
    database_transaction_pooling: bool = False
    # `m2m dev`: one process, SQLite, no Redis or broker; cache, limits and jobs in memory.
    embedded: bool = False
    user_jwt_audience: str | None = None
    # /metrics without the vendor token (for a scraper that cannot renew one).
    metrics_public: bool = False
    # Origins (scheme://host[:port], lower case) of the vendor's pages that may embed ours.
    embed_origins: tuple[str, ...] = ()
    # Where this process serves its routes, when known better than the issuer (`m2m dev`, on
    # the port it listens on now); None: the issuer, the address the deployment declares public.
    served_url: str | None = None
    # The vendor's console at /console; off for deployments that manage everything by API.
    console_enabled: bool = True
    # The first part of every new client secret and refresh token (`<prefix>_cs_...`).
    secret_prefix: str = DEFAULT_SECRET_PREFIX
    # What a leak report of a live secret does: revoke it, or only record and announce it.
    leak_policy: LeakPolicy = "revoke"
    # Where GitHub secret scanning's public keys are read (one of the two, or neither: then
    # POST /leaks/github answers that it is not configured).
    github_secret_scanning_keys_url: str | None = None
    github_secret_scanning_keys_file: str | None = None
    # Last use of each token (domain/last_used.py): noted at all, and written this often.
    record_last_used: bool = True
    last_used_write_seconds: int = 5
    # The unused-token policy: delete tokens unused this many days (None: never), warning this
    # many days before.
    delete_unused_after_days: int | None = None
    unused_warning_days: int = 7
    audit_retention_days: int = 365
    # Outbound events: endpoints on loopback, private or link-local addresses are refused
    # unless this is set; an endpoint failing this long is turned off; expiry warnings this
    # many days before (descending).
    event_endpoints_allow_private: bool = False
    event_endpoint_disable_after_seconds: int = 5 * 86_400
    expiry_warning_days: tuple[int, ...] = (30, 7, 1)
    # The revocation feed keeps its entries this long for consumers resuming with Last-Event-ID.
    revocation_feed_retention_seconds: int = 86_400

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
    issuer: str = DEFAULT_ISSUER
    served_url: str | None = None

    def environment(self) -> dict[str, str]:
        return {
            "M2M_DATABASE_URL": self.database_url,
            "M2M_VENDOR_CLIENT_ID": self.vendor_client_id,
            "M2M_VENDOR_SECRET": self.vendor_secret,
            "M2M_MASTER_KEY": self.master_key,
            "M2M_ISSUER": self.issuer,
        }


def load_settings(
    env: Mapping[str, str], mode: Mode = "serve", *, dev: DevDefaults | None = None
) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one.

    In "dev" mode `dev` supplies the database, master key, vendor credentials and issuer; the
    environment may override the credentials and the issuer, never IGNORED_IN_DEV.
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
    if mode == "worker":
        for name in REQUIRED_BY_WORKERS:
            reader.text(name, required=True)
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
        master_key=reader.master_key(required=needs_credentials or mode == "keys"),
        webhook_secret=reader.webhook_secret(),
        issuer=reader.url("M2M_ISSUER", DEFAULT_ISSUER, schemes={"http", "https"}),
        user_jwt_public_key=reader.public_key("M2M_USER_JWT_PUBLIC_KEY"),
        user_jwt_jwks_url=reader.optional_url("M2M_USER_JWT_JWKS_URL"),
        user_jwt_issuer=reader.optional("M2M_USER_JWT_ISSUER"),
        argon2_time_cost=reader.argon2("M2M_ARGON2_TIME_COST", ARGON2_MIN_TIME_COST, high=20),
        argon2_memory_kib=reader.argon2(
            "M2M_ARGON2_MEMORY_KIB", ARGON2_MIN_MEMORY_KIB, high=4_194_304
        ),
        argon2_parallelism=reader.argon2("M2M_ARGON2_PARALLELISM", ARGON2_MIN_PARALLELISM, high=64),
        argon2_max_pending=reader.optional_integer("M2M_ARGON2_MAX_PENDING", low=1, high=1_000_000),
        argon2_max_wait_ms=reader.integer("M2M_ARGON2_MAX_WAIT_MS", 750, low=0, high=60_000),
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
        trusted_proxies=reader.networks("M2M_TRUSTED_PROXIES"),
        database_statement_timeout_ms=reader.integer(
            "M2M_DATABASE_STATEMENT_TIMEOUT_MS", 5000, low=100, high=600_000
        ),
        database_lock_timeout_ms=reader.integer(
            "M2M_DATABASE_LOCK_TIMEOUT_MS", 2000, low=100, high=600_000
        ),
        database_transaction_pooling=reader.boolean(
            "M2M_DATABASE_TRANSACTION_POOLING", default=False
        ),
        embedded=mode == "dev",
        user_jwt_audience=reader.optional("M2M_USER_JWT_AUDIENCE"),
        metrics_public=reader.boolean("M2M_METRICS_PUBLIC", default=False),
        embed_origins=reader.origins("M2M_EMBED_ORIGINS"),
        served_url=dev.served_url if dev is not None else None,
        console_enabled=reader.boolean("M2M_CONSOLE_ENABLED", default=True),
        secret_prefix=reader.secret_prefix("M2M_SECRET_PREFIX"),
        leak_policy=reader.leak_policy("M2M_LEAK_POLICY"),
        github_secret_scanning_keys_url=reader.optional_url("M2M_GITHUB_SECRET_SCANNING_KEYS_URL"),
        github_secret_scanning_keys_file=reader.optional("M2M_GITHUB_SECRET_SCANNING_KEYS_FILE"),
        record_last_used=reader.boolean("M2M_RECORD_LAST_USED", default=True),
        # At most 30 s, so "last used" is right within a minute even when a write is retried.
        last_used_write_seconds=reader.integer("M2M_LAST_USED_WRITE_SECONDS", 5, low=1, high=30),
        delete_unused_after_days=reader.optional_integer(
            "M2M_DELETE_UNUSED_TOKENS_AFTER_DAYS", low=2, high=36_500
        ),
        unused_warning_days=reader.integer("M2M_UNUSED_TOKEN_WARNING_DAYS", 7, low=1, high=365),
        audit_retention_days=reader.integer("M2M_AUDIT_RETENTION_DAYS", 365, low=1, high=36_500),
        event_endpoints_allow_private=reader.boolean(
            "M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE", default=False
        ),
        event_endpoint_disable_after_seconds=reader.integer(
            "M2M_EVENT_ENDPOINT_DISABLE_AFTER_SECONDS", 5 * 86_400, low=60, high=90 * 86_400
        ),
        expiry_warning_days=reader.days("M2M_EXPIRY_WARNING_DAYS", (30, 7, 1)),
        revocation_feed_retention_seconds=reader.integer(
            "M2M_REVOCATION_FEED_RETENTION_SECONDS", 86_400, low=60, high=30 * 86_400
        ),
    )
    if settings.github_secret_scanning_keys_url and settings.github_secret_scanning_keys_file:
        raise ConfigError(
            "M2M_GITHUB_SECRET_SCANNING_KEYS_FILE",
            "set either it or M2M_GITHUB_SECRET_SCANNING_KEYS_URL, not both",
        )
    if (
        settings.delete_unused_after_days is not None
        and settings.unused_warning_days >= settings.delete_unused_after_days
    ):
        raise ConfigError(
            "M2M_UNUSED_TOKEN_WARNING_DAYS",
            "must be less than M2M_DELETE_UNUSED_TOKENS_AFTER_DAYS"
            f" ({settings.delete_unused_after_days})",
        )
    if settings.user_jwt_public_key and settings.user_jwt_jwks_url:
        raise ConfigError(
            "M2M_USER_JWT_JWKS_URL", "set either it or M2M_USER_JWT_PUBLIC_KEY, not both"
        )
    return settings


def read_master_key(env: Mapping[str, str], name: str) -> bytes:
    """A master key held in the variable `name`, checked as M2M_MASTER_KEY is; required."""
    return _Reader(env).master_key(required=True, name=name)


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

    def argon2(self, name: str, minimum: int, *, high: int) -> int:
        """An argon2id parameter: the OWASP minimum by default, and never less."""
        raw = self.optional(name)
        if raw is not None and raw.lstrip("-").isdigit() and int(raw) < minimum:
            raise ConfigError(name, f"must be at least {minimum} (the OWASP minimum), got {raw}")
        return self.integer(name, minimum, low=minimum, high=high)

    def optional_integer(self, name: str, *, low: int, high: int) -> int | None:
        if self.optional(name) is None:
            return None
        return self.integer(name, low, low=low, high=high)

    def days(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """Comma-separated whole days from 1 to 365, e.g. `30,7,1`."""
        value = self.optional(name)
        if value is None:
            return default
        try:
            days = {int(part) for part in value.split(",") if part.strip()}
        except ValueError:
            raise ConfigError(name, "must be whole days separated by commas, e.g. 30,7,1") from None
        if any(not 1 <= day <= 365 for day in days):
            raise ConfigError(name, "each number of days must be from 1 to 365")
        return tuple(sorted(days, reverse=True))

    def boolean(self, name: str, *, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        if raw.lower() not in BOOLEANS:
            raise ConfigError(name, f"must be true or false, got {raw!r}")
        return BOOLEANS[raw.lower()]

    def secret_prefix(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            return DEFAULT_SECRET_PREFIX
        if not SECRET_PREFIX_PATTERN.fullmatch(value):
            raise ConfigError(
                name,
                "must be 2 to 10 lowercase letters or digits, starting with a letter"
                f" (like {DEFAULT_SECRET_PREFIX}), got {value!r}",
            )
        return value

    def leak_policy(self, name: str) -> LeakPolicy:
        value = (self.optional(name) or "revoke").lower()
        for policy in LEAK_POLICIES:
            if value == policy:
                return policy
        raise ConfigError(name, f"must be revoke or notify, got {value!r}")

    def origins(self, name: str) -> tuple[str, ...]:
        """Comma-separated web origins, each exactly scheme://host[:port] (what a browser sends
        in `Origin`, and what a CSP source or a CORS answer may name): no path, no wildcard."""
        found: list[str] = []
        for item in (self.optional(name) or "").split(","):
            origin = item.strip().lower()
            if not origin:
                continue
            parts = urlsplit(origin)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if (
                parts.scheme not in {"http", "https"}
                or not parts.hostname
                or not port_ok
                or f"{parts.scheme}://{parts.netloc}" != origin
                or not _ORIGIN_HOST.fullmatch(parts.netloc)
            ):
                raise ConfigError(
                    name,
                    "must be origins like https://app.example.com (scheme, host and port only),"
                    f" got {item.strip()!r}",
                )
            # A browser's Origin leaves the scheme's default port out: so does ours.
            found.append(origin.removesuffix(DEFAULT_PORTS[parts.scheme]))
        return tuple(dict.fromkeys(found))

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
        if value in EXAMPLE_VENDOR_SECRETS:
            raise ConfigError(name, "is the README's example; choose a secret of your own")
        if value and len(value) < MIN_VENDOR_SECRET_LENGTH:
            raise ConfigError(name, f"must be at least {MIN_VENDOR_SECRET_LENGTH} characters")
        return value

    def networks(self, name: str) -> tuple[str, ...]:
        """Comma-separated IP addresses and CIDRs, each as a CIDR."""
        value = self.optional(name)
        if value is None:
            return ()
        networks = []
        for item in (part.strip() for part in value.split(",") if part.strip()):
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ConfigError(
                    name, f"must be comma-separated IP addresses or CIDRs, got {item!r}"
                ) from None
        return tuple(networks)

    def master_key(self, *, required: bool, name: str = "M2M_MASTER_KEY") -> bytes:
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
