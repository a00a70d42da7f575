"""POST /leaks/github: GitHub's secret-scanning partner protocol (README "Leaked secrets"),
signed with local keys and served from a file or a local HTTP server: nothing calls GitHub."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.leaks import GitHubScanningKeys
from domain.models import AuditEvent
from domain.secrets import SecretShape
from tests.factories import Factory
from tests.steps import (
    EXCHANGE,
    GitHubScanner,
    bearer,
    exchange_ok,
    replaced,
    simple_credential,
    validate,
)
from tests.test_secret_shape import wrong_checksum

GITHUB = "/leaks/github"
TYPE = "m2m_client_secret"
WHERE = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/x.py"


@pytest.fixture
def scanner() -> GitHubScanner:
    return GitHubScanner()


@pytest.fixture
def keys_file(scanner: GitHubScanner, tmp_path: Path, services: Services) -> Iterator[Path]:
    """The app reads GitHub's keys from a file for the test."""
    path = tmp_path / "secret_scanning.json"
    path.write_bytes(scanner.key_list())
    with replaced(services, "github_keys", GitHubScanningKeys(None, str(path))):
        yield path


class KeyServer:
    """GitHub's key-list URL, played by a local HTTP server that counts its requests."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/meta/public_keys/secret_scanning"
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def match(token: str, **fields: Any) -> dict[str, Any]:
    return {"token": token, "type": TYPE, "url": WHERE, "source": "content", **fields}


async def test_signed_matches_are_labelled_and_the_live_secret_is_revoked(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    scanner: GitHubScanner,
    keys_file: Path,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    not_ours = SecretShape().new("cs")
    malformed = wrong_checksum(SecretShape().new("rt"))
    body, headers = scanner.signed(
        [match(credential.secret), match(not_ours), match(malformed), match(credential.secret)]
    )

    response = await client.post(GITHUB, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # it echoes the values
    assert response.json() == [
        {"token_raw": credential.secret, "token_type": TYPE, "label": "true_positive"},
        {"token_raw": not_ours, "token_type": TYPE, "label": "false_positive"},
        {"token_raw": malformed, "token_type": TYPE, "label": "false_positive"},
        # Listed twice: acted on once, and dead by the time the second is read.
        {"token_raw": credential.secret, "token_type": TYPE, "label": "false_positive"},
    ]
    assert (await client.post(EXCHANGE, json=credential.body)).status_code == 401
    assert (await validate(client, bearer(pair["access_token"]))).status_code == 401
    (event,) = await db.scalars(sa.select(AuditEvent).where(AuditEvent.action == "leak.revoked"))
    assert (event.actor_type, event.actor_id) == ("leak_report", "github")
    assert event.details["reporter"] == "github"
    assert event.details["url"] == WHERE
    assert event.details["source"] == "content"


async def test_a_body_signed_by_the_other_listed_key_is_accepted(
    client: httpx.AsyncClient, scanner: GitHubScanner, keys_file: Path
) -> None:
    body, headers = scanner.signed([match(SecretShape().new("cs"))], identifier="github-key-2")
    response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()[0]["label"] == "false_positive"


@pytest.mark.parametrize(
    "tamper",
    ["body", "signature", "identifier", "no signature", "no identifier", "not base64"],
)
async def test_a_report_without_a_good_signature_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    scanner: GitHubScanner,
    keys_file: Path,
    tamper: str,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    body, headers = scanner.signed([match(credential.secret)])
    _, other_headers = scanner.signed([match(SecretShape().new("cs"))])
    if tamper == "body":
        body = body.replace(b'"content"', b'"commit"')
    elif tamper == "signature":
        headers["Github-Public-Key-Signature"] = other_headers["Github-Public-Key-Signature"]
    elif tamper == "identifier":
        headers["Github-Public-Key-Identifier"] = "github-key-2"
    elif tamper == "no signature":
        del headers["Github-Public-Key-Signature"]
    elif tamper == "no identifier":
        del headers["Github-Public-Key-Identifier"]
    else:
        headers["Github-Public-Key-Signature"] = "not base64 at all!"

    response = await client.post(GITHUB, content=body, headers=headers)

    assert response.status_code == 401, response.text
    assert response.json()["errors"]
    await exchange_ok(client, credential)


async def test_an_unknown_key_identifier_is_refused(
    client: httpx.AsyncClient, scanner: GitHubScanner, keys_file: Path
) -> None:
    stranger = GitHubScanner(identifiers=("github-key-9",))
    body, headers = stranger.signed([match("anything")], identifier="github-key-9")
    response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errors": ["Unknown Github-Public-Key-Identifier"]}


@pytest.mark.parametrize(
    "matches",
    [
        {"token": "x", "type": TYPE},
        [{"type": TYPE}],
        [{"token": 1, "type": TYPE}],
        [{"token": "", "type": TYPE}],
        [{"token": "x", "type": TYPE}] * 1001,
    ],
)
async def test_a_signed_body_of_the_wrong_shape_is_refused_with_400(
    client: httpx.AsyncClient, scanner: GitHubScanner, keys_file: Path, matches: Any
) -> None:
    body, headers = scanner.signed(matches)
    response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 400, response.text


async def test_fields_github_may_add_later_are_ignored(
    client: httpx.AsyncClient, scanner: GitHubScanner, keys_file: Path
) -> None:
    body, headers = scanner.signed([match(SecretShape().new("cs"), repository="a/b")])
    response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_without_keys_configured_the_route_says_it_is_not_configured(
    client: httpx.AsyncClient, scanner: GitHubScanner, services: Services
) -> None:
    body, headers = scanner.signed([match("anything")])
    with replaced(services, "github_keys", GitHubScanningKeys(None, None)):
        response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 401
    (message,) = response.json()["errors"]
    assert "M2M_GITHUB_SECRET_SCANNING_KEYS_URL" in message
    assert "not accepted" in message


async def test_keys_are_read_from_a_url_once_and_again_only_for_an_unknown_identifier(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    scanner: GitHubScanner,
    services: Services,
) -> None:
    server = KeyServer(scanner.key_list())
    try:
        with replaced(services, "github_keys", GitHubScanningKeys(server.url, None)):
            credential = await simple_credential(client, vendor, factory)
            for token in (credential.secret, SecretShape().new("cs")):
                body, headers = scanner.signed([match(token)])
                assert (await client.post(GITHUB, content=body, headers=headers)).status_code == 200
            assert server.requests == 1
            stranger = GitHubScanner(identifiers=("github-key-9",))
            body, headers = stranger.signed([match("x")], identifier="github-key-9")
            assert (await client.post(GITHUB, content=body, headers=headers)).status_code == 401
            # Read once more for the unknown identifier at most once a minute, not per request.
            assert (await client.post(GITHUB, content=body, headers=headers)).status_code == 401
            assert server.requests == 1
    finally:
        server.close()
    assert (await client.post(EXCHANGE, json=credential.body)).status_code == 401


async def test_keys_that_cannot_be_read_answer_503(
    client: httpx.AsyncClient, scanner: GitHubScanner, services: Services, tmp_path: Path
) -> None:
    body, headers = scanner.signed([match("x")])
    missing = GitHubScanningKeys(None, str(tmp_path / "absent.json"))
    with replaced(services, "github_keys", missing):
        response = await client.post(GITHUB, content=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
