"""The decision inputs the run-based KPIs read: each measured move's run, walked back from it.

Progression velocity and detection speed measure an automatic move into ST_002 or ST_004 from
the first day of the uninterrupted run of days on which the learner qualified for it
(``serving.app.qualifying``). That run needs the learner's stored inputs (feature snapshot and
scores) on the move's day, on each earlier day while they kept qualifying, and on the day that
ends the run. Loading, for every day, the inputs of every learner with a measured move on it or
later read almost every learner's every day once most of them had moved recently: at 200k
learners the KPIs after 10 stored days took 2.6 s, after 30 days 9.9 s, and they grew faster
than the days.

``load_run_days`` walks the stored days backwards instead, keeping per day only the moves made
on it and the runs still open (a learner qualifying the day after, for the move's source tag and
target): the rows read are the runs' days, so the KPIs grow with the moves, not with days x
learners. Every move's run has the same rows as in the full inputs, so ``qualifying_runs`` finds
the same first days (``tests/serving/app/test_decision_runs.py`` holds the KPIs to those of
every learner's every day).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rules import MODEL_SCORE_COLUMNS, RuleSet
from rules.conditions import iter_leaves
from rules.config import NEW
from serving.app.qualifying import MEASURED_TARGETS, DecisionDays, qualifying_days, qualifying_of
from serving.infra.snapshots import snapshot_path

KEYS = ["customer_id", "as_of"]
RUN = ["customer_id", "from_tag", "to_tag"]
"""A measured run: the learner, the tag they qualified from and the tag they qualified for."""

ScoresOf = Callable[[date, pa.Array], pd.DataFrame]
"""A day's stored scores (``KEYS`` and the model columns the rules read) of some learners."""


def measured_moves(transitions: pd.DataFrame) -> pd.DataFrame:
    """The automatic moves into ``MEASURED_TARGETS``: ``customer_id``, ``as_of``, ``from_tag``
    (``rules.config.NEW`` for a learner first seen that day) and ``to_tag``."""
    moved = transitions[
        transitions["rule_id"].notna() & transitions["to_tag"].isin(MEASURED_TARGETS)
    ]
    from_tag = moved["from_tag"].astype(object)
    return pd.DataFrame(
        {
            "customer_id": moved["customer_id"].astype(str).to_numpy(),
            "as_of": pd.to_datetime(moved["as_of"]).to_numpy("datetime64[D]"),
            "from_tag": from_tag.where(from_tag.notna(), NEW).astype(str).to_numpy(),
            "to_tag": moved["to_tag"].astype(str).to_numpy(),
        }
    )


def load_run_days(
    data_dir: Path,
    ruleset: RuleSet,
    days: Iterable[date],
    moves: pd.DataFrame,
    scores_of: ScoresOf,
) -> DecisionDays:
    """The decision inputs of the learner-days the runs of ``moves`` cover (``measured_moves``).

    Args:
        data_dir: where the batch writes its snapshots (``Settings.data_path``).
        ruleset: the rules whose conditions say who qualifies.
        days: the completed batch days.
        moves: the moves to measure (``measured_moves``).
        scores_of: a day's stored scores of the given learners.
    """
    wanted = _measured_features(ruleset)
    moves_on = {day: group[RUN] for day, group in moves.groupby("as_of")}
    open_runs, frames, missing, loaded = _NO_RUNS, [], [], []
    found: dict[str, list[pd.DataFrame]] = {target: [] for target in MEASURED_TARGETS}
    for day in sorted(set(days), reverse=True):
        path = snapshot_path(data_dir, day)
        if not path.exists():  # no inputs: no one qualifies, every open run ends here
            missing.append(day)
            open_runs = _NO_RUNS
            continue
        loaded.append(day)
        runs = pd.concat([moves_on.get(pd.Timestamp(day), _NO_RUNS), open_runs]).drop_duplicates()
        if runs.empty:
            continue
        learners = pa.array(runs["customer_id"].unique(), pa.string())
        inputs = _day_inputs(path, wanted, learners, scores_of(day, learners))
        frames.append(inputs)
        day = DecisionDays(ruleset, inputs)
        qualifying = {target: qualifying_days(day, target) for target in MEASURED_TARGETS}
        for target, rows in found.items():
            rows.append(qualifying[target])
        open_runs = runs.merge(_runs_of(qualifying), on=RUN)
    inputs = pd.concat(frames[::-1], ignore_index=True) if frames else pd.DataFrame(columns=KEYS)
    inputs = inputs.astype({"customer_id": str, "as_of": "datetime64[us]"})
    days = DecisionDays(ruleset, inputs, missing=tuple(missing[::-1]), loaded=tuple(loaded[::-1]))
    # The conditions are row by row: each day's qualifying rows are the whole inputs' on it.
    days.found.update({target: qualifying_of(rows) for target, rows in found.items()})
    return days


_NO_RUNS = pd.DataFrame({name: pd.Series(dtype=str) for name in RUN})


def _measured_features(ruleset: RuleSet) -> list[str]:
    """The stored features the conditions of the rules into ``MEASURED_TARGETS`` read: the
    columns of a snapshot the runs need (a day's snapshot is decoded for its few rows, so each
    column left out is read from no day)."""
    read = {
        leaf.feature
        for rule in ruleset.rules
        if rule.to in MEASURED_TARGETS
        for _, leaf in iter_leaves(rule.condition)
    }
    return [name for name in ruleset.features_used if name in read - MODEL_SCORE_COLUMNS]


def _day_inputs(
    path: Path, wanted: list[str], learners: pa.Array, scores: pd.DataFrame
) -> pd.DataFrame:
    """One day's snapshot rows of ``learners`` (its columns among ``KEYS + wanted``), with their
    scores: what the batch decided on that day."""
    present = set(pq.read_schema(path).names)
    columns = [name for name in KEYS + wanted if name in present]
    rows = pc.field("customer_id").isin(learners)
    features = pq.read_table(path, columns=columns, filters=rows).to_pandas()
    features = features.astype({"customer_id": str, "as_of": "datetime64[us]"})
    scores = scores.astype({"customer_id": str, "as_of": "datetime64[us]"})
    return features.merge(scores, on=KEYS, how="left")


def _runs_of(qualifying: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The runs of one day's qualifying rows by target (``qualifying_days``): ``RUN``, one row
    each."""
    found = [rows.assign(to_tag=target) for target, rows in qualifying.items()]
    return pd.concat(found, ignore_index=True)[RUN].drop_duplicates()


__all__ = ["ScoresOf", "load_run_days", "measured_moves"]
