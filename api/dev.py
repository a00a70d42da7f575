"""The data directory of `m2m dev`: its SQLite file and the credentials made on first start."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL

from domain.settings import DEFAULT_ISSUER, DevDefaults, Settings, load_settings

DEFAULT_DATA_DIR: Final = ".m2m"
DATABASE_FILE: Final = "m2m.db"
CREDENTIALS_FILE: Final = "credentials.json"
LOCK_FILE: Final = "lock"
DIRECTORY_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# UPDATE/DELETE ... RETURNING, which the domain's statements use, came in SQLite 3.35.
MIN_SQLITE_VERSION: Final = (3, 35, 0)


class DataDirectoryError(Exception):
    """The data directory cannot be used; the message says why."""


@dataclass(frozen=True)
class DevCredentials:
    """What a dev environment keeps from its first start: without the master key, the signing
    keys in its database cannot be read; without the issuer, the tokens it issued would not
    validate after a restart on another port."""

    vendor_client_id: str
    vendor_secret: str
    master_key: str
    issuer: str

    @classmethod
    def generate(cls, *, issuer: str) -> DevCredentials:
        return cls(
            vendor_client_id=str(uuid.uuid4()),
            vendor_secret=secrets.token_urlsafe(32),
            master_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
            issuer=issuer,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "vendorClientId": self.vendor_client_id,
                "vendorSecret": self.vendor_secret,
                "masterKey": self.master_key,
                "issuer": self.issuer,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> DevCredentials:
        data = json.loads(text)
        return cls(
            vendor_client_id=str(data["vendorClientId"]),
            vendor_secret=str(data["vendorSecret"]),
            master_key=str(data["masterKey"]),
            # Environments made before the issuer was kept signed with the default one.
            issuer=str(data.get("issuer") or DEFAULT_ISSUER),
        )


@dataclass(frozen=True)
class DevEnvironment:
    """A prepared data directory: where it is, what it holds, and whether it was just made."""

    path: Path
    credentials: DevCredentials
    created: bool

    @property
    def database_path(self) -> Path:
        return self.path / DATABASE_FILE

    @property
    def credentials_path(self) -> Path:
        return self.path / CREDENTIALS_FILE

    @property
    def database_url(self) -> str:
        return URL.create("sqlite+aiosqlite", database=str(self.database_path)).render_as_string()

    def lock(self) -> int:
        """Keep any other `m2m dev` off this directory while this process lives (the returned
        descriptor stays open): its in-memory cache would not hear of this one's deletions."""
        descriptor = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise DataDirectoryError(f"another m2m dev is running on {self.path}") from None
        return descriptor

    def settings(self, env: Mapping[str, str], *, port: int) -> Settings:
        """Dev settings: this directory's database, keys and issuer, served on `port`; M2M_*
        override what they may."""
        return _dev_settings(env, self.credentials, self.database_url, port=port)


def first_start_settings(env: Mapping[str, str], *, port: int) -> Settings:
    """The settings a new environment started on `port` would have, read before anything is
    made, so that a bad variable stops `m2m dev` with nothing written. Their issuer is the one a
    new environment keeps: M2M_ISSUER when set, else http://localhost:PORT."""
    throwaway = DevCredentials.generate(issuer=f"http://localhost:{port}")
    return _dev_settings(env, throwaway, "sqlite+aiosqlite://", port=port)


def _dev_settings(
    env: Mapping[str, str], credentials: DevCredentials, database_url: str, *, port: int
) -> Settings:
    return load_settings(
        env,
        mode="dev",
        dev=DevDefaults(
            database_url=database_url,
            vendor_client_id=credentials.vendor_client_id,
            vendor_secret=credentials.vendor_secret,
            master_key=credentials.master_key,
            issuer=credentials.issuer,
            # `m2m dev` binds 127.0.0.1 only.
            served_url=f"http://127.0.0.1:{port}",
        ),
    )


def open_data_directory(path: Path, *, issuer: str = DEFAULT_ISSUER) -> DevEnvironment:
    """Open the data directory, making it (mode 0700) and its credentials (0600) on first use;
    `issuer` is what a new environment keeps as its issuer.

    The database file is created empty with mode 0600 before SQLite opens it, so that SQLite
    gives its WAL and shared-memory files the same mode.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise DataDirectoryError(
            f"m2m dev needs SQLite 3.35 or newer; this Python's sqlite3 is {sqlite3.sqlite_version}"
        )
    path = path.expanduser().absolute()
    try:
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # another start making it at once
                path.mkdir(mode=DIRECTORY_MODE, parents=True)
                path.chmod(DIRECTORY_MODE)  # whatever the umask
        if not path.is_dir():
            raise DataDirectoryError(f"{path} is not a directory")
        credentials_path = path / CREDENTIALS_FILE
        database_path = path / DATABASE_FILE
        created = not credentials_path.exists()
        if created and database_path.exists() and database_path.stat().st_size > 0:
            # New keys could not read the signing keys already in it.
            raise DataDirectoryError(
                f"{database_path} exists without {CREDENTIALS_FILE}: restore that file,"
                " or remove the whole directory to start afresh"
            )
        if created:
            credentials = DevCredentials.generate(issuer=issuer)
            created = _write_private(credentials_path, credentials.to_json() + "\n")
        if not created:
            credentials = _read_credentials(credentials_path)
        if not database_path.exists():
            _write_private(database_path, "")
    except PermissionError as error:
        raise DataDirectoryError(f"cannot use {path}: {error.strerror}") from None
    return DevEnvironment(path=path, credentials=credentials, created=created)


def _read_credentials(path: Path) -> DevCredentials:
    try:
        return DevCredentials.from_json(path.read_text())
    except (ValueError, KeyError, TypeError):
        raise DataDirectoryError(
            f"{path} is damaged; restore it, or remove the whole directory to start afresh"
        ) from None


def _write_private(path: Path, text: str) -> bool:
    """Write a new file readable by its owner only, in full or not at all; False (and nothing
    written) if the file exists, made meanwhile by another `m2m dev` starting at once."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(partial, FILE_MODE)  # whatever the umask
        try:
            os.link(partial, path)  # unlike a rename, never replaces a file already there
        except FileExistsError:
            return False
        return True
    finally:
        partial.unlink(missing_ok=True)


def banner(environment: DevEnvironment, settings: Settings, *, port: int) -> str:
    """What `m2m dev` prints on start: the vendor secret only on the start that made it."""
    from api.reference import PATH

    base = f"http://127.0.0.1:{port}"
    lines = [
        f"m2m dev: listening on {base}; tokens name the issuer {settings.issuer}",
        f"m2m dev: the API at {base}, its reference at {base}{PATH}",
        f"m2m dev: data in {environment.path} (SQLite; no PostgreSQL or Redis needed)",
    ]
    client_id = settings.vendor_client_id
    # The vendor's console signs in with the same clientId and secret.
    console = [f"  console:  {base}/console"] if settings.console_enabled else []
    if not environment.created:
        lines += [
            f"m2m dev: the vendor credentials (secret in {environment.credentials_path}):",
            f"  clientId: {client_id}",
            *console,
        ]
        return "\n".join(lines)
    secret_from_env = settings.vendor_secret != environment.credentials.vendor_secret
    if secret_from_env:
        shown = "(the value of M2M_VENDOR_SECRET)"
        escaped = json.dumps({"clientId": client_id, "secret": "$M2M_VENDOR_SECRET"})
        data = '"' + escaped.replace('"', '\\"') + '"'  # the shell expands the variable
    else:
        shown = settings.vendor_secret
        data = shlex.quote(json.dumps({"clientId": client_id, "secret": settings.vendor_secret}))
    lines += [
        "m2m dev: a new environment; its vendor credentials (the secret is shown this once):",
        f"  clientId: {client_id}",
        f"  secret:   {shown}",
        f"  (kept with the master key in {environment.credentials_path}, mode 0600)",
        *console,
        "Try it:",
        f"  curl -s -X POST {base}/auth/vendor -H 'content-type: application/json' -d {data}",
    ]
    return "\n".join(lines)
