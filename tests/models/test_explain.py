"""Reason codes: probability points that add up, real feature names, signs and honest texts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.catalog import load_catalog
from models.churn import ChurnModel
from models.explain import (
    explain,
    explain_frame,
    format_points,
    probability_points,
    reason_text,
    waterfall_plot,
)
from tests.models.synthetic import TEST_PARAMS, make_feature_frame

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_model() -> tuple[ChurnModel, pd.DataFrame]:
    """A model fitted on 3000 synthetic learners, and 40 unseen learners to explain."""
    frame, outcomes = make_feature_frame(3_040, seed=4)
    model = ChurnModel.fit(
        frame.iloc[:2_000],
        outcomes[:2_000],
        frame.iloc[2_000:3_000],
        outcomes[2_000:3_000],
        params=TEST_PARAMS,
        num_boost_round=30,
        seed=1,
    )
    return model, frame.iloc[3_000:].reset_index(drop=True)


def test_points_add_up_to_the_raw_probability_minus_the_base_rate(small_model):
    # Given a fitted model and learners it never saw
    model, learners = small_model
    # When every learner is explained in full
    explanations = explain_frame(model, learners)
    # Then each learner's points add up to 100 x (p_raw - p_base), p_raw being LightGBM's output
    raw = model.raw_probability(learners)
    for explanation, p_raw in zip(explanations, raw, strict=True):
        total = sum(reason.points for reason in explanation.reasons)
        assert explanation.p_raw == pytest.approx(p_raw, abs=1e-12)
        assert total / 100 == pytest.approx(explanation.p_raw - explanation.p_base, abs=1e-9)


def test_reasons_name_every_model_feature_once_and_only_catalog_features(small_model):
    # Given a fitted model
    model, learners = small_model
    # When one learner is explained without a limit
    reasons = explain(model, learners.iloc[[0]], top=None)
    # Then there is one reason per model feature, each a real catalog feature
    names = [reason.feature for reason in reasons]
    assert sorted(names) == sorted(model.feature_names)
    assert set(names) <= set(load_catalog().names)


def test_points_keep_the_sign_of_the_shap_contribution(small_model):
    # Given a fitted model and its raw TreeSHAP contributions
    model, learners = small_model
    contributions = model.contributions(learners).drop(columns="bias")
    # When they are turned into probability points
    points, _, _ = probability_points(model.contributions(learners))
    # Then every point has the sign of its log-odds contribution (zero stays zero)
    assert (np.sign(points.to_numpy()) == np.sign(contributions.to_numpy())).all()


def test_reasons_come_largest_first_and_top_cuts_the_list(small_model):
    # Given a fitted model and one learner
    model, learners = small_model
    row = learners.iloc[[5]]
    # When the learner is explained in full and with top=3
    everything = explain(model, row, top=None)
    top_three = explain(model, row, top=3)
    # Then the full list is sorted by |points| and top=3 is its head
    sizes = [abs(reason.points) for reason in everything]
    assert sizes == sorted(sizes, reverse=True)
    assert top_three == everything[:3]


def test_texts_contain_the_learners_values_and_points(small_model):
    # Given a fitted model and one learner
    model, learners = small_model
    row = learners.iloc[[7]]
    # When the learner is explained
    reasons = explain(model, row, top=None)
    # Then each count, day or flag text shows the learner's own value and the reason's points
    catalog = load_catalog()
    for reason in reasons:
        spec = catalog.get(reason.feature)
        assert reason.text.startswith(f"{spec.label}: ")
        assert reason.text.endswith(format_points(reason.points))
        if spec.unit == "count" and reason.value is not None:
            assert f": {reason.value}" in reason.text
        if spec.unit == "flag":
            assert (": yes" if reason.value else ": no") in reason.text


def test_a_recent_count_is_compared_with_the_rest_of_the_window():
    # Given a learner with 1 session in the last 7 days and 24 in the 30-day window (so 23 in the
    # 23 days before: 7 per week), enrolled long ago
    row = pd.Series({"sessions_7d": 1, "sessions_30d": 24, "tenure_days": 400.0})
    spec = load_catalog().get("sessions_7d")
    # When its reason text is written
    text = reason_text(spec, "sessions_7d", row, 21.4)
    # Then it says what changed and by how many points
    assert text == "sessions in the last 7 days: 1 (was 7 per week before): +21 pts"


def test_a_cold_start_learner_is_compared_with_the_days_they_were_enrolled():
    # Given a learner enrolled 14 days ago with 1 session in the last 7 days and 8 in all
    # (7 in the 7 days before)
    row = pd.Series({"sessions_7d": 1, "sessions_30d": 8, "tenure_days": 14.0})
    spec = load_catalog().get("sessions_7d")
    # When its reason text is written
    text = reason_text(spec, "sessions_7d", row, -0.25)
    # Then the rate before uses the 7 enrolled days before the last week, not 23
    assert text == "sessions in the last 7 days: 1 (was 7 per week before): -0.2 pts"


@pytest.mark.parametrize(
    ("phi", "bias", "expected_points"),
    [
        # one feature moves the log-odds from 0 to ln 3: 50% -> 75%, all 25 points are its
        ([math.log(3), 0.0], 0.0, [25.0, 0.0]),
        # two equal pushes share the change equally: logit 0 -> 2 ln 3 (90%), 20 points each
        ([math.log(3), math.log(3)], 0.0, [20.0, 20.0]),
        # contributions that cancel: no change to explain, the tangent p(1-p) = 0.25 per log-odd
        ([1.0, -1.0], 0.0, [25.0, -25.0]),
    ],
)
def test_probability_points_on_hand_computed_cases(phi, bias, expected_points):
    # Given hand-made contributions of one learner
    contributions = pd.DataFrame([[*phi, bias]], columns=["a", "b", "bias"])
    # When they are turned into percentage points
    points, p_base, p_raw = probability_points(contributions)
    # Then the points are the hand-computed ones and add up to the probability change
    assert points.iloc[0].tolist() == pytest.approx(expected_points, abs=1e-9)
    assert points.iloc[0].sum() / 100 == pytest.approx(p_raw[0] - p_base[0], abs=1e-12)


def test_explain_refuses_a_frame_that_is_not_one_learner(small_model):
    # Given a fitted model and two learners
    model, learners = small_model
    # When explain is given both, Then it says it wants one row
    with pytest.raises(ValueError, match="one-row feature frame, got 2 rows"):
        explain(model, learners.iloc[:2])


def test_waterfall_plot_writes_a_png(small_model, tmp_path):
    # Given the top reasons of one learner
    model, learners = small_model
    explanation = explain_frame(model, learners.iloc[[3]])[0]
    # When the waterfall is drawn into a new directory
    path = waterfall_plot(
        explanation.top(8), tmp_path / "plots" / "c.png", p_base=explanation.p_base
    )
    # Then a PNG image is written there
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_given_contributions_give_the_same_explanations_and_must_match_the_rows(small_model):
    # Given a fitted model and the contributions it computed once for five learners
    model, learners = small_model
    rows = learners.iloc[:5]
    _, contributions = model.predict_with_contributions(rows)
    # When the learners are explained from those contributions
    explanations = explain_frame(model, rows, contributions=contributions)
    # Then the explanations are those TreeSHAP gives when run again
    assert explanations == explain_frame(model, rows)
    # And contributions of other rows are refused, naming both counts
    with pytest.raises(ValueError, match="4 rows for 5 feature rows"):
        explain_frame(model, rows, contributions=contributions.iloc[:4])
