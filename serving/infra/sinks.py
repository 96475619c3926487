"""Where campaign messages go: a signed webhook, an SMTP server, or a JSONL file (issue 12).

Every sink takes one rendered message at a time (``Outgoing``) and either returns (delivered)
or raises ``SinkError`` (not delivered: the dispatcher records the error and retries later, or
gives up when the error is ``permanent``). Delivery is at least once: a dispatcher that dies
between a send and its record sends again, so every sink passes the message id along for the
receiver to deduplicate: the webhook's ``Idempotency-Key`` header, the mail's ``Message-ID``,
the file line's ``message_id``.

- ``WebhookSink``: ``POST`` of a JSON body with ``X-Lstep-Signature: sha256=<hex HMAC-SHA256 of
  the body>``; timeout per request; 5xx, 429 and connection errors retried with exponential
  backoff; another 4xx is permanent. It refuses to start with an empty secret.
- ``EmailSink``: ``smtplib`` to the configured host and port, one connection per dispatch,
  reconnected once if the server dropped it.
- ``FileSink``: one JSON object per line, appended (a marketing tool imports the file).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import smtplib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from serving.settings import DispatchSettings

SIGNATURE_HEADER = "X-Lstep-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRIED_STATUSES = frozenset({408, 429})


class SinkError(Exception):
    """A message was not delivered; ``permanent`` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """One rendered message, as every sink receives it."""

    message_id: str
    customer_id: str
    campaign_id: str
    step: int
    channel: str
    template_id: str
    variant: str
    due_on: date
    subject: str
    body: str
    context: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The message as JSON-ready values (the webhook body, the file line)."""
        return {**asdict(self), "due_on": self.due_on.isoformat()}


class Sink(Protocol):
    """A delivery route: ``send`` returns when delivered, raises ``SinkError`` otherwise."""

    name: str

    def send(self, message: Outgoing) -> None:
        """Deliver one message."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Lstep-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POST each message as signed JSON, retrying what a retry can fix."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float,
        attempts: int,
        backoff_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Open a client for ``url``.

        Raises:
            ValueError: ``secret`` is empty or blank (an empty secret is no secret).
        """
        if not secret.strip():
            raise ValueError(
                "the webhook sink signs every message and its secret is empty: set "
                "LSTEP_DISPATCH__WEBHOOK_SECRET (or route the channels to another sink)"
            )
        self.url = url
        self._secret = secret.encode()
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._client = httpx.Client(timeout=timeout_s)

    def send(self, message: Outgoing) -> None:
        """POST the message; up to ``attempts`` tries for 5xx, 408, 429 and network errors.

        Raises:
            SinkError: the last try failed (``permanent`` for another 4xx).
        """
        body = json.dumps(message.payload(), sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body),
            IDEMPOTENCY_HEADER: message.message_id,
        }
        problem = "not tried"
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as error:
                problem = f"webhook {self.url}: {type(error).__name__}: {error}"
                continue
            if response.is_success:
                return
            problem = f"webhook {self.url} answered {response.status_code}"
            if response.status_code < 500 and response.status_code not in _RETRIED_STATUSES:
                raise SinkError(problem, permanent=True)
        raise SinkError(f"{problem} (after {self._attempts} tries)")

    def close(self) -> None:
        self._client.close()


class EmailSink:
    """Send each message as a plain-text mail through one SMTP connection."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, to: str, *, timeout_s: float) -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, to
        self._timeout_s = timeout_s
        self._smtp: smtplib.SMTP | None = None

    def send(self, message: Outgoing) -> None:
        """Send one mail (reconnecting once if the server closed the connection).

        Raises:
            SinkError: the server cannot be reached or refused the mail (``permanent`` when it
                refused the recipient).
        """
        mail = self._mail(message)
        for attempt in range(2):
            try:
                self._connection().send_message(mail)
                return
            except smtplib.SMTPServerDisconnected as error:
                self._smtp = None
                if attempt:
                    raise SinkError(f"SMTP {self.host}:{self.port}: {error}") from None
            except smtplib.SMTPRecipientsRefused as error:
                raise SinkError(f"SMTP refused {mail['To']}: {error}", permanent=True) from None
            except (smtplib.SMTPException, OSError) as error:
                self.close()
                raise SinkError(f"SMTP {self.host}:{self.port}: {error}") from None

    def _mail(self, message: Outgoing) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = str(message.context.get("email") or self.to.format(**message.payload()))
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{message.message_id}@lstep>"
        mail[IDEMPOTENCY_HEADER] = message.message_id
        mail.set_content(message.body)
        return mail

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = smtplib.SMTP(self.host, self.port, timeout=self._timeout_s)
        return self._smtp

    def close(self) -> None:
        if self._smtp is not None:
            # The connection is gone either way.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._smtp = None


class FileSink:
    """Append each message as one JSON line (for a marketing tool's import)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def send(self, message: Outgoing) -> None:
        """Append one line and flush it.

        Raises:
            SinkError: the file cannot be created or written.
        """
        line = json.dumps(message.payload(), sort_keys=True, ensure_ascii=False)
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as error:
            raise SinkError(f"file {self.path}: {error}") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def build_sinks(
    settings: DispatchSettings, file_path: Path, channels: Iterable[str]
) -> dict[str, Sink]:
    """One sink per channel of ``channels``, as ``settings.sinks`` routes them (shared).

    Raises:
        ValueError: a channel without a sink, or a webhook sink without a secret.
    """
    made: dict[str, Sink] = {}
    routes: dict[str, Sink] = {}
    for channel in channels:
        name = settings.sinks.get(channel)
        if name is None:
            raise ValueError(f"channel {channel!r} has no sink: add it to LSTEP_DISPATCH__SINKS")
        if name not in made:
            made[name] = _make_sink(name, settings, file_path)
        routes[channel] = made[name]
    return routes


def _make_sink(name: str, settings: DispatchSettings, file_path: Path) -> Sink:
    if name == "webhook":
        return WebhookSink(
            settings.webhook_url, settings.webhook_secret.get_secret_value(),
            timeout_s=settings.webhook_timeout_s, attempts=settings.webhook_attempts,
            backoff_s=settings.webhook_backoff_s,
        )  # fmt: skip
    if name == "email":
        return EmailSink(
            settings.smtp_host, settings.smtp_port, settings.smtp_from, settings.smtp_to,
            timeout_s=settings.smtp_timeout_s,
        )  # fmt: skip
    return FileSink(file_path)


__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "EmailSink",
    "FileSink",
    "Outgoing",
    "Sink",
    "SinkError",
    "WebhookSink",
    "build_sinks",
    "signature",
]
