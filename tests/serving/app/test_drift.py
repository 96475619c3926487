"""Feature drift of the report: PSI between batch-day snapshots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.app.drift import _category_labels, feature_drift, population_stability_index


def test_psi_is_zero_for_identical_samples_and_large_for_a_shifted_one():
    # given a sample, the same sample, and the sample shifted by two standard deviations
    values = pd.Series(np.random.default_rng(0).normal(size=2000), name="x")
    # when compared
    same = population_stability_index(values, values.copy())
    shifted = population_stability_index(values, values + 2.0)
    # then identical samples do not drift and the shifted one passes the warning threshold
    assert same == pytest.approx(0.0, abs=1e-12)
    assert shifted > 1.0


def test_psi_of_categories_matches_the_formula_and_counts_missing_values():
    # given a flag that is on for 20% of learners, then 50%, then going missing
    before = pd.Series([True] * 2 + [False] * 8, name="flag")
    after = pd.Series([True] * 5 + [False] * 5, name="flag")
    missing = pd.Series([True] * 2 + [False] * 4 + [None] * 4, dtype=object, name="flag")
    # when compared
    psi = population_stability_index(before, after)
    # then it is (0.5-0.2)ln(0.5/0.2) + (0.5-0.8)ln(0.5/0.8), and missing values are drift
    assert psi == pytest.approx(0.3 * np.log(2.5) - 0.3 * np.log(0.625))
    assert population_stability_index(before, missing) > 0.2


def test_psi_names_the_feature_when_a_sample_is_empty():
    with pytest.raises(ValueError, match="'sessions_7d'"):
        population_stability_index(pd.Series([], name="sessions_7d"), pd.Series([1.0]))


def test_feature_drift_flags_features_above_the_threshold_largest_first():
    # given two snapshots where one feature moved and another did not
    rng = np.random.default_rng(1)
    stable = rng.normal(size=500)
    first = pd.DataFrame({"sessions_7d": stable, "tenure_days": rng.normal(size=500)})
    last = pd.DataFrame({"sessions_7d": stable, "tenure_days": rng.normal(size=500) + 3})
    # when the drift is computed
    drift = feature_drift(first, last, ["sessions_7d", "tenure_days"])
    # then the moved feature leads with a warning and the other is stable
    assert drift["feature"].tolist() == ["tenure_days", "sessions_7d"]
    assert drift["warning"].tolist() == [True, False]
    with pytest.raises(ValueError, match="lacks columns \\['mrr'\\]"):
        feature_drift(first, last, ["mrr"])


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([True, None, False, True], dtype="boolean"),
        pd.Series([1.0, np.nan, 2.5, 1.0]),
        pd.Series([1, None, 3, 1], dtype="Int64"),
        pd.Series(["web", None, "api", "web"]),
    ],
)
def test_categories_are_labelled_as_python_prints_each_value_missing_apart(values):
    # given a flag, number or text column with a missing value
    # when it is labelled for the PSI / then each value reads as str() prints it
    labels = _category_labels(values).tolist()
    assert labels == [
        "missing" if pd.isna(value) else str(value) for value in values.astype(object)
    ]
    assert labels[1] == "missing" and labels[0] == labels[3] != labels[2]
