"""The peer: panva oidc-provider (Node, two processes, Redis adapter), the open-source
authorization server every figure of the benchmark is a ratio to, measured in the same run.

Its code is not in this repository: it is copied at run time from the project's shared folder
(`../shared/peer/oidc-provider` beside the checkout, or `--peer DIR`) into a temporary
directory, where `npm ci` installs its packages; nothing is written beside the original.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from loadgen import Load
from stack import Server, delete_redis_keys, free_port

HOST = "127.0.0.1"
DEFAULT_SOURCE = Path(__file__).resolve().parent.parent.parent / "shared/peer/oidc-provider"
# The client its server.mjs configures (its README: "What to measure against").
CLIENT_ID = "m2m-client"
CLIENT_SECRET = "m2m-secret-0123456789abcdef0123456789abcdef"
# Every key its Redis adapter writes starts with this (redis_adapter.mjs).
KEY_PREFIX = "oidc:"
READY_LINE = "oidc-provider pid="
NPM_TIMEOUT_SECONDS = 600


class PeerFailed(Exception):
    pass


def _basic() -> str:
    pair = f"{CLIENT_ID}:{CLIENT_SECRET}".encode()
    return "Basic " + base64.b64encode(pair).decode()


FORM = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": _basic()}
GRANT_BODY = urlencode({"grant_type": "client_credentials", "scope": "read"})


def install(source: Path, workdir: Path) -> Path:
    """A copy of the peer in `workdir` with its packages installed (`npm ci`)."""
    if not (source / "server.mjs").exists():
        raise PeerFailed(f"no peer at {source} (server.mjs missing): give --peer DIR or --no-peer")
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise PeerFailed("node and npm are needed for the peer: apt-get install -y nodejs npm")
    copy = Path(tempfile.mkdtemp(prefix="peer-", dir=workdir))
    shutil.copytree(
        source, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules", "jwks.json")
    )
    try:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=copy,
            check=True,
            timeout=NPM_TIMEOUT_SECONDS,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except subprocess.CalledProcessError as error:
        raise PeerFailed(f"npm ci failed for the peer: {error.stderr.strip()[-2000:]}") from None
    return copy


@dataclass
class Peer:
    """The running peer, on a free port of 127.0.0.1."""

    url: str
    server: Server

    def access_token(self) -> str:
        """An opaque access token of its own (saved in Redis), for introspection."""
        answer = httpx.post(self.url + "/token", content=GRANT_BODY, headers=FORM, timeout=10)
        if answer.status_code != 200:
            raise PeerFailed(f"the peer's grant answered {answer.status_code}: {answer.text}")
        token: str = answer.json()["access_token"]
        return token

    def introspection(self) -> Load:
        """Introspection of one of its own opaque tokens (what our validation compares with)."""
        token = self.access_token()
        body = urlencode({"token": token, "token_type_hint": "access_token"})
        answer = httpx.post(self.url + "/token/introspection", content=body, headers=FORM)
        if answer.status_code != 200 or answer.json().get("active") is not True:
            refused = f"{answer.status_code}: {answer.text}"
            raise PeerFailed(f"the peer's introspection answered {refused}")
        return Load(url=self.url + "/token/introspection", method="POST", headers=FORM, body=body)

    def client_credentials_grant(self) -> Load:
        """Its client-credentials grant, opaque token (what exchange and refresh compare with)."""
        self.access_token()
        return Load(url=self.url + "/token", method="POST", headers=FORM, body=GRANT_BODY)


def start(installed: Path, *, redis_url: str, workers: int, log: Path, env: dict[str, str]) -> Peer:
    """`node server.mjs` with `workers` processes (Node's cluster) and the Redis adapter.
    Its keys under KEY_PREFIX in `redis_url` are deleted first (its README: flush before a run),
    and nothing else there."""
    port = free_port()
    server = Server(
        "the peer (oidc-provider)",
        ["node", "server.mjs"],
        env={
            **env,
            "NODE_ENV": "production",
            "PORT": str(port),
            "WORKERS": str(workers),
            "ADAPTER": "redis",
            "REDIS_URL": redis_url,
        },
        cwd=installed,
        log=log,
        ready_line=READY_LINE,
    )
    delete_redis_keys(redis_url, KEY_PREFIX)
    server.start(workers)
    return Peer(f"http://{HOST}:{port}", server)
