"""Tests for models.metrics: hand-computed values, scikit-learn cross-checks, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from models.metrics import (
    classification_metrics,
    expected_calibration_error,
    lift_top_decile,
    recall_at_precision,
)


def test_ece_matches_a_hand_computation_over_15_bins():
    # given four scores in three different 1/15-wide bins
    y = [0, 0, 1, 1]
    p = [0.1, 0.1, 0.9, 0.7]  # bins 1, 1, 13, 10
    # when
    ece = expected_calibration_error(y, p)
    # then: bin 1 gap 0.1 (weight 2/4), bin 13 gap 0.1 (1/4), bin 10 gap 0.3 (1/4)
    assert ece == pytest.approx(0.1 * 2 / 4 + 0.1 / 4 + 0.3 / 4)


def test_ece_is_zero_when_every_bin_is_calibrated_and_p_equal_one_lands_in_the_last_bin():
    # given a bin at 0.5 with one churner in two rows, and a certain prediction p == 1
    calibrated_y, calibrated_p = [0, 1, 1], [0.5, 0.5, 1.0]
    # and a bin at 0.2 holding four rows with one churner (rate 0.25, not 0.2)
    off_y, off_p = [0, 1, 0, 0, 1], [0.2, 0.2, 0.2, 0.2, 1.0]
    # when
    calibrated = expected_calibration_error(calibrated_y, calibrated_p)
    miscalibrated = expected_calibration_error(off_y, off_p)
    # then
    assert calibrated == pytest.approx(0.0)
    assert miscalibrated == pytest.approx(4 / 5 * 0.05)


def test_ece_with_fewer_bins_merges_scores():
    # given two scores that share a bin when there are 2 bins but not when there are 15
    y, p = [0, 1], [0.6, 0.9]
    # when / then: with 2 bins both are in [0.5, 1]: mean y 0.5 vs mean p 0.75
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.25)
    assert expected_calibration_error(y, p) == pytest.approx((0.6 + 0.1) / 2)


def test_lift_top_decile_on_a_hand_made_ranking():
    # given 20 rows, the 2 highest scores are churners, 4 churners overall
    y = np.array([1, 1] + [1, 1] + [0] * 16)
    p = np.linspace(1.0, 0.0, 20)
    # when
    lift = lift_top_decile(y, p)
    # then: top decile churn rate 1.0 over base rate 0.2
    assert lift == pytest.approx(5.0)


def test_lift_splits_a_tied_group_at_the_cut_in_proportion():
    # given 10 rows that all tie, 3 of them churners
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    p = np.full(10, 0.4)
    # when / then: the single top place is expected to hold 0.3 churners: lift 1
    assert lift_top_decile(y, p) == pytest.approx(1.0)
    assert lift_top_decile(y[::-1], p) == pytest.approx(1.0)


def test_recall_at_precision_takes_the_largest_recall_reaching_the_target():
    # given labels sorted by decreasing score: precision 1, 1, 1, 0.75, 0.8, 0.67, ...
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    p = np.linspace(0.9, 0.2, 8)
    # when / then
    assert recall_at_precision(y, p, 0.85) == pytest.approx(3 / 4)
    assert recall_at_precision(y, p, 0.8) == pytest.approx(1.0)


def test_recall_at_precision_is_zero_when_no_threshold_is_precise_enough():
    # given a top score that is not a churner and a low churn rate
    y = np.array([0, 1, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.4, 0.3, 0.2])
    # when / then
    assert recall_at_precision(y, p, 0.85) == 0.0


def test_metrics_agree_with_scikit_learn_on_random_scores_with_ties():
    # given random outcomes and scores rounded to 2 decimals (many ties)
    rng = np.random.default_rng(7)
    p = np.round(rng.uniform(size=500), 2)
    y = (rng.uniform(size=500) < p).astype(int)
    # when
    result = classification_metrics(y, p)
    # then
    assert result["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p))
    assert result["pr_auc"] == pytest.approx(sk.average_precision_score(y, p))
    assert result["brier"] == pytest.approx(sk.brier_score_loss(y, p))
    assert result["log_loss"] == pytest.approx(sk.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)))
    assert set(result) == {
        "roc_auc",
        "pr_auc",
        "lift_top_decile",
        "recall_at_precision_85",
        "brier",
        "ece",
        "log_loss",
    }


def test_metrics_do_not_depend_on_row_order():
    # given scores with ties and a permutation of the rows
    rng = np.random.default_rng(11)
    p = np.round(rng.uniform(size=300), 1)
    y = (rng.uniform(size=300) < p).astype(int)
    order = rng.permutation(300)
    # when / then
    assert classification_metrics(y[order], p[order]) == pytest.approx(classification_metrics(y, p))


def test_a_perfect_ranking_scores_one_on_both_aucs():
    # given scores that separate the classes completely
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    # when
    result = classification_metrics(y, p)
    # then
    assert result["roc_auc"] == 1.0
    assert result["pr_auc"] == 1.0
    assert result["recall_at_precision_85"] == 1.0


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "y has 2 values but p has 1"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "1 values of y are not 0/1"),
        ([0, 1, 1], [0.1, np.nan, 1.5], "2 values of p are outside"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "all 3 values of y are 1"),
        ([], [], "empty"),
    ],
)
def test_invalid_inputs_raise_errors_that_say_what_is_wrong(y, p, message):
    # given invalid inputs / when / then
    with pytest.raises(ValueError, match=message):
        classification_metrics(y, p)
