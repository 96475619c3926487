"""The service classes called directly: scores, parity of the feature paths, errors, auth, apply.

The service reads its configuration from the environment, as under ``bentoml serve``: the module
fixture points it at the served workspace (``service_fixtures``) and fixes its clock at the
simulated world's present.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date, timedelta
from http import HTTPStatus
from types import SimpleNamespace

import bentoml
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.windows import build_features
from models.matrix import model_feature_names
from serving.api.bento import (
    SERVED_MODEL_TAG,
    ServiceSettings,
    import_champion,
    load_served_champion,
    serve,
    service_environment,
)
from serving.api.models import (
    CustomerIn,
    EventIn,
    ExplainRequest,
    OverrideRequest,
    ScoreRequest,
    StatusRequest,
)
from serving.api.problems import ServiceError, check_bearer, error_body, http_problems
from serving.api.service import LstepService, load_online
from serving.app.online import Limits, check_size, in_process
from serving.core.asks import LearnerAsk
from serving.core.assess import score_features
from serving.core.problems import NoChampionError
from serving.infra.learners import LearnerData, day_features
from serving.infra.store import StateStore
from tests.serving.fixtures import NOW
from tests.serving.service_fixtures import (
    API_TOKEN,
    MAX_BATCH,
    OTHER_DAY,
    SNAPSHOT_DAY,
    ServedWorkspace,
)

RULES_ONLY_NOTE = "[no model score: decided on rules only]"


def context(authorization: str | None = None) -> SimpleNamespace:
    """What the service reads of ``bentoml.Context``: the request's headers."""
    headers = {} if authorization is None else {"authorization": authorization}
    return SimpleNamespace(request=SimpleNamespace(headers=headers, scope={}))


BEARER = context(f"Bearer {API_TOKEN}")


@pytest.fixture(scope="module")
def service(workspace: ServedWorkspace) -> Iterator[LstepService]:
    """``LstepService()`` configured from the workspace environment, clock at ``NOW``."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in workspace.environment.items():
            if name.startswith(("LSTEP_", "BENTOML_")):
                patch.setenv(name, value)
        instance = LstepService()
        instance.clock = lambda: NOW
        yield instance


@pytest.fixture(scope="module")
def snapshot(workspace) -> pd.DataFrame:
    """The batch job's features of ``SNAPSHOT_DAY``."""
    return pd.read_parquet(workspace.settings.data_path / "features" / "as_of=2026-05-20.parquet")


def score(service, learners, as_of=SNAPSHOT_DAY, apply=False, ctx=None):
    request = ScoreRequest(learners=learners, as_of=as_of, apply=apply)
    return asyncio.run(service.score(request, ctx=ctx or context()))


def by_id(*customer_ids: str) -> list[dict]:
    return [{"customer_id": customer_id} for customer_id in customer_ids]


def stored_events(workspace, customer_id: str, as_of: date) -> list[dict]:
    """A learner's whole history before ``as_of`` from the event store, as inline events."""
    events = pd.read_parquet(workspace.settings.data_path / "events.parquet")
    mine = events[
        (events["customer_id"] == customer_id) & (events["ts"] < pd.Timestamp(as_of, tz="UTC"))
    ]
    return [
        {
            key: (None if pd.isna(value) else value)
            for key, value in row.items()
            if key != "customer_id"
        }
        for row in mine.to_dict("records")
    ]


# --- scores by id ---------------------------------------------------------------------------------


def test_by_id_on_the_snapshot_day_gives_the_batch_jobs_scores(service, workspace, snapshot):
    # given three learners the batch job scored on its latest day
    ids = list(snapshot["customer_id"].iloc[[0, 7, 21]])
    with workspace.open_store() as store:
        stored = store.scores_frame(SNAPSHOT_DAY).set_index("customer_id")
        current = {customer_id: store.current(customer_id)["tag"] for customer_id in ids}
    # when they are scored by id on that day
    response = score(service, by_id(*ids))
    # then the features come from the snapshot and the scores are the batch job's
    assert [learner.customer_id for learner in response.learners] == ids
    for learner in response.learners:
        assert learner.feature_source == "snapshot"
        assert learner.p_churn == pytest.approx(
            stored.at[learner.customer_id, "p_churn"], abs=1e-12
        )
        assert learner.current_tag == current[learner.customer_id]
        assert learner.p_low <= learner.p_churn <= learner.p_high
        assert 0 < len(learner.reasons) <= 3
        # a rule that neither moved nor held the learner leaves no words
        if learner.rule_id is None and " held by " not in learner.rule_description:
            assert learner.why is None
    assert response.dry_run and not response.rules_only and response.transitions_written == 0


def test_by_id_on_the_snapshot_day_is_answered_from_the_days_answers(
    service, snapshot, monkeypatch
):
    # given the on-demand path out of reach (the features process and assess)
    def unreachable(*args, **kwargs):
        raise AssertionError("the scorer was called")

    monkeypatch.setattr(service.online, "_assess", unreachable)
    ids = list(snapshot["customer_id"].iloc[[40, 41, 42]])
    # when learners are scored by id on the snapshot day, then the day's answers serve them
    response = score(service, by_id(*ids))
    assert [learner.customer_id for learner in response.learners] == ids
    assert {learner.feature_source for learner in response.learners} == {"snapshot"}
    assert all(len(learner.reasons) == 3 for learner in response.learners)
    # while another day, inline events or apply are assessed on demand
    with pytest.raises(AssertionError, match="the scorer was called"):
        score(service, by_id(*ids), as_of=OTHER_DAY)
    with pytest.raises(AssertionError, match="the scorer was called"):
        score(service, by_id(*ids), apply=True, ctx=BEARER)


def test_by_id_on_another_day_computes_features_from_the_stored_events(
    service, workspace, champion
):
    # given a day without a feature snapshot
    ids = ["C0000003", "C0000042"]
    # when the learners are scored on it
    response = score(service, by_id(*ids), as_of=OTHER_DAY)
    # then their features are build_features' over the event store, and so are the scores
    data = workspace.settings.data_path
    spine = pd.DataFrame({"customer_id": ids, "as_of": pd.Timestamp(OTHER_DAY)})
    expected = score_features(
        build_features(data / "events.parquet", data / "customers.parquet", spine=spine), champion
    ).set_index("customer_id")
    for learner in response.learners:
        assert learner.feature_source == "event_store"
        assert learner.p_churn == pytest.approx(
            expected.at[learner.customer_id, "p_churn"], abs=1e-12
        )


def test_inline_events_give_the_same_features_and_scores_as_by_id(service, workspace, snapshot):
    # given learners of the snapshot, some of whom never used some event types
    ids = list(snapshot["customer_id"].iloc[[1, 2, 3, 5, 8]])
    events = pd.read_parquet(workspace.settings.data_path / "events.parquet")
    logged_types = set(events["event_type"])
    learner_types = events[events["customer_id"].isin(ids)].groupby("customer_id")["event_type"]
    assert any(set(types) < logged_types for _, types in learner_types), "pick other learners"
    data = service.data
    inline = [
        LearnerAsk(c, SNAPSHOT_DAY, NOW, events=tuple(stored_events(workspace, c, SNAPSHOT_DAY)))
        for c in ids
    ]
    stored = [LearnerAsk(c, SNAPSHOT_DAY, NOW) for c in ids]
    # when their features are computed from the request's events and from the event store
    from_request = day_features(inline, data)
    from_store = day_features(stored, data)
    # then the features agree (to float summation order) and so do the served records
    assert set(from_request.sources.values()) == {"inline"}
    pd.testing.assert_frame_equal(
        from_request.frame.set_index("customer_id").loc[ids],
        from_store.frame.set_index("customer_id").loc[ids],
        check_exact=False,
        rtol=1e-12,
    )
    inline_learners = [{"customer_id": ask.customer_id, "events": ask.events} for ask in inline]
    with_events = score(service, inline_learners).learners
    with_ids = score(service, by_id(*ids)).learners
    for a, b in zip(with_events, with_ids, strict=True):
        assert a.p_churn == pytest.approx(b.p_churn, abs=1e-12)
        assert (a.proposed_tag, a.rule_id, a.priority, a.control) == (
            b.proposed_tag,
            b.rule_id,
            b.priority,
            b.control,
        )
        assert [r.feature for r in a.reasons] == [r.feature for r in b.reasons]


# --- errors ---------------------------------------------------------------------------------------


def test_an_unknown_learner_is_404_naming_them(service):
    # given one known and one unknown learner, when they are scored, then the unknown one is named
    with pytest.raises(ServiceError, match="NOBODY-1") as raised:
        score(service, by_id("C0000003", "NOBODY-1"))
    assert raised.value.error_code == HTTPStatus.NOT_FOUND


def test_more_learners_than_the_limit_is_413(service):
    # given one learner more than LSTEP_MAX_BATCH
    learners = by_id(*(f"C{number:07d}" for number in range(MAX_BATCH + 1)))
    # when scored, then 413 before any scoring
    with pytest.raises(ServiceError, match="LSTEP_MAX_BATCH") as raised:
        score(service, learners)
    assert raised.value.error_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_an_as_of_after_today_is_422(service):
    with pytest.raises(ServiceError, match="after today") as raised:
        score(service, by_id("C0000003"), as_of=NOW.date() + timedelta(days=1))
    assert raised.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY


@pytest.mark.parametrize(
    ("event", "enrolled_at", "named"),
    [
        ({"ts": "2026-03-01T10:00:00Z", "event_type": "session"}, "2026-04-01T00:00:00Z", "enrol"),
        ({"ts": "2026-07-01T10:00:00Z", "event_type": "session"}, "2026-01-01T00:00:00Z", "future"),
    ],
)
def test_inline_data_that_breaks_the_contracts_is_422_naming_the_column(
    service, event, enrolled_at, named
):
    # given a new learner whose events break the contracts (before enrolment, after now)
    learner = {
        "customer_id": "NEW-1",
        "events": [event],
        "customer": {"product_tag": "PT_001", "enrolled_at": enrolled_at, "mrr": 10.0},
    }
    # when scored, then 422 names the column and the problem
    with pytest.raises(ServiceError, match=f"(?i)ts.*{named}|{named}.*ts") as raised:
        score(service, [learner])
    assert raised.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY


def test_applying_a_learner_the_customers_store_does_not_hold_is_refused(service, workspace):
    # given a learner known only from the customer record sent with their events
    learner = {
        "customer_id": "GHOST-1",
        "events": [{"ts": "2026-05-18T09:00:00Z", "event_type": "session", "duration_s": 60.0}],
        "customer": {"product_tag": "PT_001", "enrolled_at": "2026-04-01T00:00:00Z", "mrr": 9.0},
    }
    with workspace.open_store() as store:
        before = len(store.transitions_frame())
    # when their move is applied, then 409 names them and nothing is written
    with pytest.raises(
        ServiceError, match=r"GHOST-1.*not in the event store's customers"
    ) as raised:
        score(service, [learner], as_of=OTHER_DAY, apply=True, ctx=BEARER)
    assert raised.value.error_code == HTTPStatus.CONFLICT
    with workspace.open_store() as store:
        assert len(store.transitions_frame()) == before and store.current("GHOST-1") is None
    # while a dry run still scores them
    assert score(service, [learner], as_of=OTHER_DAY).learners[0].feature_source == "inline"


@pytest.mark.parametrize(
    ("model", "fields", "said"),
    [
        (EventIn, {"ts": 1767225600, "event_type": "session"}, "is a number"),
        (
            EventIn,
            {"ts": "2026-05-01T00:00:00Z", "event_type": "session", "duration_s": "60"},
            "is text",
        ),
        (CustomerIn, {"product_tag": "PT_001", "enrolled_at": 0}, "is a number"),
        (CustomerIn, {"product_tag": "PT_001", "enrolled_at": "2026-01-01", "mrr": "9"}, "is text"),
    ],
)
def test_the_api_takes_what_the_file_contracts_take_no_more(model, fields, said):
    # when a timestamp comes as a number or a quantity as text, then the body is refused (400)
    with pytest.raises(ValidationError, match=said):
        model.model_validate(fields)
    with pytest.raises(ValidationError, match=said):
        model.model_validate_json(json.dumps(fields))


def test_an_enrolment_before_any_course_log_is_422_as_in_the_files(service):
    learner = {
        "customer_id": "NEW-3",
        "events": [{"ts": "2026-05-02T09:00:00Z", "event_type": "session", "duration_s": 60.0}],
        "customer": {"product_tag": "PT_001", "enrolled_at": "0001-01-01T00:00:00Z", "mrr": 9.0},
    }
    with pytest.raises(ServiceError, match="enrolled_at before 2000-01-01") as raised:
        score(service, [learner])
    assert raised.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY


def test_a_new_learner_with_events_and_a_customer_record_is_scored(service):
    # given a learner the event store does not know, with their record and recent sessions
    events = [
        {"ts": f"2026-05-{day:02d}T09:00:00Z", "event_type": "session", "duration_s": 1200.0}
        for day in (2, 9, 16)
    ]
    learner = {
        "customer_id": "NEW-2",
        "events": events,
        "customer": {"product_tag": "PT_003", "enrolled_at": "2026-04-25T00:00:00Z", "mrr": None},
    }
    # when scored, then from the inline data, as a new learner
    (record,) = score(service, [learner]).learners
    assert record.feature_source == "inline"
    assert record.current_tag is None and record.proposed_tag is not None
    assert 0.0 <= record.p_churn <= 1.0


# --- apply, override, status ----------------------------------------------------------------------


def movers(service, snapshot, day=OTHER_DAY) -> list:
    """Learners whose proposed tag differs from their stored one on ``day`` (dry runs).

    Searched from the end of the snapshot: the other tests use its first learners.
    """
    found = []
    candidates = list(snapshot["customer_id"])[::-1]
    for start in range(0, len(candidates), MAX_BATCH):
        ids = candidates[start : start + MAX_BATCH]
        response = score(service, by_id(*ids), as_of=day)
        found += [r for r in response.learners if r.current_tag and r.proposed_tag != r.current_tag]
        if len(found) >= 3:
            return found[:3]
    return found


def test_apply_without_the_token_is_401_and_changes_nothing(service, workspace, snapshot):
    # given learners with a proposed move and the audit log before
    moving = movers(service, snapshot)
    assert moving, "no learner moves on OTHER_DAY: the workspace lost its meaning"
    with workspace.open_store() as store:
        before = len(store.transitions_frame())
    # when apply is asked without a token and with a wrong one, then 401 and nothing is written
    for ctx in (context(), context("Bearer not-the-token"), context(API_TOKEN)):
        with pytest.raises(ServiceError) as raised:
            score(
                service,
                by_id(*(r.customer_id for r in moving)),
                as_of=OTHER_DAY,
                apply=True,
                ctx=ctx,
            )
        assert raised.value.error_code == HTTPStatus.UNAUTHORIZED
    with workspace.open_store() as store:
        assert len(store.transitions_frame()) == before


def test_apply_with_the_token_writes_the_proposed_moves(service, workspace, snapshot):
    # given learners with a proposed move
    moving = {r.customer_id: r.proposed_tag for r in movers(service, snapshot)}
    # when applied with the token
    response = score(service, by_id(*moving), as_of=OTHER_DAY, apply=True, ctx=BEARER)
    # then each move is written as a transition of an api run and the status follows
    assert response.transitions_written == len(moving)
    with workspace.open_store() as store:
        for customer_id, tag in moving.items():
            assert store.current(customer_id)["tag"] == tag
            last = store.history(customer_id).iloc[-1]
            assert last["to_tag"] == tag and last["run_id"].startswith("api-")
    # and applying again proposes nothing more (the learners now sit in their new tag)
    again = score(service, by_id(*moving), as_of=OTHER_DAY, apply=True, ctx=BEARER)
    assert again.transitions_written == 0


def test_override_needs_the_token_and_then_holds_the_learner_from_the_next_data_day(
    service, workspace, snapshot
):
    # given a learner of the snapshot day who is not at risk (a person may move them to ST_004)
    with workspace.open_store() as store:
        state = store.state_frame()
    live = state[state["tag"].isin(["ST_001", "ST_002", "ST_003"])]
    customer_id = snapshot.loc[snapshot["customer_id"].isin(live["customer_id"]), "customer_id"]
    customer_id = customer_id.iloc[30]
    request = OverrideRequest(
        customer_id=customer_id, tag="ST_004", actor="cs-lead", reason="call went badly"
    )
    with workspace.open_store() as store:
        before = store.current(customer_id)
    # when overridden without the token, then 401 and nothing changes
    with pytest.raises(ServiceError) as raised:
        service.override(request, ctx=context("Bearer wrong"))
    assert raised.value.error_code == HTTPStatus.UNAUTHORIZED
    with workspace.open_store() as store:
        assert store.current(customer_id) == before
    # when overridden with it, then the learner is held at ST_004 by that person, from the data
    # day after the latest batch day (the snapshot day), whatever the wall clock says
    status = service.override(request, ctx=BEARER)
    next_day = SNAPSHOT_DAY + timedelta(days=1)
    assert status.tag == "ST_004" and status.override.actor == "cs-lead"
    assert (status.override.kind, status.override.effective_as_of) == ("hold", next_day)
    assert status.history[-1].to_tag == "ST_004" and status.history[-1].as_of == next_day
    # and /score of the snapshot day still answers as that day was decided
    assert score(service, by_id(customer_id)).learners[0].current_tag == before["tag"]
    # while the next day starts from the person's tag
    assert score(service, by_id(customer_id), as_of=next_day).learners[0].current_tag == "ST_004"


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_token_refuses_every_write_and_warns(
    service, workspace, snapshot, blank, monkeypatch
):
    # given the service configured with an empty LSTEP_API_TOKEN (as `LSTEP_API_TOKEN= lstep serve`)
    monkeypatch.setenv("LSTEP_API_TOKEN", blank)
    config = ServiceSettings()
    monkeypatch.setattr(service, "config", config)
    customer_id = snapshot["customer_id"].iloc[31]
    with workspace.open_store() as store:
        before = store.current(customer_id)
    request = OverrideRequest(customer_id=customer_id, tag="ST_005", actor="x", reason="probe")
    # when an override or an apply comes with an empty bearer, then 401 and nothing is written
    for ctx in (context("Bearer"), context("Bearer "), context(f"Bearer {blank}")):
        with pytest.raises(ServiceError) as raised:
            service.override(request, ctx=ctx)
        assert raised.value.error_code == HTTPStatus.UNAUTHORIZED
        with pytest.raises(ServiceError) as raised:
            score(service, by_id(customer_id), as_of=OTHER_DAY, apply=True, ctx=ctx)
        assert raised.value.error_code == HTTPStatus.UNAUTHORIZED
    with workspace.open_store() as store:
        assert store.current(customer_id) == before
    # and start-up says why writes are off
    assert config.write_token is None and "empty" in config.token_warning()


def test_a_set_token_enables_writes_without_a_warning():
    assert ServiceSettings(api_token="s3cret").write_token == "s3cret"
    assert ServiceSettings(api_token="s3cret").token_warning() is None
    assert "not set" in ServiceSettings(api_token=None).token_warning()


def test_status_gives_the_tag_and_the_whole_history(service, workspace, snapshot):
    customer_id = snapshot["customer_id"].iloc[11]
    status = service.status(StatusRequest(customer_id=customer_id), ctx=context())
    with workspace.open_store() as store:
        history = store.history(customer_id)
    assert status.tag == history["to_tag"].iloc[-1]
    assert [t.to_tag for t in status.history] == list(history["to_tag"])
    # and each move quotes the words of why its rule fired, as the audit log keeps them
    assert [t.why for t in status.history] == [
        None if pd.isna(why) else why for why in history["why"]
    ]
    # and the latest batch day's score and intervention, as stored
    with workspace.open_store() as store:
        stored = store.latest_score(customer_id)
    assert status.score is not None and status.score.as_of == stored["as_of"]
    assert (status.score.priority, status.score.action) == (stored["priority"], stored["action"])
    assert status.score.p_churn == pytest.approx(stored["p_churn"])
    # and its lifetime projection: months within the 24-month cap, mrr x months as stored
    assert 1.0 <= status.score.expected_months <= 24.0
    assert status.score.expected_months == pytest.approx(stored["expected_months"])
    assert status.score.projected_value == pytest.approx(stored["projected_value"], nan_ok=True)
    with pytest.raises(ServiceError) as raised:
        service.status(StatusRequest(customer_id="NOBODY-2"), ctx=context())
    assert raised.value.error_code == HTTPStatus.NOT_FOUND


# --- explain --------------------------------------------------------------------------------------


def test_explain_gives_every_feature_and_the_points_add_up(service, snapshot):
    customer_id = snapshot["customer_id"].iloc[4]
    explanation = asyncio.run(
        service.explain(ExplainRequest(customer_id=customer_id, as_of=SNAPSHOT_DAY), ctx=context())
    )
    (scored,) = score(service, by_id(customer_id)).learners
    assert sorted(r.feature for r in explanation.reasons) == sorted(model_feature_names())
    total = sum(r.points for r in explanation.reasons)
    assert total == pytest.approx(100 * (explanation.p_raw - explanation.p_base), abs=1e-9)
    assert explanation.p_churn == pytest.approx(scored.p_churn, abs=1e-12)
    points = [abs(r.points) for r in explanation.reasons]
    assert points == sorted(points, reverse=True)


# --- start-up modes -------------------------------------------------------------------------------


def local_online(settings, config):
    """The service's online path, loaded as the service loads it, features assembled in-process."""
    store = StateStore.from_settings(settings)
    fetch = in_process(LearnerData.open(settings.data_path))
    return load_online(settings, config, store, reference=None, fetch=fetch)


def test_rules_only_scores_without_a_model_and_says_so(workspace, snapshot):
    # given the service's online path started in rules-only mode
    online = local_online(workspace.settings, ServiceSettings(rules_only=True))
    ids = list(snapshot["customer_id"].iloc[:5])
    asks = [LearnerAsk(c, OTHER_DAY, NOW) for c in ids]
    # when learners are scored
    result = asyncio.run(online.score(asks, apply=False, now=NOW))
    # then no score, no model version, and every decision says it was made on rules alone
    assert [record["customer_id"] for record in result.records] == ids
    for record in result.records:
        assert record["p_churn"] is None and record["model_version"] is None
        assert record["reasons"] == []
        assert record["rule_description"].endswith(RULES_ONLY_NOTE)
    # and explaining is refused: there is no model (409)
    with pytest.raises(ServiceError) as raised, http_problems():
        asyncio.run(online.explain(asks[0]))
    assert raised.value.error_code == HTTPStatus.CONFLICT


def test_without_a_champion_the_service_stops_with_a_clear_message(workspace, caplog):
    # given a registered model name no version of which holds the champion alias
    settings = workspace.settings.model_copy(update={"model_name": "nobody-trained-this"})
    # when the service loads, then it refuses, with the fix in the message and in the log
    with pytest.raises(NoChampionError, match=r"lstep train.*LSTEP_RULES_ONLY"):
        local_online(settings, ServiceSettings())
    assert "cannot start" in caplog.text


def test_the_champion_is_loaded_from_the_bentoml_store(workspace, champion):
    # given the champion imported into the BentoML store, when the service loads it from there
    loaded = load_served_champion(workspace.settings, bentoml.models.BentoModel(SERVED_MODEL_TAG))
    # then it is the same registered version, and scores the same
    assert loaded.version == champion.version
    assert loaded.uri == f"models:/lstep-churn/{champion.version}"
    data = workspace.settings.data_path
    features = build_features(
        data / "events.parquet", data / "customers.parquet", as_of=[SNAPSHOT_DAY]
    ).head(20)
    np.testing.assert_array_equal(
        score_features(features, loaded)["p_churn"], score_features(features, champion)["p_churn"]
    )


# --- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token", "accepted"),
    [
        ("Bearer s3cret", "s3cret", True),
        ("bearer s3cret", "s3cret", True),
        (None, "s3cret", False),
        ("s3cret", "s3cret", False),
        ("Basic s3cret", "s3cret", False),
        ("Bearer s3cre", "s3cret", False),
        ("Bearer s3cret", None, False),
        # an empty secret is no secret: a blank configured token matches nothing, not even blank
        ("Bearer ", "", False),
        ("Bearer", "", False),
        ("Bearer   ", "  ", False),
        ("Bearer s3cret", "", False),
    ],
)
def test_only_the_configured_bearer_token_is_accepted(header, token, accepted):
    if accepted:
        check_bearer(header, token)
        return
    with pytest.raises(ServiceError) as raised, http_problems():
        check_bearer(header, token)
    assert raised.value.error_code == HTTPStatus.UNAUTHORIZED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'[{"error": "unknown learner X"}]', {"error": "unknown learner X"}),
        (
            b'{"error": "2 validation errors", "detail": [{"loc": ["learners", 0, "customer_id"],'
            b' "msg": "too short"}, {"loc": ["aply"], "msg": "Extra inputs are not permitted"}]}',
            {
                "error": "invalid request body: learners.0.customer_id: too short",
                "detail": "learners.0.customer_id: too short; aply: Extra inputs are not permitted",
            },
        ),
        (b'{"error": "Authorization error"}', {"error": "Authorization error"}),
    ],
)
def test_error_bodies_get_the_documented_shape(raw, expected):
    import json

    assert json.loads(error_body(raw)) == expected


@pytest.mark.parametrize(
    ("learners", "events_each", "named"),
    [(3, 0, "LSTEP_MAX_BATCH"), (2, 3, "LSTEP_MAX_EVENTS"), (2, 2, None)],
)
def test_requests_above_the_configured_sizes_are_413(learners, events_each, named):
    limits = Limits(max_learners=2, max_events=5)
    event = {"ts": "2026-05-01T00:00:00Z", "event_type": "session"}
    request = ScoreRequest(
        learners=[
            {"customer_id": f"L{n}", "events": [event] * events_each if events_each else None}
            for n in range(learners)
        ]
    )
    if named is None:
        check_size(len(request.learners), request.event_count, limits)
        return
    with pytest.raises(ServiceError, match=named) as raised, http_problems():
        check_size(len(request.learners), request.event_count, limits)
    assert raised.value.error_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


# --- lstep serve (serving.api.bento) ---------------------------------------------------------


def test_importing_the_champion_again_reuses_the_stored_copy(workspace):
    # given the workspace whose champion was imported when it was built
    # when imported again, then the same tag comes back and the store holds one copy
    assert import_champion(workspace.settings) == workspace.bento_tag
    assert len(bentoml.models.list("lstep-churn")) == 1


def test_the_service_environment_names_every_location_absolutely(workspace):
    environment = service_environment(workspace.settings, base={})
    for name in ("BENTOML_HOME", "LSTEP_HOME", "LSTEP_DATA_DIR"):
        assert environment[name].startswith("/")
    assert environment["LSTEP_STATE_URL"] == workspace.settings.state_database_url
    assert environment["BENTOML_DO_NOT_TRACK"] == "true"


def test_serve_refuses_to_start_without_a_champion(workspace, monkeypatch):
    # given no champion under the model name and rules-only not asked for
    monkeypatch.delenv("LSTEP_RULES_ONLY", raising=False)
    settings = workspace.settings.model_copy(update={"model_name": "nobody-trained-this"})
    # when lstep serve starts, then it stops before starting the server, saying how to fix it
    with pytest.raises(NoChampionError, match="LSTEP_RULES_ONLY"):
        serve(settings, port=1)


class _Loaded:
    """A loaded object that can be referenced weakly."""


def test_settle_heap_takes_what_is_loaded_out_of_the_collectors_walk():
    # given objects made by loading: a cycle the loading left behind, and a kept structure
    import gc
    import weakref

    from serving.api.service import settle_heap

    garbage = _Loaded()
    garbage.itself = garbage
    garbage_ref = weakref.ref(garbage)
    del garbage
    kept = {"loaded": [1, 2, 3]}
    frozen_before = gc.get_freeze_count()
    try:
        # when the heap is settled
        settle_heap()
        # then the kept structure is frozen (no collection walks it) and the garbage was
        # collected first, not frozen for good
        assert gc.get_freeze_count() > frozen_before
        assert not any(o is kept for o in gc.get_objects())
        assert garbage_ref() is None
    finally:
        gc.unfreeze()
