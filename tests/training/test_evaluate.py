"""Evaluation: the oracle join, the comparison metrics and the early warning beside them."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pandera.errors
import pytest

from models.metrics import classification_metrics
from training.evaluate import attach_oracle, evaluate_scores

DATES = ["2026-05-01", "2026-05-08", "2026-05-15"]


def _scores(rows: list[tuple[str, str, int, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "as_of", "churned", "model", "lead"])
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame


@pytest.fixture
def churn_story():
    """Five learners at three dates: labels, model probabilities and days to ST_006."""
    probabilities = {
        "A": ([1, 1, 1], [0.2, 0.6, 0.7], [28, 21, 14]),
        "B": ([0, 1, 1], [0.3, 0.4, 0.3], [35, 28, 21]),
        "C": ([1, 1, 1], [0.3, 0.3, 0.8], [24, 17, 10]),
        "D": ([0, 0, 0], [0.9, 0.9, 0.9], [np.nan] * 3),
        "E": ([1, 0, 0], [0.9, 0.2, 0.1], [np.nan] * 3),
    }
    rows = [
        (customer, day, label, p, lead)
        for customer, (labels, ps, leads) in probabilities.items()
        for day, label, p, lead in zip(DATES, labels, ps, leads, strict=True)
    ]
    frame = _scores(rows)
    return frame, frame.assign(risk_indicator_count=np.where(frame["churned"] == 1, 3, 0))


def test_oracle_joins_on_keys_and_leaves_uncovered_rows_empty(churn_story):
    # given truth for two of A's rows, with as_of as plain dates (the simulator's date32)
    scores, _ = churn_story
    truth = pd.DataFrame(
        {
            "customer_id": ["A", "A", "Z"],
            "as_of": [date(2026, 5, 1), date(2026, 5, 8), date(2026, 5, 1)],
            "p_true": [0.25, 0.5, 0.9],
            "engagement": [0.0, 0.0, 0.0],
        }
    )

    # when attached
    joined = attach_oracle(scores, truth)

    # then exactly those rows carry p_true and nothing else moved
    assert joined["oracle"].notna().sum() == 2
    assert joined.loc[(joined.customer_id == "A"), "oracle"].tolist()[:2] == [0.25, 0.5]
    assert len(joined) == len(scores) and "engagement" not in joined


def test_truth_with_repeated_keys_is_rejected(churn_story):
    # given a truth file with one (customer_id, as_of) twice
    scores, _ = churn_story
    truth = pd.DataFrame(
        {"customer_id": ["A", "A"], "as_of": ["2026-05-01"] * 2, "p_true": [0.1, 0.2]}
    )

    # when / then
    with pytest.raises(pandera.errors.SchemaError):
        attach_oracle(scores, truth)


def test_evaluation_table_and_oracle_ratios_on_covered_rows(churn_story):
    # given the churn story with a baseline and an oracle covering all rows but D's
    scores, _ = churn_story
    scores["recency"] = np.linspace(0.1, 0.9, len(scores))
    scores["oracle"] = np.where(scores["customer_id"] == "D", np.nan, scores["churned"] * 0.8 + 0.1)

    # when evaluated
    evaluation = evaluate_scores(scores, ["model", "recency", "oracle"])

    # then the table has one row per scorer and the ratios compare on the covered rows only
    assert list(evaluation.table.index) == ["model", "recency", "oracle"]
    covered = scores[scores["customer_id"] != "D"]
    model = classification_metrics(covered["churned"], covered["model"])
    oracle = classification_metrics(covered["churned"], covered["oracle"])
    assert evaluation.ratios["pr_auc"] == pytest.approx(model["pr_auc"] / oracle["pr_auc"])
    assert evaluation.oracle_rows == len(covered)
    metrics = evaluation.mlflow_metrics()
    assert metrics["test.model.pr_auc"] == evaluation.table.loc["model", "pr_auc"]
    assert "test.model_vs_oracle.roc_auc" in metrics
    assert evaluation.early_warning is None


def test_missing_scorer_column_is_named(churn_story):
    # given scores without a logistic column
    scores, _ = churn_story

    # when / then
    with pytest.raises(ValueError, match=r"lacks the scorer columns \['logistic'\]"):
        evaluate_scores(scores, ["model", "logistic"])


def test_early_warning_is_chosen_on_calibration_and_logged(churn_story):
    # given the story as test slice and, with risk indicators, as calibration slice
    scores, calibration = churn_story

    # when evaluated with the calibration slice (any threshold may decide: min_flags=1)
    evaluation = evaluate_scores(scores, ["model"], calibration=calibration, min_flags=1)

    # then the model has N = 7/14/21 rows, named points, and MLflow metrics for them
    early = evaluation.early_warning
    assert list(early.table.index) == [("model", 7), ("model", 14), ("model", 21)]
    metrics = evaluation.mlflow_metrics()
    precision = early.table.loc[("model", 14), "precision"]
    assert metrics["early_warning.model.14d.precision"] == precision
    assert metrics["operating_point.early_warning.threshold"] == early.points["model"].threshold
    assert "operating_point.recovered.threshold" in metrics
