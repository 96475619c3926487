"""A short, readable summary of a feature frame and its labels (the demo's first table)."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from features.catalog import load_catalog

HEADLINE_FEATURES: tuple[str, ...] = (
    "days_since_last_event",
    "active_days_30d",
    "sessions_7d",
    "session_minutes_30d",
    "activity_trend_7v23",
    "lessons_total",
    "risk_indicator_count",
)
"""The features whose distributions the summary shows: one per question a CS lead asks first."""


def label_summary(labels: pd.DataFrame) -> dict[str, float]:
    """Rows, learners, dates and churn rate of a labels frame (customer_id, as_of, churned)."""
    return {
        "rows": len(labels),
        "learners": labels["customer_id"].nunique(),
        "dates": labels["as_of"].nunique(),
        "churn_rate": float(labels["churned"].mean()) if len(labels) else float("nan"),
    }


def distribution_table(features: pd.DataFrame, names: tuple[str, ...] = HEADLINE_FEATURES) -> Table:
    """Quantiles and null share of a few features, labelled in the catalog's words."""
    catalog = load_catalog()
    table = Table(title=f"Feature distributions ({len(features):,} rows)", title_justify="left")
    for column in ("feature", "unit", "null %", "p10", "median", "mean", "p90"):
        table.add_column(column, justify="left" if column in ("feature", "unit") else "right")
    for name in names:
        values = features[name].astype("float64")
        quantiles = values.quantile([0.1, 0.5, 0.9])
        table.add_row(
            catalog.get(name).label,
            catalog.get(name).unit,
            f"{values.isna().mean():.0%}",
            f"{quantiles.iloc[0]:,.2f}",
            f"{quantiles.iloc[1]:,.2f}",
            f"{values.mean():,.2f}",
            f"{quantiles.iloc[2]:,.2f}",
        )
    return table
