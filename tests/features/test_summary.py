"""The demo's feature summary: label statistics and a distribution table in the catalog's words."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from features.summary import distribution_table, label_summary


def test_label_summary_counts_rows_learners_dates_and_the_churn_rate():
    # given four labels of three learners at two dates, one churned
    labels = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c"],
            "as_of": pd.to_datetime(["2026-03-01", "2026-03-01", "2026-03-08", "2026-03-08"]),
            "churned": [0, 1, 0, 0],
        }
    )
    # then
    assert label_summary(labels) == {"rows": 4, "learners": 3, "dates": 2, "churn_rate": 0.25}


def test_distribution_table_uses_catalog_labels_and_reports_nulls():
    # given one feature with a null among four rows
    features = pd.DataFrame({"days_since_last_session": [1.0, 2.0, None, 5.0]})
    # when rendered
    console = Console(record=True, width=200)
    console.print(distribution_table(features, names=("days_since_last_session",)))
    text = console.export_text()
    # then the row is the catalog's label with its unit, a 25% null share and the median 2.00
    assert "days since the last session" in text
    assert "25%" in text
    assert "2.00" in text
