"""The six KPIs on many days at once: what no day changes is found once, each day is a mask.

``compute_kpis_on_days`` (``serving.app.kpis``) used to rebuild each day's audit log and every
KPI from it: a pandas pass over the whole log per day and KPI (~45 s for 14 days at a million
learners). Most of that work does not depend on the day:

- a learner's transitions in append order (``id``) come in day order, so the log known at a day
  is a prefix of each learner's log: the previous transition of a move, the n-th exit closing
  the n-th risk episode, a move's run of qualifying days are the same on every later day;
- a learner's tag at the end of a day is that of their last transition on or before it, and the
  next transition closes it: counting on many days is counting intervals (``np.searchsorted``);
- a label or a revert seen later than the day changes no verdict of that day (the KPI functions'
  docstrings say why for each).

So ``kpi_history`` finds the moves, runs, episodes, automatic moves and their labels once, and
``kpis_on_days`` keeps, on each day, the rows known then. A log whose days go back within a
learner (an id order that is not the day order) breaks the prefix argument: its KPIs are
computed day by day (``kpis_day_by_day``), as before. ``tests/serving/app/test_kpi_days.py``
checks that both give the same KPIs, details included, on every day of hand-built histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schemas import customers_schema, labels_schema
from serving.app.kpi_masks import (
    accuracy_on_days,
    active_counts,
    mastery_on_days,
    recovery_on_days,
    runs_on_days,
)
from serving.app.kpi_model import Kpi
from serving.app.kpi_runs import (
    detection_moves,
    progression_moves,
    progression_runs,
    progression_velocity,
    risk_detection_days,
)
from serving.app.kpis import (
    SCORE_COLUMNS,
    TRANSITION_COLUMNS,
    _log_until,
    active_kpi,
    active_learner_rate,
    automatic_moves,
    automation_accuracy,
    coded_log_until,
    complete_labels,
    mastery_learners,
    mastery_within_60_days,
    moves_churned,
    recovery_rate,
    risk_episodes,
)
from serving.app.qualifying import MEASURED_TARGETS, DecisionDays, qualifying_runs, run_starts
from serving.core.frames import (
    STORED_SCORES_SCHEMA,
    TRANSITIONS_SCHEMA,
    is_in,
    positions_in,
    validate_frame,
)
from serving.core.tags import RISK_TAG


@dataclass(frozen=True)
class KpiHistory:
    """The checked frames of the KPIs and what no day up to ``until`` changes in them.

    Attributes:
        transitions: the checked audit log; ``scores``: the checked scores of the learner-days
            a transition up to ``until`` happened on (the only ones recovery joins);
            ``customers``, ``labels`` (None: no event log) checked too; ``runs``:
            ``qualifying_runs`` by target tag.
        decisions: the batch days' decision inputs (None: none given).
        horizon_days: the labels' churn window W in days.
        until: the last day the history serves.
        log: ``_log_until(transitions, until)``.
        in_day_order: whether every learner's transitions in ``id`` order have non-decreasing
            days (what the day masks rely on).
        learners: ``mastery_learners`` of every customer.
        progression, detection: the moves into ST_002 and ST_004 the KPIs measure, each with
            its run status (``progression_runs``, ``run_starts``) when decisions are given.
        episodes: ``risk_episodes``; ``automatic``: ``automatic_moves``; ``churned``:
            ``moves_churned`` of every label (None: no labels).
        ids: the learners' ids; the frames from ``log`` on carry each row's learner as a
            position in it (``learner``) and only the columns a day reads, categorical: a day's
            masks, and a filter's, then cost by the row, not by the string.
        chosen: the learners kept by ``of_learners`` (None: all); the checked frames above
            ``log`` are narrowed to them only when read (``kpis_day_by_day``).
    """

    transitions: pd.DataFrame
    scores: pd.DataFrame
    customers: pd.DataFrame
    labels: pd.DataFrame | None
    runs: dict[str, pd.DataFrame]
    decisions: DecisionDays | None
    horizon_days: int
    until: pd.Timestamp
    log: pd.DataFrame
    in_day_order: bool
    learners: pd.DataFrame
    progression: pd.DataFrame
    detection: pd.DataFrame
    episodes: pd.DataFrame
    automatic: pd.DataFrame
    churned: pd.Series | None
    ids: pd.Index
    chosen: pd.Index | None = None

    def of_learners(self, customer_ids: Iterable[str]) -> KpiHistory:
        """The same history for only ``customer_ids``: every frame's rows of those learners.

        Every row above is a learner's own (moves, runs, episodes, labels), so keeping a
        learner's rows gives what their history alone would. Decision inputs without a list of
        loaded days date the stored days by the learners present: then all is found again.
        """
        chosen = unique_ids(customer_ids)
        if self.chosen is not None:
            chosen = chosen.intersection(self.chosen)
        if self.decisions is not None and self.decisions.loaded is None:
            return _prepare(*self.checked(chosen), self.horizon_days, self.until)
        # Arrow's hash lookup of every id in the chosen ones: pandas' get_indexer of a third of
        # a million ids against a million costs ~0.45 s of CPU, this ~0.14 s.
        return self._narrowed(is_in(self.ids, chosen), chosen)

    def of_positions(self, positions: np.ndarray) -> KpiHistory:
        """``of_learners`` of the learners at ``positions`` in ``ids`` (-1: not there): a mask
        of a million rows instead of a string lookup (~0.3 s of CPU at a million learners).

        Args:
            positions: ``positions_of`` the learners (found once per history by the caller).
        """
        known = np.asarray(positions)[np.asarray(positions) >= 0]
        by_id = self.decisions is not None and self.decisions.loaded is None
        if self.chosen is not None or by_id or not self.in_day_order:
            return self.of_learners(self.ids[known])  # these read the checked frames by id
        selected = np.zeros(len(self.ids), dtype=bool)
        selected[known] = True
        return self._narrowed(selected, self.ids[selected])

    def positions_of(self, customer_ids: pd.Series | pd.Index) -> np.ndarray:
        """Each of ``customer_ids``' position in ``ids`` (-1: not there), for ``of_positions``."""
        return positions_in(customer_ids, self.ids)

    def _narrowed(self, selected: np.ndarray, chosen: pd.Index) -> KpiHistory:
        """The frames from ``log`` on narrowed to the rows of ``selected`` learners (a boolean
        per ``ids``), remembering ``chosen`` (their ids)."""
        kept = {
            name: frame[selected[frame["learner"].to_numpy()]]
            for name in ("log", "learners", "progression", "detection", "episodes", "automatic")
            if (frame := getattr(self, name)) is not None
        }
        churned = None if self.churned is None else self.churned[kept["automatic"].index]
        return replace(self, **kept, churned=churned, chosen=chosen)

    def checked(
        self, chosen: pd.Index | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame | None, DecisionDays | None]:
        """The checked frames (transitions, scores, customers, labels, decisions) of the chosen
        learners (``chosen``, else ``self.chosen``; None: all)."""
        chosen = self.chosen if chosen is None else chosen
        frames = (self.transitions, self.scores, self.customers, self.labels)
        if chosen is None:
            return (*frames, self.decisions)
        decisions = self.decisions
        if decisions is not None:
            decisions = replace(decisions, inputs=_of(decisions.inputs, chosen))
        transitions, scores, customers, labels = (_of(frame, chosen) for frame in frames)
        return transitions, scores, customers, labels, decisions


def unique_ids(customer_ids: Iterable[str]) -> pd.Index:
    """The distinct ids of ``customer_ids`` (first seen first), as an Index of strings.

    Arrow finds them without a Python string per id: ``list()`` of a third of a million
    Arrow-backed ids and ``pd.unique`` over them cost ~0.3 s of CPU, this ~0.08 s.
    """
    if not isinstance(customer_ids, pd.Series | pd.Index | np.ndarray | list):
        customer_ids = list(customer_ids)  # a generator or a set: Arrow takes sequences
    distinct = pc.unique(pa.array(customer_ids, pa.string()))
    return pd.Index(distinct.to_pandas(), dtype="str", copy=False)


def _of(frame: pd.DataFrame | None, chosen: pd.Index) -> pd.DataFrame | None:
    if frame is None:
        return None
    return frame[is_in(frame["customer_id"], chosen)]


def kpi_history(
    transitions: pd.DataFrame,
    scores: pd.DataFrame,
    customers: pd.DataFrame,
    *,
    until: date,
    outcomes: pd.DataFrame | None,
    decisions: DecisionDays | None,
    horizon_days: int,
) -> KpiHistory:
    """Check the KPIs' frames (``compute_kpis_on_days``' arguments) and find what no day up to
    ``until`` changes.

    Raises:
        ValueError: a frame breaks its contract (names the frame, column and values).
    """
    # Only the columns read are checked: callers may pass a narrow read of the store.
    transitions = validate_frame(
        transitions[list(TRANSITION_COLUMNS)],
        TRANSITIONS_SCHEMA.select_columns(list(TRANSITION_COLUMNS)),
    )
    score_schema = STORED_SCORES_SCHEMA.select_columns(list(SCORE_COLUMNS))
    known_scores = validate_frame(scores[list(SCORE_COLUMNS)], score_schema)
    customers = validate_frame(customers, customers_schema())
    labels = None if outcomes is None else validate_frame(outcomes, labels_schema())
    day = pd.Timestamp(until.year, until.month, until.day)
    return _prepare(transitions, known_scores, customers, labels, decisions, horizon_days, day)


def _learner_days_in(
    frame: pd.DataFrame, other: pd.DataFrame, coded: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Whether each (customer_id, as_of) of ``frame`` is one of ``other``'s.

    Each pair as one integer (the learner's position among ``other``'s distinct ids, then
    the day): two ``MultiIndex`` objects and their ``isin`` cost ~1.2 s at 1M learners.
    ``coded``: ``frame``'s and ``other``'s rows' learners as codes into ``other``'s distinct
    ids (-1: none), when known (``coded_log_until``): the ids are then not looked up again.
    """
    if coded is None:
        their_ids = other["customer_id"].astype(str).array
        ids = pd.unique(their_ids)
        coded = (
            positions_in(frame["customer_id"].astype(str).array, ids),
            positions_in(their_ids, ids),
        )
    their_days, my_days = (_days(part) for part in (other, frame))
    first, span = _day_span(their_days, my_days)
    theirs = _day_keys(coded[1], their_days - first, span)
    mine = _day_keys(coded[0], my_days - first, span)
    return _found(mine, theirs) & (mine >= 0)


def _found(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Whether each of the integer ``keys`` is one of ``wanted``: numpy's table of their range
    when it is small (one pass over each side), else a hash set. ``np.isin`` sorts both sides
    once the range is too wide for its table: 4M learner-days among 4M over 120 days cost 4.7 s
    that way, 0.36 s hashed; 2.8M among 950k over 3 days 0.03 s by the table, 0.17 s hashed.
    """
    if not len(keys) or not len(wanted):
        return np.zeros(len(keys), dtype=bool)
    if int(wanted.max()) - int(wanted.min()) <= 6 * (len(keys) + len(wanted)):  # numpy's bound
        return np.isin(keys, wanted, kind="table")
    return pd.Series(keys, copy=False).isin(wanted).to_numpy()


def _days(frame: pd.DataFrame) -> np.ndarray:
    """The frame's ``as_of`` as days since 1970."""
    return frame["as_of"].to_numpy("datetime64[D]").astype(np.int64)


def _day_span(*days: np.ndarray) -> tuple[int, int]:
    """The first of the days and how many days from it to the last (1 when there are none)."""
    known = [part for part in days if len(part)]
    if not known:
        return 0, 1
    first = min(int(part.min()) for part in known)
    return first, max(int(part.max()) for part in known) - first + 1


def _day_keys(learner: np.ndarray, day: np.ndarray, span: int) -> np.ndarray:
    """(learner, day) as one integer, ``learner * span + day`` (``day`` counted from the first
    of ``span`` days); -1 for a learner not found.

    Dense keys: over a few days ``np.isin`` looks them up in a table of that many (one pass
    over each side) instead of sorting both (2.8M learner-days of 1M learners among 950k, over 3
    days: 1.83-1.92 -> 0.70-0.74 s); over many, a hash set does (``_found``).
    """
    return np.where(learner >= 0, learner.astype(np.int64) * span + day, -1)


def _prepare(
    transitions: pd.DataFrame,
    scores: pd.DataFrame,
    customers: pd.DataFrame,
    labels: pd.DataFrame | None,
    decisions: DecisionDays | None,
    horizon_days: int,
    until: pd.Timestamp,
) -> KpiHistory:
    runs = {}
    if decisions is not None:
        runs = {tag: qualifying_runs(decisions, tag) for tag in MEASURED_TARGETS}
    log, codes, log_ids = coded_log_until(transitions, until)
    # the scores of the learner-days the log moved someone on (the only ones recovery joins)
    log_texts = log_ids.astype(str).array
    score_codes = positions_in(scores["customer_id"].astype(str).array, log_texts)
    moved_on = _learner_days_in(scores, log, (score_codes, codes))
    scores, score_codes = scores[moved_on], score_codes[moved_on]
    went_back = log["as_of"] < log["previous_as_of"]
    progression = progression_moves(log)
    detection = detection_moves(log, decisions)
    if decisions is not None:
        progression = progression_runs(progression, decisions, runs["ST_002"])
        detection = run_starts(detection, decisions, RISK_TAG, runs[RISK_TAG])
    automatic = automatic_moves(log)
    learners = mastery_learners(log, customers).assign(customer_id=customers["customer_id"])
    # the customers' ids, then the log's others; each log row's position found through its
    # code (a null id's -1 picks the -1 appended)
    known = pd.concat([customers["customer_id"], pd.Series(log_texts)], ignore_index=True)
    ids = pd.Index(pd.unique(known.astype(str)))
    at = np.append(positions_in(log_texts, ids.array), -1)[codes]
    slim = _Slim(ids)
    return KpiHistory(
        transitions=transitions, scores=scores, customers=customers, labels=labels, runs=runs,
        decisions=decisions, horizon_days=horizon_days, until=until,
        log=slim(log, ["as_of", "to_tag", "next_as_of"], at),
        in_day_order=not bool(went_back.any()),
        learners=slim(learners, ["enrolled_day", "mastered_after"]),
        progression=slim(progression, RUN_COLUMNS), detection=slim(detection, RUN_COLUMNS),
        episodes=slim(
            risk_episodes(log, scores, (codes, score_codes)),
            ["as_of", "ended_on", "to_tag", "control"],
        ),
        # the automatic moves are rows of the log, labelled by their positions in it
        automatic=slim(automatic, ["as_of", "to_tag", "reverted"], at[automatic.index]),
        churned=None if labels is None else moves_churned(automatic, labels), ids=ids,
    )  # fmt: skip


RUN_COLUMNS = ["as_of", "status", "first_day", "entered"]
"""What the run-based KPIs read of a day's moves (``status`` only without decision inputs)."""


@dataclass(frozen=True)
class _Slim:
    """A frame's ``columns`` (text as categories) with its rows' ``learner`` positions (found
    among ``ids``, or given)."""

    ids: pd.Index

    def __call__(
        self, frame: pd.DataFrame, columns: list[str], learner: np.ndarray | None = None
    ) -> pd.DataFrame:
        kept = {}
        for name in columns:
            if name not in frame:
                continue  # a run status without decision inputs
            column = frame[name]
            is_text = column.dtype == object or pd.api.types.is_string_dtype(column.dtype)
            kept[name] = column.astype("category") if is_text and name != "control" else column
        if learner is None:
            learner = positions_in(frame["customer_id"].astype(str).array, self.ids.array)
        return pd.DataFrame({"learner": learner, **kept}, index=frame.index)


def kpis_on_days(history: KpiHistory, days: Sequence[date]) -> dict[date, list[Kpi]]:
    """The six KPIs on each of ``days`` (none after ``history.until``), from what was known then.

    Raises:
        ValueError: a day after the history's last day (its log was cut there).
    """
    stamps = [pd.Timestamp(day.year, day.month, day.day) for day in days]
    late = [day for day, stamp in zip(days, stamps, strict=True) if stamp > history.until]
    if late:
        raise ValueError(f"days {late} come after the KPI history's last day {history.until}")
    if not history.in_day_order:
        return kpis_day_by_day(history, days)
    start = history.log["as_of"].min() if len(history.log) else None
    decisions = history.decisions
    columns = zip(
        [active_kpi(active, live) for active, live in active_counts(history.log, stamps)],
        runs_on_days(history.progression, stamps, decisions, "ST_002"),
        mastery_on_days(history.learners, start, stamps),
        runs_on_days(history.detection, stamps, decisions, RISK_TAG),
        recovery_on_days(history.episodes, stamps),
        accuracy_on_days(history.automatic, history.churned, stamps, history.horizon_days),
        strict=True,
    )
    return {day: list(kpis) for day, kpis in zip(days, columns, strict=True)}


def kpis_day_by_day(history: KpiHistory, days: Sequence[date]) -> dict[date, list[Kpi]]:
    """The six KPIs on each of ``days``, each from that day's log rebuilt (the reference)."""
    transitions, scores, customers, labels, decisions = history.checked()
    runs = history.runs
    if history.chosen is not None:
        runs = {tag: _of(frame, history.chosen) for tag, frame in runs.items()}
    kpis = {}
    for as_of in days:
        day = pd.Timestamp(as_of.year, as_of.month, as_of.day)
        log = _log_until(transitions, day)
        complete = None if labels is None else complete_labels(labels, day, history.horizon_days)
        kpis[as_of] = [
            active_learner_rate(log),
            progression_velocity(log, decisions, runs.get("ST_002")),
            mastery_within_60_days(log, customers, day),
            risk_detection_days(log, decisions, runs.get(RISK_TAG)),
            recovery_rate(log, scores[scores["as_of"] <= day]),
            automation_accuracy(log, day, complete),
        ]
    return kpis


__all__ = ["KpiHistory", "kpi_history", "kpis_day_by_day", "kpis_on_days", "unique_ids"]
