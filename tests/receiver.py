"""A real webhook receiver on 127.0.0.1 for the outbound-event tests: it checks each delivery's
signature with the `standardwebhooks` package and counts what arrived, per endpoint path."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Inbox:
    """What one endpoint path received and how it answers."""

    secret: str = ""
    # Answer this status to the next `failures` deliveries (then 204).
    failures: int = 0
    failure_status: int = 500
    # Hold each request until this is set (a slow endpoint, or one a worker dies sending to).
    hold: threading.Event | None = None
    redirect_to: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    requests: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


class Receiver:
    def __init__(self) -> None:
        self.inboxes: dict[str, Inbox] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.receive(self.path, dict(self.headers.items()), body)
                if isinstance(status, str):
                    self.send_response(302)
                    self.send_header("location", status)
                else:
                    self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def inbox(self, path: str) -> Inbox:
        with self.lock:
            return self.inboxes.setdefault(path, Inbox())

    def url(self, path: str) -> str:
        self.inbox(path)
        return self.base + path

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int | str:
        inbox = self.inbox(path)
        with self.lock:
            inbox.requests += 1
        if inbox.hold is not None:
            inbox.hold.wait(30)
        if inbox.redirect_to is not None:
            return inbox.redirect_to
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            event = Webhook(inbox.secret).verify(body, lowered)
        except (WebhookVerificationError, ValueError):
            with self.lock:
                inbox.bad_signatures += 1
            return 400
        with self.lock:
            if inbox.failures > 0:
                inbox.failures -= 1
                return inbox.failure_status
            assert lowered["webhook-id"] == event["id"]
            inbox.ids[event["id"]] += 1
            inbox.events.append(json.loads(body))
            inbox.arrived.set()
        return 204


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        for inbox in receiver.inboxes.values():
            if inbox.hold is not None:
                inbox.hold.set()
        receiver.server.shutdown()
        receiver.server.server_close()
