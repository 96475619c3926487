"""The scoring core: loading the champion by alias, scores, decisions, reasons and API records."""

from __future__ import annotations

import shutil
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.windows import build_features
from models.churn import PREDICTION_COLUMNS, FeatureFrameError
from models.explain import explain_frame
from models.pyfunc import to_pyfunc_input
from serving.scoring import (
    champion_uri,
    decide_learners,
    explain_learners,
    load_champion,
    no_champion_message,
    score_features,
    score_learners,
)
from serving.store_models import STATE_SCHEMA
from tests.serving.fixtures import FIRST_DAY

RECORD_KEYS = {
    "customer_id",
    "as_of",
    "p_churn",
    "p_low",
    "p_high",
    "confidence",
    "current_tag",
    "proposed_tag",
    "rule_id",
    "rule_description",
    "signal",
    "priority",
    "action",
    "control",
    "reasons",
    "model_version",
}
RULES_ONLY_NOTE = "[no model score: decided on rules only]"


@pytest.fixture(scope="module")
def day_features(simulated_log) -> pd.DataFrame:
    """Features of the first 40 learners eligible on FIRST_DAY."""
    features = build_features(simulated_log.events, simulated_log.customers, as_of=[FIRST_DAY])
    return features.head(40).reset_index(drop=True)


@pytest.fixture
def empty_state() -> pd.DataFrame:
    """The state of a store that has never run a batch."""
    return STATE_SCHEMA.validate(pd.DataFrame({name: [] for name in STATE_SCHEMA.columns}))


def test_load_champion_returns_none_when_nothing_is_registered(tmp_path):
    # Given an MLflow store with no registered model
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # When the champion is loaded, Then there is none (and no exception)
    assert load_champion(tracking_uri) is None


def test_load_champion_returns_none_for_an_unknown_model_name(champion_tracking_uri):
    # Given a store whose only model is lstep-churn
    # When another model name is asked for, Then there is no champion
    assert load_champion(champion_tracking_uri, model_name="someone-else") is None


def test_load_champion_loads_the_version_the_alias_points_at(champion_tracking_uri):
    # Given the registry's view of the alias
    client = mlflow.MlflowClient(
        tracking_uri=champion_tracking_uri, registry_uri=champion_tracking_uri
    )
    expected = client.get_model_version_by_alias("lstep-churn", "champion").version
    # When the champion is loaded
    champion = load_champion(champion_tracking_uri)
    # Then it is that version, loaded by alias, and it holds the ChurnModel
    assert champion.version == str(expected)
    assert champion.uri == champion_uri() == "models:/lstep-churn@champion"
    assert champion.model.feature_names


def test_load_champion_leaves_the_process_mlflow_uris_alone(champion_tracking_uri, tmp_path):
    # Given a process pointed at another tracking store
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(other)
    try:
        # When the champion is loaded from the champion store
        load_champion(champion_tracking_uri)
        # Then the process still points at its own store
        assert mlflow.get_tracking_uri() == other
    finally:
        mlflow.set_tracking_uri(None)


def test_no_champion_message_names_the_alias_and_both_ways_out():
    # When the message is built, Then it names the alias URI, `lstep train` and --rules-only
    message = no_champion_message()
    assert "models:/lstep-churn@champion" in message
    assert "lstep train" in message
    assert "--rules-only" in message


def test_scores_are_the_champions_calibrated_predictions(day_features, champion):
    # Given features of 40 learners and the champion
    # When they are scored
    scores = score_features(day_features, champion)
    # Then the scores are the model's predictions, row for row, in the input order
    expected = champion.model.predict(day_features)
    assert scores["customer_id"].tolist() == day_features["customer_id"].tolist()
    for name in PREDICTION_COLUMNS:
        np.testing.assert_allclose(scores[name], expected[name].to_numpy(), atol=1e-12)
    assert (scores["p_low"] <= scores["p_churn"] + 1e-12).all()
    assert (scores["p_churn"] <= scores["p_high"] + 1e-12).all()


def test_scores_without_a_champion_are_missing(day_features):
    # When features are scored in rules-only mode
    scores = score_features(day_features, None)
    # Then every learner has a row, with no score
    assert len(scores) == len(day_features)
    assert scores[list(PREDICTION_COLUMNS)].isna().all().all()


def test_scoring_refuses_a_learner_twice(day_features, champion):
    # Given a frame holding one learner twice
    doubled = pd.concat([day_features.head(2), day_features.head(1)], ignore_index=True)
    # When it is scored, Then the error names the repeated learner
    with pytest.raises(ValueError, match=r"1 rows repeat a customer_id .*C0"):
        score_features(doubled, champion)


def test_scoring_refuses_a_frame_without_keys(day_features, champion):
    # When a frame without as_of is scored, Then the missing key is named
    with pytest.raises(ValueError, match=r"missing key columns \['as_of'\]"):
        score_features(day_features.drop(columns="as_of"), champion)


def test_decisions_refuse_features_of_another_day(day_features, ruleset, empty_state):
    # Given features of FIRST_DAY
    scores = score_features(day_features, None)
    # When they are decided for the next day, Then the error names both days
    with pytest.raises(ValueError, match=r"40 rows are for \['2026-05-10'\], not as_of 2026-05-11"):
        decide_learners(day_features, scores, ruleset, empty_state, date(2026, 5, 11))


def test_decisions_refuse_scores_of_other_learners(day_features, ruleset, empty_state):
    # Given scores of only half of the learners
    scores = score_features(day_features.head(20), None)
    # When all of them are decided, Then the error counts the learners without a score
    with pytest.raises(ValueError, match="20 learners without a score row"):
        decide_learners(day_features, scores, ruleset, empty_state, FIRST_DAY)


def test_records_carry_everything_the_api_returns(day_features, champion, ruleset, empty_state):
    # Given 40 learners the store has never seen
    # When they are scored, decided and explained in one call
    scored = score_learners(
        day_features, champion=champion, ruleset=ruleset, state=empty_state, as_of=FIRST_DAY
    )
    records = scored.to_records()
    # Then each record has exactly the API's fields, the model version and three reasons
    assert [record["customer_id"] for record in records] == day_features["customer_id"].tolist()
    for record in records:
        assert set(record) == RECORD_KEYS
        assert record["as_of"] == "2026-05-10"
        assert record["model_version"] == champion.version
        assert record["current_tag"] is None  # new learners
        assert record["proposed_tag"] in {"ST_001", "ST_002", "ST_003", "ST_004"}
        assert record["rule_id"] is not None
        assert len(record["reasons"]) == 3
        assert {"feature", "value", "points", "text"} == set(record["reasons"][0])
        assert record["p_low"] <= record["p_churn"] <= record["p_high"]


def test_records_match_the_decisions_they_come_from(day_features, champion, ruleset, empty_state):
    # Given the scored learners
    scored = score_learners(
        day_features, champion=champion, ruleset=ruleset, state=empty_state, as_of=FIRST_DAY
    )
    # When they become records
    records = {record["customer_id"]: record for record in scored.to_records()}
    # Then each record's tag, rule, priority and control flag are its decision's
    for decision in scored.decisions.to_dict("records"):
        record = records[decision["customer_id"]]
        assert record["proposed_tag"] == decision["to_tag"]
        assert record["rule_id"] == decision["rule_id"]
        assert record["priority"] == decision["priority"]
        assert record["control"] is bool(decision["control"])


def test_one_call_equals_the_three_steps_and_the_pyfunc(
    day_features, champion, ruleset, empty_state
):
    # Given the champion and 40 learners
    # When they are scored in one call (one model matrix, the model called directly)
    scored = score_learners(
        day_features, champion=champion, ruleset=ruleset, state=empty_state, as_of=FIRST_DAY
    )
    # Then scores, decisions and reasons are those of the three public steps
    scores = score_features(day_features, champion)
    pd.testing.assert_frame_equal(scored.scores, scores)
    decisions = decide_learners(day_features, scores, ruleset, empty_state, FIRST_DAY)
    pd.testing.assert_frame_equal(scored.decisions, decisions)
    assert scored.reasons == explain_learners(day_features, champion)
    # And the scores are the registered pyfunc's, which external users load
    by_pyfunc = champion.pyfunc.predict(to_pyfunc_input(day_features, champion.model))
    for name in PREDICTION_COLUMNS:
        np.testing.assert_array_equal(scored.scores[name], by_pyfunc[name].to_numpy())


def test_scoring_refuses_a_missing_flag_as_the_pyfunc_does(day_features, champion):
    # Given a learner whose flag is missing
    features = day_features.astype({"is_cold_start": "object"})
    features.loc[0, "is_cold_start"] = None
    # When / then scoring names the flag column, on both paths
    with pytest.raises(FeatureFrameError, match="is_cold_start"):
        score_features(features, champion)
    with pytest.raises(FeatureFrameError, match="is_cold_start"):
        score_learners(features, champion=champion, ruleset=None, state=None, as_of=FIRST_DAY)


def test_rules_only_records_say_so(day_features, ruleset, empty_state):
    # When learners are scored without a champion
    scored = score_learners(
        day_features, champion=None, ruleset=ruleset, state=empty_state, as_of=FIRST_DAY
    )
    # Then no record has a score, a model version or reasons, and each says rules decided
    assert scored.rules_only
    for record in scored.to_records():
        assert record["p_churn"] is None
        assert record["model_version"] is None
        assert record["reasons"] == []
        assert record["rule_description"].endswith(RULES_ONLY_NOTE)


def test_explanations_give_each_learner_their_top_reasons(day_features, champion):
    # When five learners are explained with top=2
    reasons = explain_learners(day_features.head(5), champion, top=2)
    # Then each has two reasons, the larger first
    assert list(reasons) == day_features["customer_id"].head(5).tolist()
    for learner_reasons in reasons.values():
        assert len(learner_reasons) == 2
        assert abs(learner_reasons[0].points) >= abs(learner_reasons[1].points)
    # and they are the first two of each learner's full breakdown
    full = explain_frame(champion.model, day_features.head(5))
    assert list(reasons.values()) == [explanation.top(2) for explanation in full]


def test_champion_loads_in_a_copy_of_the_store(champion_tracking_uri, tmp_path):
    # Given a copy of the registry database (artifacts stay where they were logged)
    source = champion_tracking_uri.removeprefix("sqlite:///")
    copy = tmp_path / "copy.db"
    shutil.copyfile(source, copy)
    # When the champion is loaded from the copy
    champion = load_champion(f"sqlite:///{copy}")
    # Then it is found by its alias there too
    assert champion is not None
