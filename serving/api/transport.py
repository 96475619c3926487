"""Feature rows between the public service and the internal features process.

The features process assembles rows with ``serving.infra.learners.day_features`` and sends each
learner's row as a one-row Arrow IPC stream (column types kept exactly, booleans, nullable
integers and categories included), or the learner's problem as (kind, message). The public
service puts them back together into one ``DayFeatures``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from serving.api.models import CustomerIn, EventIn, FeatureItem, FeatureOutcome, LearnerIn
from serving.core.asks import LearnerAsk, rounds
from serving.core.problems import problem_of
from serving.infra.learners import DayFeatures, LearnerData, day_features


def feature_item(ask: LearnerAsk) -> FeatureItem:
    """An ask as the features process takes it (already validated: built, not re-checked)."""
    events = None
    if ask.events is not None:
        events = [EventIn.model_construct(**event) for event in ask.events]
    customer = None if ask.customer is None else CustomerIn.model_construct(**ask.customer)
    learner = LearnerIn.model_construct(
        customer_id=ask.customer_id, events=events, customer=customer
    )
    return FeatureItem.model_construct(learner=learner, as_of=ask.as_of, now=ask.now)


def feature_outcomes(asks: Sequence[LearnerAsk], data: LearnerData) -> list[FeatureOutcome]:
    """Features of a merged batch of asks: one assembly per (day, round of distinct learners).

    Returns:
        One outcome per ask, in the asks' order.
    """
    data.refresh()
    outcomes: dict[int, FeatureOutcome] = {}
    for positions in rounds(asks):
        group = [asks[position] for position in positions]
        features = day_features(group, data)
        rows = _rows_by_id(features.frame)
        for position, ask in zip(positions, group, strict=True):
            outcomes[position] = _outcome(ask.customer_id, features, rows)
    return [outcomes[position] for position in range(len(asks))]


def day_features_of(outcomes: Sequence[FeatureOutcome]) -> DayFeatures:
    """The outcomes put back together: one frame, the sources and the problems."""
    tables = [pa.ipc.open_stream(outcome.row).read_all() for outcome in outcomes if outcome.row]
    frame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    return DayFeatures(
        frame=frame,
        sources={o.customer_id: o.source for o in outcomes if o.source is not None},
        problems={
            o.customer_id: problem_of(o.problem_kind, o.problem_message or "")
            for o in outcomes
            if o.problem_kind is not None
        },
        unstored=frozenset(o.customer_id for o in outcomes if not o.stored),
    )


def _rows_by_id(frame: pd.DataFrame) -> dict[str, bytes]:
    """Each learner's row as an Arrow IPC stream."""
    if frame.empty:
        return {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ids = frame["customer_id"].astype(str).tolist()
    return {customer_id: _stream(table.slice(row, 1)) for row, customer_id in enumerate(ids)}


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _outcome(customer_id: str, features: DayFeatures, rows: dict[str, bytes]) -> FeatureOutcome:
    problem = features.problems.get(customer_id)
    if problem is not None:
        return FeatureOutcome(
            customer_id=customer_id, problem_kind=problem.kind, problem_message=problem.message
        )
    # Built, not validated: validation would read the raw row as base64 text (it is encoded
    # as base64 when the outcome is serialised, and decoded when the other side parses it).
    return FeatureOutcome.model_construct(
        customer_id=customer_id,
        stored=customer_id not in features.unstored,
        source=features.sources[customer_id],
        row=rows[customer_id],
        problem_kind=None,
        problem_message=None,
    )


__all__ = ["day_features_of", "feature_item", "feature_outcomes"]
