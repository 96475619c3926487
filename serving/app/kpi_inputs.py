"""The KPIs' inputs, loaded at the edge: the store's frames, the batch's decision inputs, labels.

``kpis_at`` is what ``lstep kpis``, ``lstep demo`` and the report call: it reads the audit log
(the KPIs' columns), the runs, each day's moved learners' scores (``moved_scores``), the measured
moves' runs of qualifying days (the run ledger of ``decision_runs``, which reads a new day's
feature snapshot joined with its scores: what the rules decided on) and, when the event log is
given, the churn labels of the automatic ST_004 moves; then it hands them to the pure
``compute_kpis``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.carry import CARRY_SUBDIR
from features.kept_proof import kept_record
from features.labels import LABEL_EVENT_COLUMNS, compute_labels
from features.parquet_source import parquet_source
from features.validation import load_events
from features.workspace import connect
from rules import MODEL_SCORE_COLUMNS, RuleSet
from serving.app.decision_runs import ScoresOf, measured_moves, run_ledger
from serving.app.kept_labels import (
    LabelsKey,
    empty_labels,
    keep_labels,
    kept_labels,
    labels_key,
)
from serving.app.kpi_files import DaysProgress, code_digest
from serving.app.kpis import (
    LABEL_HORIZON_DAYS,
    SCORE_COLUMNS,
    TRANSITION_COLUMNS,
    Kpi,
    compute_kpis,
)
from serving.app.moved_scores import moved_scores
from serving.app.qualifying import DecisionDays
from serving.core.frames import is_in
from serving.core.tags import RISK_TAG
from serving.infra.snapshots import snapshot_path
from serving.infra.store import StateStore

KEYS = ["customer_id", "as_of"]


def load_decision_days(
    data_dir: Path,
    scores: pd.DataFrame,
    ruleset: RuleSet,
    days: Iterable[date],
    customer_ids: Sequence[str] | None = None,
) -> DecisionDays:
    """Each batch day's feature snapshot joined with that day's stored scores.

    Only the columns the rules read are loaded (and only ``customer_ids`` when given), so a long
    history stays affordable. Days whose snapshot is missing are listed, not guessed.

    Args:
        data_dir: where the batch writes its snapshots (``Settings.data_path``).
        scores: the stored scores (``StateStore.scores_frame``).
        ruleset: the rules whose conditions will be evaluated.
        days: the completed batch days to load.
        customer_ids: the learners to keep (None: all).
    """
    wanted = [name for name in ruleset.features_used if name not in MODEL_SCORE_COLUMNS]
    paths, missing, loaded = [], [], []
    for day in sorted(days):
        path = snapshot_path(data_dir, day)
        if path.exists():
            loaded.append(day)
            paths.append(path)
        else:
            missing.append(day)
    rows = None if customer_ids is None else _learners(customer_ids)
    groups = _same_columns(paths, wanted)
    frames = [_read_snapshots(group, columns, rows) for columns, group in groups]
    features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)
    features = features.astype({"customer_id": str, "as_of": "datetime64[us]"})
    model = [name for name in MODEL_SCORE_COLUMNS if name in scores]
    # Only the scores of the learners loaded can join: every day's scores are millions of rows
    # (a merge over 14M rows cost ~5 s of CPU at a million learners), the loaded a fraction.
    joinable = is_in(scores["customer_id"], features["customer_id"])
    day_scores = scores.loc[joinable, KEYS + model]
    day_scores = day_scores.astype({"customer_id": str, "as_of": "datetime64[us]"})
    inputs = features.merge(day_scores, on=KEYS, how="left")
    return DecisionDays(ruleset, inputs, missing=tuple(missing), loaded=tuple(loaded))


def _learners(customer_ids: Sequence[str]) -> pc.Expression:
    """The rows of these learners (typed: an empty list is "no learner", not a null-typed set)."""
    return pc.field("customer_id").isin(pa.array(list(customer_ids), pa.string()))


def _same_columns(paths: list[Path], wanted: list[str]) -> Iterator[tuple[list[str], list[Path]]]:
    """Runs of consecutive snapshots with the same ``KEYS + wanted`` columns (names and types).

    A feature added to the rules after a snapshot was written is absent from it (null after the
    concatenation); a run of snapshots alike is read in one scan.
    """

    def fields(path: Path) -> tuple[tuple[str, str], ...]:
        schema = pq.read_schema(path)
        named = [name for name in KEYS + wanted if name in schema.names]
        return tuple((name, str(schema.field(name).type)) for name in named)

    for run, group in itertools.groupby(paths, key=fields):
        yield [name for name, _ in run], list(group)


def _read_snapshots(
    paths: list[Path], columns: list[str], rows: pc.Expression | None
) -> pd.DataFrame:
    """``columns`` of the ``rows`` of snapshots alike, in their order: one scan, not one per day."""
    dataset = ds.dataset([str(path) for path in paths], format="parquet")
    return dataset.to_table(columns=columns, filter=rows).to_pandas()


@dataclass(frozen=True)
class StoredEvents:
    """The event store's parquet file, read only for the rows the KPIs' labels read.

    The labels of automation accuracy need the events of the learners moved to ST_004 whose
    label window is complete, within those windows: a fraction of the log. Validating those
    rows alone (against the same contract) spares ``lstep kpis`` a validation of the whole log
    on every call. The log's last event, which dates how far the labels are complete, is the
    whole file's.

    Attributes:
        path: the events parquet file (the event store's, in contract form).
        now: events after this instant are an error, as in ``load_valid_inputs``.
    """

    path: Path
    now: datetime

    def last_event(self) -> pd.Timestamp | None:
        """The log's last event (naive UTC), None for an empty log (``last_instant``)."""
        return last_instant(self.path)

    def of_learners(
        self,
        customer_ids: Sequence[str],
        window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The validated events of ``customer_ids``, only those in ``window`` when given.

        The scan keeps the window's rows (a filter on ``ts``, which the row groups' statistics
        can skip whole); the learners are picked from those. Reading the whole file first, then
        filtering, cost ``lstep kpis`` 15 s and gigabytes at 1M learners (59M events), even
        for no learner at all, which now reads nothing.

        Args:
            customer_ids: the learners to read.
            window: [start, end) as naive UTC instants; applied to a timestamp ``ts`` column
                (a text one is read whole: it is parsed by the validation).
            columns: the contract's columns to read and check (None: all); the others come
                back null (the validation's note), so a caller reading three of six columns
                decodes half the file.

        Raises:
            ValueError: those rows break the events contract (each error, naming the file).
        """
        log = ds.dataset(str(self.path), format="parquet")
        columns = None if columns is None else list(columns)
        if len(customer_ids) == 0:
            rows = log.schema.empty_table()
        else:
            window_rows = _window_filter(log.schema.field("ts").type, window)
            learners = pa.array(list(customer_ids), pa.string())
            id_type = log.schema.field("customer_id").type
            if pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
                # In the scan: the rows of other learners are dropped batch by batch instead of
                # being gathered first (200k learners x 60 days, a 30-day window, a third of its
                # learners: 4.2 -> 1.6 s)
                of_learners = pc.field("customer_id").isin(learners.cast(id_type))
                both = of_learners if window_rows is None else window_rows & of_learners
                rows = log.to_table(filter=both, columns=columns)
            else:
                rows = log.to_table(filter=window_rows, columns=columns)
                rows = rows.filter(pc.is_in(rows.column("customer_id"), learners))
        events, problems, _ = load_events(rows.to_pandas(), as_of_limit=self.now)
        errors = [replace(problem, source=self.path.name) for problem in problems]
        errors = [str(problem) for problem in errors if problem.severity == "error"]
        if errors:
            raise ValueError("; ".join(errors))
        return events


def _window_filter(
    stamp_type: pa.DataType, window: tuple[pd.Timestamp, pd.Timestamp] | None
) -> ds.Expression | None:
    """``start <= ts < end`` (naive UTC bounds) on a timestamp column, with or without a zone;
    None (every row) without a window or for a column of another type."""
    if window is None or not pa.types.is_timestamp(stamp_type):
        return None
    zone = stamp_type.tz
    bounds = [moment.tz_localize("UTC") if zone else moment for moment in window]
    low, high = (pa.scalar(moment.to_pydatetime(), stamp_type) for moment in bounds)
    return (pc.field("ts") >= low) & (pc.field("ts") < high)


def last_instant(path: Path) -> pd.Timestamp | None:
    """The last event of the parquet log at ``path`` (naive UTC), None for an empty log.

    A timestamp column's maximum is DuckDB's, which reads it off the row groups' statistics
    (59M events: 0.01 s, against 2.6 s reading every ``ts``; to the microsecond, as
    ``parquet_source`` reads a zoned nanosecond column); a text one is read whole.
    """
    if not pa.types.is_timestamp(pq.read_schema(path).field("ts").type):
        return _last_instant(pq.read_table(path, columns=["ts"]).column("ts"))
    con = connect()
    try:
        last = con.execute(f"SELECT max(ts) FROM {parquet_source(Path(path))}").fetchone()
    finally:
        con.close()
    return _last_instant(pa.chunked_array([pa.array([last[0]])]))


def _last_instant(stamps: pa.ChunkedArray) -> pd.Timestamp | None:
    last = pc.max(stamps).as_py()
    if last is None:
        return None
    moment = pd.Timestamp(last)
    return moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo else moment


def risk_move_labels(
    events: pd.DataFrame | StoredEvents,
    transitions: pd.DataFrame,
    as_of: date,
    horizon_days: int = LABEL_HORIZON_DAYS,
    kept: Path | None = None,
) -> pd.DataFrame:
    """Churn labels (``features.labels``) of the automatic ST_004 moves, complete by ``as_of``.

    The log counts as complete up to the end of ``as_of`` or its last event, whichever is
    earlier: a label whose window ends later is not known yet and is left out.

    Args:
        events: the validated event log, or the store's file (only the events the complete
            labels read are read: their learners', within their windows).
        transitions: the audit log up to ``as_of``.
        as_of: the KPI day.
        horizon_days: the churn window of the labels.
        kept: the data directory whose kept labels are read and kept (``serving.app.
            kept_labels``; only with the store's file); None: every label is computed.
    """
    risk = transitions[(transitions["to_tag"] == RISK_TAG) & transitions["rule_id"].notna()]
    spine = risk[KEYS].drop_duplicates().astype({"as_of": "datetime64[us]"})
    key = None
    if isinstance(events, StoredEvents) and kept is not None:
        key = labels_key(Path(events.path), horizon_days)  # the log's version before its read
    if isinstance(events, StoredEvents):
        last_event = events.last_event()
    else:
        stamps = pd.to_datetime(events["ts"], utc=True)
        last_event = stamps.max().tz_localize(None) if len(stamps) else None
    end_of_day = pd.Timestamp(as_of) + timedelta(days=1)
    last = None if last_event is None else last_event.floor("D") + timedelta(days=1)
    until = end_of_day if last is None else min(end_of_day, last)
    if isinstance(events, StoredEvents):
        return _stored_labels(events, spine, until, horizon_days, kept, key)
    return compute_labels(events, spine, horizon_days=horizon_days, observed_until=until)


def _stored_labels(
    events: StoredEvents,
    spine: pd.DataFrame,
    until: pd.Timestamp,
    horizon_days: int,
    data_dir: Path | None,
    key: LabelsKey | None,
) -> pd.DataFrame:
    """``compute_labels`` of the stored log: only the events of the complete windows are read
    (their learners', within them), and only for the labels not kept in ``data_dir`` under the
    log's version ``key`` (None: none kept)."""
    horizon = pd.Timedelta(days=horizon_days)
    complete = spine[spine["as_of"] + horizon <= until].astype({"customer_id": "str"})
    known = empty_labels()
    if data_dir is not None and key is not None:
        known = kept_labels(data_dir, key, kept_record(Path(data_dir) / CARRY_SUBDIR))
    found = complete.merge(known[KEYS], on=KEYS, how="left", indicator=True)
    new = complete[(found["_merge"] == "left_only").to_numpy()]
    learners = new["customer_id"].unique().tolist()
    window = (new["as_of"].min(), new["as_of"].max() + horizon) if learners else None
    rows = events.of_learners(learners, window, LABEL_EVENT_COLUMNS)
    fresh = compute_labels(rows, new, horizon_days=horizon_days, observed_until=until)
    if data_dir is not None and key == labels_key(Path(events.path), horizon_days):  # unmoved
        keep_labels(data_dir, key, known, fresh)
    labels = complete[KEYS].merge(pd.concat([known, fresh]), on=KEYS, how="left")  # its order
    labels.attrs.update(
        excluded_incomplete=len(spine) - len(complete), observed_until=until,
        horizon_days=horizon_days,
    )  # fmt: skip
    return labels


@dataclass(frozen=True)
class KpiInputs:
    """What ``compute_kpis`` reads besides the customers, loaded once for any day up to ``as_of``.

    Attributes:
        transitions: the audit log up to ``as_of``.
        scores: every day's stored scores of the learners moved that day, the KPIs' columns.
        decisions: the completed batch days' decision inputs.
        outcomes: the labels of the automatic ST_004 moves complete by ``as_of`` (None: no
            event log); ``compute_kpis`` keeps, for an earlier day, those complete by then.
    """

    transitions: pd.DataFrame
    scores: pd.DataFrame
    decisions: DecisionDays
    outcomes: pd.DataFrame | None


def load_kpi_inputs(
    store: StateStore,
    as_of: date,
    *,
    events: pd.DataFrame | StoredEvents | None,
    ruleset: RuleSet,
    data_dir: Path,
    transitions: pd.DataFrame | None = None,
    ledger_days: DaysProgress | None = None,
) -> KpiInputs:
    """The KPIs' inputs from the store, the snapshots and (when given) the event log.

    Args:
        store: the state store.
        as_of: the last day the KPIs will describe.
        events: validated events, or the store's file (``StoredEvents``), for the labels of
            automation accuracy (None: no labels).
        ruleset: the rules whose conditions date the first qualifying days.
        data_dir: where the batch's feature snapshots are.
        transitions: the store's audit log when the caller has read it already (a million
            learners' log costs seconds to read twice); None reads it.
        ledger_days: told the run ledger's days to compute (``run_ledger``; None: nowhere).
    """
    if transitions is None:
        transitions = store.transitions_frame(until=as_of, columns=TRANSITION_COLUMNS)
    else:
        transitions = transitions[transitions["as_of"] <= pd.Timestamp(as_of)]
    runs = store.runs()
    completed = runs[(runs["status"] == "completed") & (runs["as_of"].dt.date <= as_of)]
    days = list(zip(completed["as_of"].dt.date, completed["run_id"], strict=True))
    # Of each day, the KPIs' columns of the scores of the learners moved that day (the KPIs read
    # a score on its move's day), kept once read (moved_scores).
    scores = moved_scores(store, data_dir, transitions, days, SCORE_COLUMNS)
    # The measured moves' runs, kept day by day in the ledger beside the KPIs (decision_runs):
    # the rules' conditions read these model columns, on a new day's every learner once.
    model_columns = sorted(MODEL_SCORE_COLUMNS.intersection(ruleset.features_used))
    decisions = run_ledger(
        data_dir, ruleset, days, measured_moves(transitions),
        _scores_of(store, [*KEYS, *model_columns]), code=code_digest(), progress=ledger_days,
    )  # fmt: skip
    outcomes = None
    if events is not None:
        outcomes = risk_move_labels(events, transitions, as_of, kept=data_dir)
    return KpiInputs(transitions, scores, decisions, outcomes)


def _scores_of(store: StateStore, columns: list[str]) -> ScoresOf:
    """A day's stored ``columns`` of every learner, read from the store."""
    return lambda day: store.scores_frame(day, columns=columns)


def kpis_at(
    store: StateStore,
    as_of: date,
    *,
    customers: pd.DataFrame,
    events: pd.DataFrame | StoredEvents | None,
    ruleset: RuleSet,
    data_dir: Path,
    ledger_days: DaysProgress | None = None,
) -> list[Kpi]:
    """The six KPIs at ``as_of`` from the store, the snapshots and (when given) the event log.

    Args:
        store: the state store.
        as_of: the KPI day.
        customers: validated customers.
        events: validated events, or the store's file (``StoredEvents``), for the labels of
            automation accuracy (None: no labels).
        ruleset: the rules whose conditions date the first qualifying days.
        data_dir: where the batch's feature snapshots are.
        ledger_days: told the run ledger's days to compute (``run_ledger``; None: nowhere).
    """
    inputs = load_kpi_inputs(
        store, as_of, events=events, ruleset=ruleset, data_dir=data_dir, ledger_days=ledger_days
    )
    return compute_kpis(
        inputs.transitions, inputs.scores, customers, as_of=as_of, outcomes=inputs.outcomes,
        decisions=inputs.decisions,
    )  # fmt: skip


def event_store_inputs(
    events: Path, customers: Path, now: datetime
) -> tuple[pd.DataFrame | StoredEvents | None, pd.DataFrame]:
    """The event log as the KPIs read it, and the customers (what ``lstep kpis`` reads).

    A parquet log is read lazily (``StoredEvents``: only the learners the labels need, checked
    against the contract); another format is validated whole. Without both files there are no
    labels, and without customers no mastery cohort (an empty frame).

    Raises:
        ValueError: the customers (or a non-parquet log) break their contract (each error).
    """
    from features.layout import PARQUET_SUFFIXES
    from features.validation import load_customers, load_valid_inputs, valid_customers

    if events.exists() and customers.exists():
        if events.suffix.lower() not in PARQUET_SUFFIXES:
            return load_valid_inputs(events, customers, now=now)
        return StoredEvents(events, now), valid_customers(customers, as_of_limit=now)
    if customers.exists():
        return None, load_customers(customers)[0]
    return None, pd.DataFrame(columns=["customer_id", "product_tag", "enrolled_at", "mrr"])


def event_store_kpis(
    store: StateStore, as_of: date, *, events: Path, customers: Path, ruleset: RuleSet,
    data_dir: Path, now: datetime, ledger_days: DaysProgress | None = None,
) -> list[Kpi]:  # fmt: skip
    """``kpis_at`` of the event store's files (``event_store_inputs``): ``lstep kpis``'s KPIs."""
    event_log, customer_frame = event_store_inputs(events, customers, now)
    return kpis_at(
        store, as_of, customers=customer_frame, events=event_log, ruleset=ruleset,
        data_dir=data_dir, ledger_days=ledger_days,
    )  # fmt: skip


__all__ = [
    "KpiInputs",
    "StoredEvents",
    "event_store_inputs",
    "event_store_kpis",
    "kpis_at",
    "last_instant",
    "load_decision_days",
    "load_kpi_inputs",
    "risk_move_labels",
]
