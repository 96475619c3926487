"""Baselines: recency and rules-only scores mapped to probabilities, and the logistic regression."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from models.metrics import roc_auc
from tests.training.frames import feature_frame, weekly_dates
from training.baselines import LogisticBaseline, SingleFeatureBaseline, fit_baselines


@pytest.fixture(scope="module")
def frames():
    dates = weekly_dates(date(2026, 2, 1), 4)
    return feature_frame(300, dates, seed=1), feature_frame(300, dates, seed=2)


def test_recency_probability_rises_with_days_of_inactivity(frames):
    # given a recency baseline fitted on a frame where churn rises with inactivity
    train, test = frames
    baseline = SingleFeatureBaseline("recency", "days_since_last_event").fit(
        train, train["churned"]
    )

    # when it scores learners with more and more days of inactivity
    probe = test.head(5).copy()
    probe["days_since_last_event"] = [0.0, 2.0, 5.0, 10.0, 30.0]
    p = baseline.predict_proba(probe)

    # then the probability never falls, stays inside (0, 1) and ranks the test slice
    assert np.all(np.diff(p) >= 0) and p[-1] > p[0]
    assert np.all((p > 0) & (p < 1))
    assert roc_auc(test["churned"], baseline.predict_proba(test)) > 0.6


def test_rules_only_baseline_is_the_training_churn_rate_per_count():
    # given counts 0, 1, 2 with churn rates 0.1, 0.3, 0.6 (already monotone)
    counts = np.repeat([0, 1, 2], 10)
    churned = np.concatenate([[1] + [0] * 9, [1] * 3 + [0] * 7, [1] * 6 + [0] * 4])
    frame = pd.DataFrame({"risk_indicator_count": counts})

    # when the rules-only baseline is fitted
    baseline = SingleFeatureBaseline("risk_rules", "risk_indicator_count").fit(frame, churned)

    # then each count maps to its churn rate
    p = baseline.predict_proba(pd.DataFrame({"risk_indicator_count": [0, 1, 2]}))
    assert p == pytest.approx([0.1, 0.3, 0.6])


def test_single_feature_baseline_names_null_scores():
    # given a frame with two null recency values
    frame = pd.DataFrame({"days_since_last_event": [1.0, np.nan, 3.0, np.nan]})
    baseline = SingleFeatureBaseline("recency", "days_since_last_event")

    # when / then the error names the baseline, the count and the column
    with pytest.raises(ValueError, match=r"recency baseline: 2 of 4 rows .* days_since_last_event"):
        baseline.fit(frame, np.array([0, 1, 0, 1]))


def test_logistic_baseline_learns_the_planted_signal(frames):
    # given the logistic baseline fitted on the training frame
    train, test = frames
    baseline = LogisticBaseline().fit(train, train["churned"])

    # when it scores the test frame
    p = baseline.predict_proba(test)

    # then it ranks well and its probabilities are proper
    assert roc_auc(test["churned"], p) > 0.75
    assert np.all((p > 0) & (p < 1))


def test_logistic_baseline_survives_a_log_without_durations(frames):
    # given a foreign log whose duration features are all null
    train, test = (frame.copy() for frame in frames)
    for frame in (train, test):
        frame[["session_minutes_7d", "session_minutes_30d", "avg_session_minutes_30d"]] = np.nan

    # when fitted and used
    p = LogisticBaseline().fit(train, train["churned"]).predict_proba(test)

    # then every row still gets a probability
    assert len(p) == len(test) and not np.isnan(p).any()


def test_fit_baselines_returns_the_three_in_table_order(frames):
    # given a training frame
    train, _ = frames

    # when
    baselines = fit_baselines(train, train["churned"].to_numpy())

    # then
    assert [b.name for b in baselines] == ["recency", "risk_rules", "logistic"]
