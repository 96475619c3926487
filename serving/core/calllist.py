"""The call list: who the CS team contacts today (P1/P2 outside the control group).

One definition for the batch job's summary, the report and the dashboard-to-be: the urgent
priorities, and the order (priority, then value at risk, largest first, then customer id) that
the rules engine already gives its decisions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI's renderer imports this module: pandas would cost every command
    import pandas as pd

URGENT_PRIORITIES: tuple[str, ...] = ("P1", "P2")
"""Priorities that put a learner on the call list."""
LIFETIME_FIELDS: tuple[str, ...] = ("expected_months", "projected_value")
"""The lifetime projection (``rules.lifetime``'s ``LIFETIME_COLUMNS``, spelled here so that
``lstep status`` imports no rules engine)."""
VALUE_FIELDS: tuple[str, ...] = ("value_at_risk", *LIFETIME_FIELDS)
"""What a learner is worth: value at risk and the lifetime projection."""
CALL_LIST_ORDER = (
    ["priority", "value_at_risk", "p_churn", "customer_id"],
    [True, False, False, True],
)
"""``rules.decisions.decision_order``'s keys, for stored scores read back in any order."""


def urgent_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (decisions or stored scores) whose priority is urgent, control group included.

    ``isin`` on the column itself: a categorical (the decisions') is matched by its few
    categories; ``astype(str)`` first made a million strings at 1M learners, ~0.2 s a call and
    three calls in a batch day's summary.
    """
    return frame[frame["priority"].isin(URGENT_PRIORITIES)]


def call_list(frame: pd.DataFrame, top: int, *, ordered: bool = False) -> pd.DataFrame:
    """The first ``top`` urgent rows outside the control group, in call-list order.

    Args:
        frame: decisions or stored scores (priority, value_at_risk, p_churn, control,
            customer_id).
        top: how many learners.
        ordered: the frame is already in call-list order (the rules engine's decisions).
    """
    urgent = urgent_rows(frame)
    listed = urgent[~urgent["control"].astype(bool)]
    if not ordered:
        columns, ascending = CALL_LIST_ORDER
        listed = listed.sort_values(columns, ascending=ascending)
    return listed.head(top).reset_index(drop=True)


def value_texts(score: Mapping[str, Any], missing: str = "—") -> dict[str, str]:
    """A stored score's value at risk, expected months and projected value, as printed.

    Args:
        score: a stored score row (``STORED_SCORES_SCHEMA``); a row stored before the lifetime
            projection, or without a score or mrr, lacks some: they read ``missing``.
        missing: the text of an absent value.
    """
    value, months, projected = (score.get(name) for name in VALUE_FIELDS)

    def missing_value(cell: Any) -> bool:
        if cell is None or isinstance(cell, float):
            return cell is None or math.isnan(cell)
        import pandas as pd  # a cell that is not a float came from a frame: pandas is loaded

        return bool(pd.isna(cell))

    return {
        "value_at_risk": missing if missing_value(value) else f"{float(value):,.2f}",
        "expected_months": missing if missing_value(months) else f"{float(months):.1f}",
        "projected_value": missing if missing_value(projected) else f"{float(projected):,.2f}",
    }


__all__ = [
    "LIFETIME_FIELDS",
    "URGENT_PRIORITIES",
    "VALUE_FIELDS",
    "call_list",
    "urgent_rows",
    "value_texts",
]
