"""The outbox's shared contexts: the messages one day plans for one learner and campaign keep
their context once, on one of them (``serving.core.messages.SHARED_CONTEXT`` on the others);
what reads messages to render or show them gets each its own from here."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy import Connection, select

from serving.core.messages import SHARED_CONTEXT
from serving.core.outbox import CONTEXT_GROUP, own_contexts
from serving.infra.tables import Outbox

_HOLDER_LEARNERS = 10_000
"""Learners per statement of ``holder_contexts`` (their ids are parameters: under SQLite's
32,766 with the groups' campaigns and days beside them)."""


def holder_contexts(
    conn: Connection, groups: Iterable[tuple[str, str, date]]
) -> dict[tuple[str, str, date], str]:
    """The context each (customer_id, campaign_id, planned_on) group of messages holds: the
    outbox keeps it on one of them, ``SHARED_CONTEXT`` on the others (``serving.core.messages``).

    Read as learners IN (...) AND campaigns IN (...) AND days IN (...), which both databases
    answer by seeks into the (customer_id, campaign_id, planned_on, ...) index, then kept to
    the groups asked for: a row-value ``IN`` of the groups made SQLite scan the whole outbox
    (2.7 s for 5,000 groups at 1M learners, against 0.13 s).
    """
    wanted = set(groups)
    learners = sorted({customer_id for customer_id, _, _ in wanted})
    found: dict[tuple[str, str, date], str] = {}
    for start in range(0, len(learners), _HOLDER_LEARNERS):
        chunk = learners[start : start + _HOLDER_LEARNERS]
        in_chunk = set(chunk)
        mine = [group for group in wanted if group[0] in in_chunk]
        stmt = select(
            Outbox.customer_id, Outbox.campaign_id, Outbox.planned_on, Outbox.context
        ).where(
            Outbox.customer_id.in_(chunk),
            Outbox.campaign_id.in_(sorted({campaign for _, campaign, _ in mine})),
            Outbox.planned_on.in_(sorted({day for _, _, day in mine})),
            Outbox.context != SHARED_CONTEXT,
        )
        for customer_id, campaign_id, planned_on, context in conn.execute(stmt):
            if (customer_id, campaign_id, planned_on) in wanted:
                found.setdefault((customer_id, campaign_id, planned_on), context)
    return found


def with_own_contexts(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outbox rows (the driver's) with each ``SHARED_CONTEXT`` replaced by its group's
    (``frame_with_own_contexts``)."""
    if not any(row["context"] == SHARED_CONTEXT for row in rows):
        return rows
    contexts = frame_with_own_contexts(conn, pd.DataFrame(rows))["context"]
    for row, context in zip(rows, contexts, strict=True):
        row["context"] = context
    return rows


def frame_with_own_contexts(conn: Connection, frame: pd.DataFrame) -> pd.DataFrame:
    """A frame of outbox rows (the driver's values: ``planned_on`` a date) with each
    ``SHARED_CONTEXT`` replaced by its group's: from the holders among its rows
    (``own_contexts``), the others read (``holder_contexts``); a frame without ``context`` as
    it is."""
    if "context" not in frame:
        return frame
    filled = own_contexts(frame, frame)
    shared = (filled["context"] == SHARED_CONTEXT).to_numpy()
    if not shared.any():
        return filled
    wanted = list(filled.loc[shared, CONTEXT_GROUP].itertuples(index=False, name=None))
    read = holder_contexts(conn, wanted)
    contexts = filled["context"].copy()
    contexts[shared] = [read.get(group, SHARED_CONTEXT) for group in wanted]
    return filled.assign(context=contexts)


__all__ = ["frame_with_own_contexts", "holder_contexts", "with_own_contexts"]
