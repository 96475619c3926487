"""Evaluation: ST_006 dates, lead times, the oracle join and the comparison metrics."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pandera.errors
import pytest

from models.metrics import classification_metrics
from training.evaluate import (
    attach_oracle,
    evaluate_scores,
    lead_summary,
    lead_times,
    st006_dates,
)

OBSERVED_UNTIL = pd.Timestamp("2026-06-30")
DATES = ["2026-05-01", "2026-05-08", "2026-05-15"]


def _scores(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "as_of", "churned", "model"])
    frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return frame


@pytest.fixture
def churn_story():
    """A: flagged 23 days ahead; B: never flagged; C: flagged 10 days ahead; D: stays;
    E: churned at a test date but its ST_006 date lies after the end of the log."""
    probabilities = {
        "A": ([1, 1, 1], [0.2, 0.6, 0.7]),
        "B": ([0, 1, 1], [0.3, 0.4, 0.3]),
        "C": ([1, 1, 1], [0.3, 0.3, 0.8]),
        "D": ([0, 0, 0], [0.9, 0.9, 0.9]),
        "E": ([1, 0, 0], [0.9, 0.2, 0.1]),
    }
    rows = [
        (customer, day, label, p)
        for customer, (labels, ps) in probabilities.items()
        for day, label, p in zip(DATES, labels, ps, strict=True)
    ]
    last_event = pd.Series(
        pd.to_datetime(
            [
                "2026-04-30 10:00",
                "2026-05-02 12:00",
                "2026-04-25 00:00",
                "2026-06-29 09:00",
                "2026-06-15 08:00",
            ],
            utc=True,
        ),
        index=list("ABCDE"),
    )
    return _scores(rows), last_event


def test_st006_is_the_first_midnight_thirty_days_after_the_last_event():
    # given last events mid-day and exactly at midnight
    last = pd.Series(pd.to_datetime(["2026-03-01 14:00", "2026-03-01 00:00"], utc=True))

    # when
    due = st006_dates(last)

    # then
    assert list(due) == [pd.Timestamp("2026-04-01"), pd.Timestamp("2026-03-31")]


def test_lead_time_counts_days_from_first_flag_to_st006(churn_story):
    # given the churn story
    scores, last_event = churn_story

    # when lead times are computed at the 0.5 threshold
    per_churner = lead_times(
        scores, "model", st006_dates(last_event), observed_until=OBSERVED_UNTIL
    ).set_index("customer_id")

    # then only A, B and C are churners, with leads 23, none and 10 days
    assert sorted(per_churner.index) == ["A", "B", "C"]
    assert per_churner.loc["A", "lead_days"] == 23
    assert np.isnan(per_churner.loc["B", "lead_days"])
    assert per_churner.loc["C", "lead_days"] == 10


def test_lead_summary_shares_are_over_all_churners(churn_story):
    # given the churn story's lead times
    scores, last_event = churn_story
    per_churner = lead_times(
        scores, "model", st006_dates(last_event), observed_until=OBSERVED_UNTIL
    )

    # when summarised
    summary = lead_summary(per_churner)

    # then two of three were flagged, one of three at least 14 days ahead
    assert summary["churners"] == 3
    assert summary["flagged_share"] == pytest.approx(2 / 3)
    assert summary["median_lead_days"] == pytest.approx(16.5)
    assert summary["flagged_14d_share"] == pytest.approx(1 / 3)


def test_a_higher_threshold_flags_later(churn_story):
    # given the churn story
    scores, last_event = churn_story

    # when the threshold is 0.65
    per_churner = lead_times(
        scores,
        "model",
        st006_dates(last_event),
        observed_until=OBSERVED_UNTIL,
        flag_threshold=0.65,
    ).set_index("customer_id")

    # then A is first flagged at 05-15 (16 days ahead)
    assert per_churner.loc["A", "lead_days"] == 16


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
    scores, last_event = churn_story
    scores["recency"] = np.linspace(0.1, 0.9, len(scores))
    scores["oracle"] = np.where(scores["customer_id"] == "D", np.nan, scores["churned"] * 0.8 + 0.1)

    # when evaluated
    evaluation = evaluate_scores(
        scores, ["model", "recency", "oracle"], last_event=last_event, observed_until=OBSERVED_UNTIL
    )

    # then the table has one row per scorer and the ratios compare on the covered rows only
    assert list(evaluation.table.index) == ["model", "recency", "oracle"]
    covered = scores[scores["customer_id"] != "D"]
    model = classification_metrics(covered["churned"], covered["model"])
    oracle = classification_metrics(covered["churned"], covered["oracle"])
    assert evaluation.ratios["pr_auc"] == pytest.approx(model["pr_auc"] / oracle["pr_auc"])
    assert evaluation.oracle_rows == len(covered)
    metrics = evaluation.mlflow_metrics()
    assert metrics["test.model.churners"] == 3
    assert "test.model_vs_oracle.roc_auc" in metrics


def test_missing_scorer_column_is_named(churn_story):
    # given scores without a logistic column
    scores, last_event = churn_story

    # when / then
    with pytest.raises(ValueError, match=r"lacks the scorer columns \['logistic'\]"):
        evaluate_scores(
            scores, ["model", "logistic"], last_event=last_event, observed_until=OBSERVED_UNTIL
        )
