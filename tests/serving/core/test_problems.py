"""Problems: kinds that cross processes, and the most telling one of several learners'."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from serving.api.problems import ServiceError, http_problems, status_of
from serving.core.problems import (
    KINDS,
    ApplyRefused,
    Conflict,
    Invalid,
    NoChampionError,
    NotFound,
    TooLarge,
    problem_of,
    worst,
)


def test_a_problem_crosses_a_process_as_kind_and_message():
    for kind, cls in KINDS.items():
        rebuilt = problem_of(kind, "why")
        assert type(rebuilt) is cls and rebuilt.message == "why"
    assert type(problem_of("no-such-kind", "why")) is Invalid


def test_an_unknown_learner_is_more_telling_than_a_contract_breach():
    # given problems of several learners
    found = [Invalid("a breaks"), NotFound("b unknown"), Invalid("c breaks"), NotFound("d unknown")]
    # when one stands for all, then it is the unknown learners', quoting each
    chosen = worst(found)
    assert isinstance(chosen, NotFound) and chosen.message == "b unknown; d unknown"
    assert worst([]) is None


def test_many_messages_are_counted_not_all_quoted():
    chosen = worst([Invalid(f"learner {n}") for n in range(8)])
    assert chosen.message.endswith("learner 4 (and 3 more)")


@pytest.mark.parametrize(
    ("problem", "status"),
    [
        (NotFound("x"), HTTPStatus.NOT_FOUND),
        (Invalid("x"), HTTPStatus.UNPROCESSABLE_ENTITY),
        (Conflict("x"), HTTPStatus.CONFLICT),
        (ApplyRefused("x"), HTTPStatus.CONFLICT),
        (TooLarge("x"), HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (NoChampionError("x"), HTTPStatus.SERVICE_UNAVAILABLE),
    ],
)
def test_each_problem_has_one_status(problem, status):
    # when a problem escapes an API method, then the client gets its status and message
    assert status_of(problem) == status
    with pytest.raises(ServiceError) as raised, http_problems():
        raise problem
    assert raised.value.error_code == status and str(raised.value) == "x"
