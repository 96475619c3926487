"""assess: scores, decisions, reasons (model and risk indicators) and the API's records."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.catalog import load_catalog
from features.windows import build_features
from models.churn import PREDICTION_COLUMNS
from models.explain import explain_frame
from models.matrix import SMALL_BATCH_ROWS, FeatureFrameError
from models.pyfunc import to_pyfunc_input
from serving.core.assess import AssessOptions, assess, decide_learners, score_features
from serving.core.frames import empty_state as no_state
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
    "why",
    "signal",
    "priority",
    "over_capacity",
    "action",
    "campaign_id",
    "channel",
    "control",
    "behaviour_tags",
    "value_at_risk",
    "expected_months",
    "projected_value",
    "reasons",
    "risk_indicators",
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
    return no_state()


def assessed(features, champion, ruleset, state, explain=True, top_reasons=3):
    """``assess`` on FIRST_DAY, explained in one pass as the online path does."""
    options = AssessOptions(top_reasons=top_reasons, explain=explain)
    return assess(
        features, champion=champion, ruleset=ruleset, state=state, as_of=FIRST_DAY, options=options
    )


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


def test_deciding_leaves_the_callers_features_as_they_were(
    day_features, champion, ruleset, empty_state
):
    # Given a feature frame without score columns, and one that still carries old ones
    before = day_features.copy()
    stale = day_features.assign(p_churn=0.5)
    # When both are scored and decided
    for features in (day_features, stale):
        scores = score_features(features, champion)
        decide_learners(features, scores, ruleset, empty_state, FIRST_DAY)
    # Then neither frame was changed: no score column added, none overwritten
    pd.testing.assert_frame_equal(day_features, before)
    assert (stale["p_churn"] == 0.5).all() and "confidence" not in stale


def test_records_carry_everything_the_api_returns(day_features, champion, ruleset, empty_state):
    # Given 40 learners the store has never seen
    # When they are scored, decided and explained in one call
    scored = assessed(day_features, champion, ruleset, empty_state)
    records = scored.records()
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
        # a few learners decided without the rest of their day: the capacity is not applied
        assert record["over_capacity"] is None
        assert all(tag.startswith("BT_") for tag in record["behaviour_tags"])
        # every tag a learner can reach has a default campaign, so every tagged decision has one
        assert record["campaign_id"] is not None and record["channel"] is not None


def test_records_match_the_decisions_they_come_from(day_features, champion, ruleset, empty_state):
    # Given the scored learners
    scored = assessed(day_features, champion, ruleset, empty_state)
    # When they become records
    records = {record["customer_id"]: record for record in scored.records()}
    # Then each record's tag, rule, priority and control flag are its decision's
    for decision in scored.decisions.to_dict("records"):
        record = records[decision["customer_id"]]
        assert record["proposed_tag"] == decision["to_tag"]
        assert record["rule_id"] == decision["rule_id"]
        assert record["priority"] == decision["priority"]
        assert record["control"] is bool(decision["control"])
        assert record["why"] == (None if pd.isna(decision["why"]) else decision["why"])


def test_positions_of_some_learners_are_their_rows_in_the_order_asked(
    day_features, ruleset, empty_state
):
    # Given a day's assessment, and some of its learners asked for out of order, one twice
    scored = assessed(day_features, None, ruleset, empty_state)
    ids = scored.scores["customer_id"].astype(str).tolist()
    asked = [ids[5], ids[0], ids[5], ids[-1]]
    # When / Then each is its row, in the order asked; all of them in order are every row
    assert scored.positions_of(asked) == [5, 0, 5, len(ids) - 1]
    assert scored.positions_of(pd.Series(ids, dtype="str")) == list(range(len(ids)))
    # And a learner the day does not hold is named
    with pytest.raises(KeyError, match="nobody"):
        scored.positions_of([ids[1], "nobody"])


def test_a_record_says_in_the_catalogs_words_why_its_rule_fired(
    day_features, champion, ruleset, empty_state
):
    # Given 40 new learners assessed with the champion
    records = assessed(day_features, champion, ruleset, empty_state).records()
    # Then the default entry rule (no condition) says nothing, and every other rule says why
    by_rule = {}
    for record in records:
        by_rule.setdefault(record["rule_id"], []).append(record["why"])
    assert all(why is None for why in by_rule.pop("R01", []))
    assert by_rule and all(why for whys in by_rule.values() for why in whys)
    # And the words are the catalog's, not column names
    assert not any("risk_" in why or "_30d" in why for whys in by_rule.values() for why in whys)


def test_one_call_equals_the_three_steps_and_the_pyfunc(
    day_features, champion, ruleset, empty_state
):
    # Given the champion and 40 learners
    # When they are assessed in one pass (one model matrix, the model called directly)
    scored = assessed(day_features, champion, ruleset, empty_state)
    # Then scores, decisions and reasons are those of the steps, and of reasons asked later
    scores = score_features(day_features, champion)
    pd.testing.assert_frame_equal(scored.scores, scores)
    decisions = decide_learners(day_features, scores, ruleset, empty_state, FIRST_DAY)
    pd.testing.assert_frame_equal(scored.decisions, decisions)
    later = assessed(day_features, champion, ruleset, empty_state, explain=False)
    everyone = list(range(len(day_features)))
    assert scored.reasons(everyone) == later.reasons(everyone)
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
        assessed(features, champion, None, None)


def test_rules_only_records_say_so(day_features, ruleset, empty_state):
    # When learners are scored without a champion
    scored = assessed(day_features, None, ruleset, empty_state)
    # Then no record has a score, a model version or reason codes, and each says rules decided
    assert scored.rules_only
    for record in scored.records():
        assert record["p_churn"] is None
        assert record["model_version"] is None
        assert record["reasons"] == []
        assert record["rule_description"].endswith(RULES_ONLY_NOTE)


@pytest.mark.parametrize("with_model", [True, False])
def test_risk_indicators_are_the_flags_that_are_on_in_every_mode(
    day_features, champion, ruleset, empty_state, with_model
):
    # Given learners assessed with or without a model
    scored = assessed(day_features, champion if with_model else None, ruleset, empty_state)
    flags = load_catalog().risk_indicators
    on_somewhere = 0
    # Then each record lists exactly the risk flags that are on, in catalog order, by label
    for record, row in zip(scored.records(), day_features.to_dict("records"), strict=True):
        expected = [name for name in flags if row[name] is True or row[name] == 1]
        assert [flag["feature"] for flag in record["risk_indicators"]] == expected
        labels = [load_catalog().get(name).label for name in expected]
        assert [flag["text"] for flag in record["risk_indicators"]] == labels
        on_somewhere += bool(expected)
    assert on_somewhere > 0  # the fixture has learners with risk flags on


def test_call_list_reasons_are_reason_codes_or_else_the_indicators(
    day_features, champion, ruleset, empty_state
):
    # Given the same learners assessed with and without a model
    with_model = assessed(day_features, champion, ruleset, empty_state)
    rules_only = assessed(day_features, None, ruleset, empty_state)
    for position in range(len(day_features)):
        # Then with a model the call list quotes the reason codes' texts
        codes = [reason.text for reason in with_model.reasons([position])[0]]
        assert with_model.reason_texts(position) == tuple(codes)
        # and without one the first three indicators that are on
        flags = [flag["text"] for flag in rules_only.indicators(position)]
        assert rules_only.reason_texts(position) == tuple(flags[:3])


def test_explanations_give_each_learner_their_top_reasons(
    day_features, champion, ruleset, empty_state
):
    # When five learners are explained with top=2
    scored = assessed(day_features.head(5), champion, ruleset, empty_state, top_reasons=2)
    reasons = scored.reasons(range(5))
    # Then each has two reasons, the larger first
    for learner_reasons in reasons:
        assert len(learner_reasons) == 2
        assert abs(learner_reasons[0].points) >= abs(learner_reasons[1].points)
    # and they are the first two of each learner's full breakdown
    full = explain_frame(champion.model, day_features.head(5))
    assert reasons == [explanation.top(2) for explanation in full]
    assert [scored.explanation(position) for position in range(5)] == full


class _CountingExecutor(ThreadPoolExecutor):
    """A thread pool that counts what it was given and on which threads it ran."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="test-treeshap")
        self.submitted = 0
        self.threads: set[str] = set()

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1

        def run():
            self.threads.add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return super().submit(run)


def test_treeshap_beside_the_rules_gives_the_same_assessment(
    day_features, champion, ruleset, empty_state
):
    # Given an executor for TreeSHAP (the online scorer's) and 40 learners
    with _CountingExecutor() as explainer:
        options = AssessOptions(explain=True, explainer=explainer)
        # When they are assessed with TreeSHAP run beside the rules engine
        beside = assess(
            day_features, champion=champion, ruleset=ruleset, state=empty_state,
            as_of=FIRST_DAY, options=options,
        )  # fmt: skip
    inline = assessed(day_features, champion, ruleset, empty_state)
    # Then it ran once, on the executor's thread, not the caller's
    assert explainer.submitted == 1
    assert explainer.threads and all(name.startswith("test-treeshap") for name in explainer.threads)
    # And scores, decisions and every record (reasons included) equal the in-line pass's
    pd.testing.assert_frame_equal(beside.scores, inline.scores)
    pd.testing.assert_frame_equal(beside.decisions, inline.decisions)
    assert beside.records() == inline.records()


def test_a_large_frame_is_explained_in_line(day_features, champion, ruleset, empty_state):
    # Given more learners than a small batch (LightGBM's own threads serve a large one better)
    many = pd.concat([day_features] * 7, ignore_index=True)
    many["customer_id"] = [f"L{index:04d}" for index in range(len(many))]
    assert len(many) > SMALL_BATCH_ROWS
    with _CountingExecutor() as explainer:
        options = AssessOptions(explain=True, explainer=explainer)
        # When they are assessed with an executor for TreeSHAP
        scored = assess(
            many, champion=champion, ruleset=ruleset, state=empty_state, as_of=FIRST_DAY,
            options=options,
        )  # fmt: skip
    # Then the executor was not used, and every learner is explained
    assert explainer.submitted == 0
    assert all(len(reasons) == 3 for reasons in scored.reasons(range(len(many))))
