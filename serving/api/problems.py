"""One place that maps problems to HTTP statuses, and the shape of every error body.

Logic raises ``serving.core.problems.Problem`` values; each API method runs inside
``http_problems()``, which turns them into BentoML errors with the status of ``STATUSES`` (as
feast maps ``FeastError.http_status_code()`` in one exception handler). ``ErrorBodyMiddleware``
then gives every 4xx JSON body the shape the OpenAPI document declares:
``{"error": str, "detail": str}``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from bentoml.exceptions import BentoMLException

from serving.api.guards import RETRY_AFTER_S
from serving.core.problems import (
    BadRequest,
    Conflict,
    Invalid,
    NoChampionError,
    NotFound,
    Problem,
    TooLarge,
    Unauthorized,
    Unavailable,
)

STATUSES: dict[type[Problem], HTTPStatus] = {
    BadRequest: HTTPStatus.BAD_REQUEST,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    NotFound: HTTPStatus.NOT_FOUND,
    Conflict: HTTPStatus.CONFLICT,
    TooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    Invalid: HTTPStatus.UNPROCESSABLE_ENTITY,
    Unavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    NoChampionError: HTTPStatus.SERVICE_UNAVAILABLE,
}
"""The status of each kind of problem (a subclass takes its nearest listed base's)."""


class ServiceError(BentoMLException):
    """An error whose status and message go to the client as they are."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message, error_code=status)


def status_of(problem: Problem) -> HTTPStatus:
    """The HTTP status of a problem."""
    for kind in type(problem).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return HTTPStatus.UNPROCESSABLE_ENTITY


PROBLEM_KEY = "lstep.problem"
"""Where an answered problem's message waits in the request scope for ``ErrorBodyMiddleware``."""


@contextmanager
def http_problems(ctx: Any = None) -> Iterator[None]:
    """Run an API method: a ``Problem`` it raises becomes the error response of its status.

    BentoML words every 5xx body "An unexpected error has occurred"; a 503 of ours (a dependency
    down or slow) is no unexpected error, so its message is left in the request's scope, where
    ``ErrorBodyMiddleware`` puts it back into the body.
    """
    try:
        yield
    except Problem as problem:
        status = status_of(problem)
        if status >= 500 and ctx is not None:
            ctx.request.scope[PROBLEM_KEY] = problem.message
        raise ServiceError(status, problem.message) from None


def check_bearer(authorization: str | None, token: str | None) -> None:
    """Accept ``Authorization: Bearer <token>`` with the configured token.

    A blank configured token or a blank presented one never matches: an empty secret is no secret.

    Raises:
        Unauthorized: the header is missing or wrong, or no token is configured.
    """
    scheme, _, given = (authorization or "").partition(" ")
    valid = (
        token is not None
        and token.strip() != ""
        and given.strip() != ""
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )
    if not valid:
        raise Unauthorized("missing or wrong bearer token")


class ErrorBodyMiddleware:
    """Give every JSON error response the body BentoML's OpenAPI document declares.

    BentoML answers a request-model failure with ``detail`` as a list of pydantic errors and an
    exception with a one-element list; its OpenAPI document (and so schemathesis) says
    ``{"error": str, "detail": str}``. This rewrites 4xx JSON bodies to that shape, keeping
    every field path and message.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def rewrite(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                message = _with_retry_after(message)
            if message["type"] == "http.response.start" and _is_json_error(message, scope):
                held["start"] = message
                return
            if message["type"] != "http.response.body" or "start" not in held:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = error_body(b"".join(chunks), scope.get(PROBLEM_KEY))
            headers = [
                (name, value)
                for name, value in held["start"]["headers"]
                if name != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**held["start"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


class DeclaredStatusesMiddleware:
    """Declare in the OpenAPI document (``/docs.json``) every status the API answers with.

    BentoML declares 200, 400, 404 and 500; the problems of ``STATUSES`` and the door's 415
    answer others, and a client generated from the document should know them all.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def declare(message: dict) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = declared_statuses(b"".join(chunks))
            headers = [(n, v) for n, v in held["start"]["headers"] if n != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**held["start"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, declare)


def declared_statuses(raw: bytes) -> bytes:
    """The OpenAPI document with every answered status declared on every POST operation."""
    try:
        document = json.loads(raw)
    except ValueError:
        return raw
    statuses = {int(status) for status in STATUSES.values()} | {415}
    for item in document.get("paths", {}).values():
        responses = item.get("post", {}).get("responses")
        if responses is None:
            continue
        for status in sorted(statuses):
            responses.setdefault(str(status), _error_response(HTTPStatus(status)))
    return json.dumps(document).encode()


def _error_response(status: HTTPStatus) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    }
    return {"description": status.phrase, "content": {"application/json": {"schema": schema}}}


def _with_retry_after(start: dict) -> dict:
    """A 503 tells the client when to try again (a dependency is down or slow)."""
    headers = list(start.get("headers", []))
    if not any(name.lower() == b"retry-after" for name, _ in headers):
        headers.append((b"retry-after", RETRY_AFTER_S))
    return {**start, "headers": headers}


def _is_json_error(start: dict, scope: dict) -> bool:
    """A JSON 4xx, or a 5xx whose message a problem left (see ``http_problems``)."""
    headers = dict(start.get("headers", []))
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    ours = 400 <= start["status"] < 500 or PROBLEM_KEY in scope
    return ours and content_type.startswith("application/json")


def error_body(raw: bytes, problem: str | None = None) -> bytes:
    """``{"error": str, "detail": str}`` from any of BentoML's error bodies (or a problem's)."""
    if problem is not None:
        return json.dumps({"error": problem}).encode()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or "error" not in parsed:
        return raw
    body = {"error": str(parsed["error"])}
    detail = parsed.get("detail")
    if isinstance(detail, list):
        places = [_field_error(item) for item in detail]
        body["error"] = f"invalid request body: {places[0]}" if places else body["error"]
        body["detail"] = "; ".join(places)
    elif detail is not None:
        body["detail"] = str(detail)
    return json.dumps(body).encode()


def _field_error(error: Any) -> str:
    """``learners.0.customer_id: String should have at least 1 character``."""
    if not isinstance(error, dict):
        return str(error)
    place = ".".join(str(part) for part in error.get("loc", ())) or "body"
    return f"{place}: {error.get('msg', 'invalid')}"


__all__ = [
    "STATUSES",
    "DeclaredStatusesMiddleware",
    "ErrorBodyMiddleware",
    "ServiceError",
    "check_bearer",
    "error_body",
    "http_problems",
    "status_of",
]
