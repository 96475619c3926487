"""Problems: what went wrong, as values whose kind the edges map to an answer.

Logic raises (or returns, per learner) a ``Problem``; it never chooses an HTTP status or an exit
code. ``serving.api.problems`` maps each kind to a status in one table, the CLI prints the
message and exits 1. A problem's message names what was wrong (the learner, field or day).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

MAX_MESSAGES = 5
"""Per-learner messages quoted in one combined problem (``worst``); the rest are counted."""


class Problem(Exception):
    """An expected failure with a kind (``not_found``, ``invalid`` ...) and a message."""

    kind: ClassVar[str] = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __eq__(self, other: object) -> bool:
        same_kind = isinstance(other, Problem) and type(other) is type(self)
        return same_kind and other.message == self.message

    def __hash__(self) -> int:
        return hash((type(self), self.message))


class BadRequest(Problem):
    """The request itself is malformed (a field, a header, a content type)."""

    kind = "bad_request"


class Unauthorized(Problem):
    """A write without the right bearer token."""

    kind = "unauthorized"


class NotFound(Problem):
    """An unknown learner, day or file."""

    kind = "not_found"


class Conflict(Problem):
    """The request is valid but the state forbids it now (e.g. a day before the latest batch)."""

    kind = "conflict"


class TooLarge(Problem):
    """More learners, events or bytes than one request may carry."""

    kind = "too_large"


class Invalid(Problem):
    """Data that breaks a contract (events after now, enrolled after as_of, a stale day)."""

    kind = "invalid"


class Unavailable(Problem):
    """A dependency (the model, a store) cannot answer now; the caller may retry later."""

    kind = "unavailable"


class NoChampionError(Unavailable):
    """No model version holds the ``champion`` alias and rules-only mode was not asked for."""

    kind = "no_champion"


class ApplyRefused(Conflict):
    """Moves cannot be written on that day (it is before the latest completed batch day)."""


KINDS: dict[str, type[Problem]] = {
    kind_class.kind: kind_class
    for kind_class in (
        BadRequest,
        Unauthorized,
        NotFound,
        Conflict,
        TooLarge,
        Invalid,
        Unavailable,
        NoChampionError,
    )
}
"""Every kind by name: a problem crosses a process boundary as (kind, message)."""

_SEVERITY = ("not_found", "invalid")
"""Among per-learner problems the most telling kind wins: an unknown learner first."""


def problem_of(kind: str, message: str) -> Problem:
    """Rebuild a problem from its kind and message (``Invalid`` for an unknown kind)."""
    return KINDS.get(kind, Invalid)(message)


def worst(problems: Iterable[Problem]) -> Problem | None:
    """One problem standing for several learners' problems: the most telling kind, its messages.

    Returns:
        None when there is no problem; else a problem of the most telling kind (``not_found``
        before ``invalid`` before the others) quoting up to ``MAX_MESSAGES`` of its messages.
    """
    listed = list(problems)
    if not listed:
        return None

    def rank(problem: Problem) -> tuple[int, str]:
        order = _SEVERITY.index(problem.kind) if problem.kind in _SEVERITY else len(_SEVERITY)
        return order, problem.kind

    first = min(listed, key=rank)
    messages = [problem.message for problem in listed if problem.kind == first.kind]
    more = f" (and {len(messages) - MAX_MESSAGES} more)" if len(messages) > MAX_MESSAGES else ""
    return type(first)("; ".join(messages[:MAX_MESSAGES]) + more)


__all__ = [
    "KINDS",
    "ApplyRefused",
    "BadRequest",
    "Conflict",
    "Invalid",
    "NoChampionError",
    "NotFound",
    "Problem",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "problem_of",
    "worst",
]
