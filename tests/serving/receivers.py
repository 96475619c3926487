"""Real receivers on 127.0.0.1 for the dispatch tests and benchmark: an SMTP server and an HTTP
webhook endpoint, each in a thread of this process, each keeping what it received.

- ``SmtpReceiver``: ``aiosmtpd``'s controller; each mail is parsed with the standard library.
- ``WebhookReceiver``: ``http.server`` (threaded); checks ``X-Lstep-Signature`` against the
  secret (401 when wrong), answers 500 to the first ``fail_first`` requests of each
  ``Idempotency-Key``, keeps the JSON bodies it accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections import Counter
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _MailHandler:
    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.mails.append(mail)  # type: ignore[arg-type]
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """An SMTP server on 127.0.0.1 that keeps the parsed mails (``with`` starts and stops it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = _MailHandler()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def mails(self) -> list[EmailMessage]:
        return list(self.handler.mails)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that checks signatures and fails the first tries."""

    def __init__(self, secret: str, *, fail_first: int = 0) -> None:
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.tries: Counter[str] = Counter()
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(receiver.receive(body, dict(self.headers.items())))

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # quiet test output

        return Handler

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        """The status to answer a request with; accepted bodies are kept."""
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        with self.lock:
            if not hmac.compare_digest(headers.get("X-Lstep-Signature", ""), expected):
                self.bad_signatures += 1
                return 401
            key = headers.get("Idempotency-Key", "")
            self.tries[key] += 1
            if self.tries[key] <= self.fail_first:
                return 500
            self.bodies.append(json.loads(body))
            self.headers.append(headers)
            return 200

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["SmtpReceiver", "WebhookReceiver", "free_port"]
