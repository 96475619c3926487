"""Report: the comparison table and the model card say what they must."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from rich.console import Console

from training.early_warning import EARLY_WARNING, RECOVERED, EarlyWarning, OperatingPoint
from training.evaluate import Evaluation
from training.report import (
    comparison_table,
    early_warning_caption,
    early_warning_markdown,
    early_warning_table,
    markdown_table,
    model_card,
)
from training.tuning import TuningResult


@pytest.fixture
def evaluation():
    table = pd.DataFrame(
        {
            "pr_auc": [0.71, 0.52, 0.80],
            "ece": [0.012, 0.04, 0.008],
        },
        index=["model", "recency", "oracle"],
    )
    return Evaluation(table, {"pr_auc": 0.8875}, rows=1234, oracle_rows=1000)


def test_comparison_table_lists_scorers_and_the_oracle_ratio(evaluation):
    # when the table is rendered
    console = Console(width=200, record=True)
    console.print(comparison_table(evaluation))
    text = " ".join(console.export_text().split())  # the caption wraps to the table's width

    # then every scorer, the ratio row and its figures appear
    for expected in (
        "model",
        "recency",
        "oracle",
        "model/oracle",
        "1000 rows the truth covers",
        "0.710",
        "0.887",
    ):
        assert expected in text
    assert "1234 rows" in text


def _card(evaluation, feature_names: list[str]) -> str:
    """The model card of a run with fixed tuning, data and split pieces."""
    return model_card(
        model_name="lstep-churn v3 (champion)",
        data={"data.horizon_days": 30, "data.every_days": 7, "data.label_source": "computed"},
        split={"split.test.rows": 1234},
        tuning=TuningResult({}, 120, 0.7, "pr_auc", 3, 5, 2, 12.0),
        evaluation=evaluation,
        feature_names=feature_names,
    )


def test_model_card_has_every_section(evaluation):
    # given the pieces of a run, when the card is written
    card = _card(evaluation, ["days_since_last_event", "active_days_7d"])

    # then it names the window, the label rule, the features, the metrics and the baselines
    for section in ("## Data window", "## Label", "## Features (2)", "## Metrics", "## Baselines"):
        assert section in card
    assert "no event in [t, t + 30 days)" in card
    assert "`days_since_last_event`: days since the last activity" in card
    assert markdown_table(evaluation) in card
    assert "**recency**" in card and "**oracle**" in card


@pytest.fixture
def early():
    rows = {
        ("model", days): {
            "threshold": 0.62,
            "precision": precision,
            "recall": 0.4,
            "accuracy": 0.88,
            "late_rows": 10.0,
            "caught_share": 0.5,
            "lead_q1": 14.0,
            "lead_median": 21.0,
            "lead_q3": 28.0,
        }
        for days, precision in ((7, 0.9), (14, 0.8), (21, 0.7))
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["scorer", "days"])
    point = OperatingPoint(EARLY_WARNING, 0.62, False, 0.81, 0.85, "best reachable precision")
    recovered = OperatingPoint(RECOVERED, 0.07, True, 0.05, 0.06, "as safe as ST_001")
    named = {EARLY_WARNING: point, RECOVERED: recovered}
    return EarlyWarning(table, {"model": point}, named, {"oracle": "no threshold flags 30 rows"})


def test_early_warning_table_says_plainly_whether_the_claim_is_reached(early):
    # when the terminal table and its caption are rendered
    console = Console(width=200, record=True)
    console.print(early_warning_table(early))
    console.print(early_warning_caption(early))
    text = " ".join(console.export_text().split())

    # then each N has its row, and the 14-day verdict is stated with what is reached
    for expected in ("model 7 0.620 0.900", "model 14 0.620 0.800", "14/21/28"):
        assert expected in text
    assert "85% precision 14+ days ahead is NOT reached by the model" in text
    assert "precision 0.800" in text
    assert "N (days) with precision >= 0.85: 7 " in text
    assert "oracle: not shown, no threshold flags 30 rows" in text


def test_model_card_defines_the_claim_and_lists_the_operating_points(evaluation, early):
    # given an evaluation with the early warning
    with_early = dataclasses.replace(evaluation, early_warning=early)
    # when the card is written
    card = _card(with_early, ["days_since_last_event"])

    # then it defines the claim, shows the table, the verdict and both named points
    assert "## Early warning" in card and "## Operating points" in card
    assert "N to 30 days after t" in card
    assert early_warning_markdown(early) in card
    assert "NOT reached" in card
    assert "- `@early_warning`: 0.6200 (best reachable precision)" in card
    assert "- `@recovered`: 0.0700" in card
