"""Schemathesis against the served OpenAPI document (``/docs.json``): no 5xx, no off-schema body.

Every lstep endpoint gets a bounded number of generated requests, with the API token (so
``/override`` and ``apply`` reach their logic rather than stopping at 401). Generated learners
are mostly unknown (404), days mostly in the future (422), bodies often invalid (400): each of
those answers must still have the documented shape, and nothing may be a server error.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.serving.service_fixtures import (
    API_TOKEN,
    ServedService,
)

EXAMPLES_PER_ENDPOINT = 25
ENDPOINTS = ("/score", "/explain", "/status", "/override", "/events/campaign")
# schemathesis.pytest.from_fixture is not used: 4.32 reads pytest's private Function._nodeid,
# which pytest 9 removed; hypothesis drives the operation's own strategy instead.


@pytest.fixture(scope="session")
def api_schema(served: ServedService):
    """The service's own OpenAPI document."""
    return schemathesis.openapi.from_url(f"{served.url}/docs.json")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_server_error_and_no_response_off_the_schema(api_schema, path):
    # given requests generated from the served document for this endpoint
    operation = api_schema[path]["POST"]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_ENDPOINT,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case):
        # when each is sent, then no 5xx and every body matches the documented schema
        response = case.call(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    call()
