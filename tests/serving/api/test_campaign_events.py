"""``POST /events/campaign``: the service method on a real store, auth, statuses and bodies.

The method is called as BentoML calls it, on an object holding what it reads of the service
(the store, the token, the clock): the full service needs a champion, this endpoint does not.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from http import HTTPStatus
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, text

from serving.api.feedback_models import CampaignEventRequest
from serving.api.problems import ServiceError
from serving.api.service import LstepService
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.outbox_fixtures import apply_with_plan, messages, plan

TOKEN = "campaign-token"
NOW = datetime(2024, 3, 3, 9, tzinfo=UTC)
DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)
campaign_event = LstepService.inner.__dict__["campaign_event"].func


def context(authorization: str | None = f"Bearer {TOKEN}") -> SimpleNamespace:
    headers = {} if authorization is None else {"authorization": authorization}
    return SimpleNamespace(request=SimpleNamespace(headers=headers, scope={}))


@pytest.fixture
def service(store):
    """What the endpoint reads of the service, over a store with one planned message."""
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, [("a", "ST_001", "ST_004")], plan(messages(DAY2, ["a"])))
    message_id = store.outbox_frame()["message_id"].iloc[0]
    config = SimpleNamespace(write_token=TOKEN)
    return SimpleNamespace(store=store, config=config, clock=lambda: NOW, message_id=message_id)


def post(service, ctx=None, **body):
    return campaign_event(service, CampaignEventRequest(**body), ctx=ctx or context())


def test_an_event_is_recorded_once_and_a_duplicate_answers_recorded_false(service):
    # When a message is reported opened twice and clicked once
    first = post(service, message_id=service.message_id, kind="opened", source="esp")
    again = post(service, message_id=service.message_id, kind="opened", source="esp")
    clicked = post(service, message_id=service.message_id, kind="clicked")
    # Then the first and the click are recorded, the repeat changed nothing
    assert (first.recorded, again.recorded, clicked.recorded) == (True, False, True)
    feedback = service.store.feedback_frame()
    assert list(zip(feedback["kind"], feedback["source"], strict=True)) == [
        ("opened", "esp"), ("clicked", "api")
    ]  # fmt: skip
    assert (feedback["recorded_at"] == NOW).all()


def test_an_unknown_message_is_404_naming_it(service):
    with pytest.raises(ServiceError, match="msg-unknown") as error:
        post(service, message_id="msg-unknown", kind="opened")
    assert error.value.error_code == HTTPStatus.NOT_FOUND


def test_an_unknown_kind_is_422_naming_the_field(service):
    with pytest.raises(ServiceError, match="kind: 'bounced'") as error:
        post(service, message_id=service.message_id, kind="bounced")
    assert error.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert service.store.feedback_frame().empty


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_without_the_token_nothing_is_recorded(service, authorization):
    with pytest.raises(ServiceError) as error:
        post(service, ctx=context(authorization), message_id=service.message_id, kind="opened")
    assert error.value.error_code == HTTPStatus.UNAUTHORIZED
    assert service.store.feedback_frame().empty


def test_an_empty_configured_token_refuses_every_event(service):
    service.config = SimpleNamespace(write_token="")
    with pytest.raises(ServiceError) as error:
        post(service, ctx=context("Bearer "), message_id=service.message_id, kind="opened")
    assert error.value.error_code == HTTPStatus.UNAUTHORIZED


def test_the_body_refuses_unknown_fields_and_blank_ids():
    with pytest.raises(ValidationError, match="message_id"):
        CampaignEventRequest(message_id="  ", kind="opened")
    with pytest.raises(ValidationError, match="extra"):
        CampaignEventRequest(message_id="m", kind="opened", when="now")


# ---- over real HTTP: the route, the guards and the error bodies as served ---------------------


def test_over_http_an_event_is_recorded_once_and_errors_name_what_was_wrong(served, workspace):
    import httpx

    from tests.serving.service_fixtures import API_TOKEN

    # given a message in the served workspace's outbox (written directly: the served day's
    # state is shared by other tests, the outbox is not)
    message_id = "msg-http-0000000000000"
    engine = create_engine(workspace.settings.state_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (message_id, planned_on, due_on, customer_id, campaign_id, "
                "step, channel, template_id, variant, control, context, state, tries, run_id, "
                "created_at) VALUES (:id, :day, :day, 'C1', 'CP_01', 0, 'email', 't', '', false, "
                "'{}', 'sent', 1, 'http-test', :at) ON CONFLICT DO NOTHING"
            ),
            {"id": message_id, "day": date(2026, 5, 20), "at": NOW.replace(tzinfo=None)},
        )
    engine.dispose()
    url, bearer = f"{served.url}/events/campaign", {"Authorization": f"Bearer {API_TOKEN}"}

    def post(body: dict, headers: dict | None = None) -> httpx.Response:
        sent = bearer if headers is None else headers
        return httpx.post(url, json=body, headers=sent, timeout=30)

    # when it is reported clicked twice, then the first records and the repeat does not
    first = post({"message_id": message_id, "kind": "clicked"})
    again = post({"message_id": message_id, "kind": "clicked"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["recorded"], again.json()["recorded"]) == (True, False)
    # and the errors are answered with their status and a body naming the problem
    unknown = post({"message_id": "msg-nope", "kind": "opened"})
    assert unknown.status_code == 404 and "msg-nope" in unknown.json()["error"]
    bad_kind = post({"message_id": message_id, "kind": "bounced"})
    assert bad_kind.status_code == 422 and "kind" in bad_kind.json()["error"]
    assert post({"message_id": message_id, "kind": "opened"}, {}).status_code == 401
    assert post({"message_id": message_id}).status_code == 400
