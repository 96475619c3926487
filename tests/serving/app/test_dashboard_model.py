"""The model-health page's figures on tiny frames whose answers are counted by hand."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.app.dashboard_model import (
    TrainingWindow,
    brier_score,
    drift_table,
    labelled_days,
    labelled_scores,
    psi_band,
    reliability,
    sample_rows,
    training_window,
)

MAY = date(2026, 5, 1)


def test_the_labelled_days_are_the_latest_whose_window_the_log_covers():
    # given batch days 1..10 May, a log that ends on 4 June (5 June not covered), W = 30
    days = [MAY + timedelta(days=i) for i in range(10)]
    # then day + 30 <= 5 June keeps 1..6 May, and the latest three are 4, 5 and 6 May
    assert labelled_days(days, date(2026, 6, 5), 30, recent=3) == [
        date(2026, 5, 4), date(2026, 5, 5), date(2026, 5, 6),
    ]  # fmt: skip
    # and a log that ends before any window closes labels no day
    assert labelled_days(days, date(2026, 5, 30), 30) == []


def _scored() -> pd.DataFrame:
    return pd.DataFrame({"p_churn": [0.05, 0.05, 0.15, 0.95, 1.0], "churned": [0, 1, 0, 1, 1]})


def test_reliability_bins_predicted_against_observed_with_counts():
    bins = reliability(_scored())
    assert len(bins) == 10 and bins["learners"].tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    first, second, last = bins.iloc[0], bins.iloc[1], bins.iloc[9]
    assert (first["mean_p"], first["observed"]) == pytest.approx((0.05, 0.5))
    assert (second["mean_p"], second["observed"]) == pytest.approx((0.15, 0.0))
    assert (last["mean_p"], last["observed"]) == pytest.approx((0.975, 1.0))  # p = 1 included
    assert (last["low"], last["high"]) == pytest.approx((0.9, 1.0))
    assert np.isnan(bins.iloc[5]["observed"])  # empty bin: no rate


def test_the_brier_score_is_the_mean_squared_gap():
    # (0.05^2 + 0.95^2 + 0.15^2 + 0.05^2 + 0^2) / 5 = 0.93 / 5
    assert brier_score(_scored()) == pytest.approx(0.186)
    assert math.isnan(brier_score(_scored().iloc[:0]))


def test_a_probability_outside_zero_one_is_refused_counting_them():
    with pytest.raises(ValueError, match="2 p_churn value"):
        reliability(pd.DataFrame({"p_churn": [1.2, -0.1, 0.3], "churned": [1, 0, 0]}))
    with pytest.raises(ValueError, match="churned must be 0 or 1"):
        reliability(pd.DataFrame({"p_churn": [0.3], "churned": [2]}))


def test_labelled_scores_join_the_kpis_labels_and_leave_out_open_windows():
    # given scores on 1 May (A, B, C, D without a model score) and 15 May (E); W = 7 days;
    # the log is known until 20 May: E's window (15-22 May) is still open
    scores = pd.DataFrame(
        {
            "as_of": pd.to_datetime([MAY] * 4 + [date(2026, 5, 15)]),
            "customer_id": ["A", "B", "C", "D", "E"],
            "p_churn": [0.1, 0.8, 0.4, np.nan, 0.5],
        }
    )
    events = pd.DataFrame(
        {
            "customer_id": ["A", "C", "C", "E"],
            "ts": pd.to_datetime(
                ["2026-05-03 10:00", "2026-05-02 09:00", "2026-05-04 09:00", "2026-05-19 09:00"],
                utc=True,
            ),
            "event_type": ["session", "session", "subscription_cancelled", "session"],
            "duration_s": [60.0] * 4,
            "channel": ["web"] * 4,
            "item": [None] * 4,
        }
    )
    labelled = labelled_scores(scores, events, 7, date(2026, 5, 20))
    # then A came back (0), B was silent (1), C cancelled (1); D and E are left out
    got = labelled.set_index("customer_id")["churned"].to_dict()
    assert got == {"A": 0, "B": 1, "C": 1}
    assert labelled.set_index("customer_id")["p_churn"].to_dict() == {"A": 0.1, "B": 0.8, "C": 0.4}


def test_labelled_scores_with_every_window_closed_keep_the_scores_order_and_labels():
    # given scores of B then A on 1 May, unsorted, every window closed by 20 May (W = 7)
    scores = pd.DataFrame(
        {
            "as_of": pd.to_datetime([MAY, MAY]),
            "customer_id": ["B", "A"],
            "p_churn": [0.8, 0.1],
        },
        index=[7, 3],
    )
    events = pd.DataFrame(
        {
            "customer_id": ["A"],
            "ts": pd.to_datetime(["2026-05-03 10:00"], utc=True),
            "event_type": ["session"],
            "duration_s": [60.0],
            "channel": ["web"],
            "item": [None],
        }
    )
    labelled = labelled_scores(scores, events, 7, date(2026, 5, 20))
    # then each row keeps its own label (B silent: 1, A came back: 0), in the scores' order,
    # numbered from 0 as the inner join numbered them
    assert labelled["customer_id"].tolist() == ["B", "A"]
    assert labelled["churned"].tolist() == [1, 0]
    assert labelled.index.tolist() == [0, 1]
    assert str(labelled["churned"].dtype) == "int8"


def test_psi_bands_split_at_a_tenth_and_a_quarter():
    assert [psi_band(v) for v in (0.05, 0.1, 0.25, 0.26)] == [
        "stable", "moderate", "moderate", "major",
    ]  # fmt: skip


def test_drift_table_gives_each_shared_feature_its_psi_and_band():
    # given a flag set for half the training learners and 90% of today's
    reference = pd.DataFrame(
        {"risk_milestone_stall": [True] * 50 + [False] * 50, "only_then": [1.0] * 100}
    )
    current = pd.DataFrame({"risk_milestone_stall": [True] * 90 + [False] * 10})
    drift = drift_table(reference, current, ["risk_milestone_stall", "only_then"])
    # then PSI = (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.8789: a major shift
    assert drift["feature"].tolist() == ["risk_milestone_stall"]  # a feature today lacks: out
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert drift["psi"].iloc[0] == pytest.approx(expected)
    assert drift["band"].iloc[0] == "major"


def test_the_training_window_comes_from_the_runs_split_parameters():
    params = {"split.train.first_as_of": "2026-01-31", "split.train.last_as_of": "2026-02-14"}
    assert training_window(params) == TrainingWindow(date(2026, 1, 31), date(2026, 2, 14))
    assert training_window({"split.train.first_as_of": "2026-01-31"}) is None


def test_drift_samples_a_large_side_with_a_seed_and_keeps_a_small_one_whole():
    frame = pd.DataFrame({"x": range(10)})
    assert sample_rows(frame, size=10) is frame
    sampled = sample_rows(frame, size=4)
    assert len(sampled) == 4 and sampled.equals(sample_rows(frame, size=4))  # same seed, same rows
    assert set(sampled["x"]) <= set(range(10))
