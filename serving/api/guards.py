"""Guards at the service's door: bounded bodies, JSON only, a readiness answer within a second,
and client errors logged as one line.

``RequestGuardMiddleware`` runs before BentoML reads a request: a ``POST`` whose body is over
``LSTEP_MAX_BODY_BYTES`` gets its 413 before any byte is parsed (from ``Content-Length``, or while
a chunked body streams in), and one that is not JSON gets a 415. ``GET /readyz`` is answered
from ``Readiness`` checks that each take at most ``READY_TIMEOUT_S``, naming what is down.
``ClientErrorLogFilter`` turns BentoML's ERROR-with-traceback for 4xx answers into one INFO line
without the request body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

READY_TIMEOUT_S = 1.0
"""The longest a dependency check of ``/readyz`` may take."""
JSON_TYPES = ("application/json",)
GUARDED_METHODS = frozenset({"POST", "PUT", "PATCH"})
RETRY_AFTER_S = b"5"
"""What a 503 tells the client to wait before trying again (seconds)."""

Check = Callable[[], Awaitable[None]]
"""A readiness check: returns when the dependency answers, raises otherwise."""


class Readiness:
    """The named dependency checks ``/readyz`` runs (registered by the service at start-up)."""

    checks: ClassVar[dict[str, Check]] = {}

    @classmethod
    def register(cls, name: str, check: Check) -> None:
        cls.checks[name] = check

    @classmethod
    async def problems(cls) -> list[str]:
        """What is down: one phrase per failed or slow check, all checks run at once."""
        names = list(cls.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(cls.checks[name](), READY_TIMEOUT_S) for name in names),
            return_exceptions=True,
        )
        found = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, TimeoutError):
                found.append(f"{name} did not answer within {READY_TIMEOUT_S:g} s")
            elif isinstance(result, BaseException):
                found.append(f"{name}: {str(result).splitlines()[0] if str(result) else result!r}")
        return found


class RequestGuardMiddleware:
    """Refuse oversized and non-JSON bodies before parsing; answer ``/readyz`` promptly."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == "/readyz":
            problems = await Readiness.problems()
            if problems:
                await _answer(send, 503, {"error": "not ready", "detail": "; ".join(problems)})
                return
        elif scope["method"] in GUARDED_METHODS and not scope["path"].startswith("/pages"):
            refused = self._refusal(dict(scope.get("headers", [])))
            if refused is not None:
                await _answer(send, *refused)
                return
            receive = await self._read_bounded(receive)
            if receive is None:
                await _answer(send, 413, self._too_large(self.max_body_bytes + 1))
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> tuple[int, dict[str, str]] | None:
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip()
        if content_type.lower() not in JSON_TYPES:
            shown = content_type or "none"
            return 415, {"error": f"content type {shown} is not supported: send application/json"}
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return 413, self._too_large(int(length))
        return None

    def _too_large(self, size: int) -> dict[str, str]:
        return {
            "error": f"request body of {size:,} bytes or more is over the {self.max_body_bytes:,} "
            "bytes one request may carry (LSTEP_MAX_BODY_BYTES)"
        }

    async def _read_bounded(self, receive: Callable) -> Callable | None:
        """Read the body up to the limit (a chunked body, or one lying about its length).

        Returns:
            A ``receive`` that replays the body to the application, or None when the body went
            over the limit (reading stops there: the rest is never buffered).
        """
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        return replayed


async def _answer(send: Callable, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", RETRY_AFTER_S))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ClientErrorLogFilter(logging.Filter):
    """BentoML logs every failed request at ERROR with its traceback, 4xx included, and the
    traceback of a validation error quotes the request body: a client's mistake becomes one
    INFO line (status, path, first line of the error), server errors stay as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = _client_status(error)
        if status is None:
            return True
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        record.msg = "client error %s on %s [%s]: %s"
        record.args = (status, *(record.args or ("?", "?"))[:2], first[:200])
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def _client_status(error: BaseException | None) -> int | None:
    """The 4xx status an exception of a request stands for, None for any other."""
    if error is None:
        return None
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and 400 <= int(error.error_code) < 500:
        return int(error.error_code)
    return None


def quiet_client_errors() -> None:
    """Install ``ClientErrorLogFilter`` on BentoML's request-error logger (once)."""
    target = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(existing, ClientErrorLogFilter) for existing in target.filters):
        target.addFilter(ClientErrorLogFilter())


__all__ = [
    "READY_TIMEOUT_S",
    "ClientErrorLogFilter",
    "Readiness",
    "RequestGuardMiddleware",
    "quiet_client_errors",
]
