"""Report: the comparison table and the model card say what they must."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from training.evaluate import Evaluation
from training.report import comparison_table, markdown_table, model_card
from training.tuning import TuningResult


@pytest.fixture
def evaluation():
    table = pd.DataFrame(
        {
            "pr_auc": [0.71, 0.52, 0.80],
            "ece": [0.012, 0.04, 0.008],
            "flagged_14d_share": [0.6, 0.3, 0.7],
        },
        index=["model", "recency", "oracle"],
    )
    return Evaluation(table, {"pr_auc": 0.8875}, rows=1234, oracle_rows=1000, flag_threshold=0.5)


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


def test_model_card_has_every_section(evaluation):
    # given the pieces of a run
    tuning = TuningResult({}, 120, 0.7, "pr_auc", 3, 5, 2, 12.0)
    data = {"data.horizon_days": 30, "data.every_days": 7, "data.label_source": "computed"}

    # when the card is written
    card = model_card(
        model_name="lstep-churn v3 (champion)",
        data=data,
        split={"split.test.rows": 1234},
        tuning=tuning,
        evaluation=evaluation,
        feature_names=["days_since_last_event", "active_days_7d"],
    )

    # then it names the window, the label rule, the features, the metrics and the baselines
    for section in ("## Data window", "## Label", "## Features (2)", "## Metrics", "## Baselines"):
        assert section in card
    assert "no event in [t, t + 30 days)" in card
    assert "`days_since_last_event`: days since the last activity" in card
    assert markdown_table(evaluation) in card
    assert "**recency**" in card and "**oracle**" in card
