"""The call list: who the CS team contacts today (P1/P2 outside the control group).

One definition for the batch job's summary, the report and the dashboard-to-be: the urgent
priorities, and the order (priority, then value at risk, largest first, then customer id) that
the rules engine already gives its decisions.
"""

from __future__ import annotations

import pandas as pd

URGENT_PRIORITIES: tuple[str, ...] = ("P1", "P2")
"""Priorities that put a learner on the call list."""
CALL_LIST_ORDER = (["priority", "value_at_risk", "customer_id"], [True, False, True])


def urgent_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (decisions or stored scores) whose priority is urgent, control group included."""
    return frame[frame["priority"].astype(str).isin(URGENT_PRIORITIES)]


def call_list(frame: pd.DataFrame, top: int, *, ordered: bool = False) -> pd.DataFrame:
    """The first ``top`` urgent rows outside the control group, in call-list order.

    Args:
        frame: decisions or stored scores (priority, value_at_risk, control, customer_id).
        top: how many learners.
        ordered: the frame is already in call-list order (the rules engine's decisions).
    """
    urgent = urgent_rows(frame)
    listed = urgent[~urgent["control"].astype(bool)]
    if not ordered:
        columns, ascending = CALL_LIST_ORDER
        listed = listed.sort_values(columns, ascending=ascending)
    return listed.head(top).reset_index(drop=True)


__all__ = ["URGENT_PRIORITIES", "call_list", "urgent_rows"]
