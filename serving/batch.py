"""The daily batch job: ``lstep score --as-of D`` (and ``--from D1 --to D2`` to backfill).

One day, in stages (each with a progress bar when a console is given):

1. **inputs**: events and customers validated (``features.validation.load_valid_inputs``); a
   backfill validates them once for all its days.
2. **learners**: everyone eligible at ``as_of`` (``features.windows.eligible_spine``) plus every
   learner whose stored tag is live (not ST_006). A learner who stopped being active is no longer
   eligible, but must still be decided on, or "30 days inactive -> ST_006" (R09) could never fire.
3. **features**: ``build_features(spine=...)``, the code training uses.
4. **score**: the champion (``models:/lstep-churn@champion``) via ``serving.scoring``; without a
   champion the job stops with a clear message unless ``rules_only`` is asked for, in which case
   the run, every score row and every decision say so.
5. **decide**: the rules engine on features + scores against the stored state.
6. **write**: ``StateStore.apply_batch``: scores, transitions and the run record in one
   transaction, idempotent per ``as_of`` (a completed day is not recomputed); ``dry_run`` writes
   nothing. Then the day's feature frame goes to ``<data_dir>/features/as_of=YYYY-MM-DD.parquet``,
   the service's online feature cache (``latest_feature_snapshot``).
7. **summary**: tag distribution and its change since the day before, transitions by rule, and
   the top P1/P2 learners (outside the control group, who get no intervention) with their top
   three reasons (SHAP reason codes; in rules-only mode the risk indicators that are on).
   ``BatchResult`` holds it as data; ``render_summary`` draws it for the CLI.

A replaced day (``replace=True``, the latest completed day only) is decided against the state
before that day: the store undoes the day's automatic transitions in the same transaction.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.catalog import load_catalog
from features.mapping import EventMapping
from features.validation import load_valid_inputs
from features.windows import TableInput, build_features, connect, eligible_spine, read_features
from rules import RuleSet
from serving.scoring import (
    Champion,
    NoChampionError,
    decide_learners,
    explain_learners,
    no_champion_message,
    score_features,
)
from serving.store import StateStore
from serving.store_models import CHURNED_TAG, STATUS_TAGS, RunRecord

TOP_LEARNERS = 20
TOP_REASONS = 3
ACTION_PRIORITIES: tuple[str, ...] = ("P1", "P2")
FEATURES_SUBDIR = "features"
_SNAPSHOT_NAME = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})\.parquet$")
STAGES: dict[str, str] = {
    "inputs": "validate inputs",
    "learners": "select learners",
    "features": "build features",
    "score": "score with the champion",
    "decide": "apply the rules",
    "write": "write to the state store",
    "summary": "summarise",
}


@dataclass(frozen=True)
class TopLearner:
    """One learner of the day's call list."""

    customer_id: str
    priority: str
    action: str
    to_tag: str
    p_churn: float | None
    value_at_risk: float
    rule_id: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class BatchResult:
    """What one day's run did (or, for a dry run, would do).

    Attributes:
        as_of: the batch day.
        run: the stored run record; None for a dry run. When ``already_done``, the earlier run.
        dry_run: nothing was written.
        already_done: the day was completed before; nothing was recomputed or written.
        rules_only: no model scored the day.
        model_version: the champion's version (None when rules-only).
        learners: learners decided on; ``eligible`` of them eligible, ``live_inactive`` kept
            because their stored tag is live.
        tags_before, tags_after: learners per tag in the store before and after the day.
        transitions_by_rule: moves per rule id that the day made (or would make).
        held: decisions held per reason (cooldown, override).
        skipped: changed decisions the store did not apply, per reason (see ``StateStore``).
        top_learners: the top P1/P2 learners outside the control group, most value at risk first.
        control_excluded: P1/P2 learners left off the list because they are in the control group.
        stage_seconds: wall time per stage.
        feature_snapshot: where the day's features were written (None for a dry run).
    """

    as_of: date
    run: RunRecord | None
    dry_run: bool
    already_done: bool
    rules_only: bool
    model_version: str | None
    learners: int = 0
    eligible: int = 0
    live_inactive: int = 0
    tags_before: dict[str, int] = field(default_factory=dict)
    tags_after: dict[str, int] = field(default_factory=dict)
    transitions_by_rule: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    top_learners: tuple[TopLearner, ...] = ()
    control_excluded: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    feature_snapshot: Path | None = None

    @property
    def transitions(self) -> int:
        """Moves the day made (or would make)."""
        return sum(self.transitions_by_rule.values())


# --- progress -------------------------------------------------------------------------------------


class _Stages:
    """Times each stage and, with a console, shows one progress bar per stage."""

    def __init__(self, progress: Progress | None, as_of: date) -> None:
        self.progress = progress
        self.as_of = as_of
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"{self.as_of} {STAGES[name]}", total=1)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        if task is not None:
            self.progress.update(task, completed=1)


@contextmanager
def _progress(console: Console | None) -> Iterator[Progress | None]:
    if console is None:
        yield None
        return
    columns = (TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress


# --- the day --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Day:
    """Everything a day's run needs, resolved once."""

    as_of: date
    events: TableInput
    customers: TableInput
    store: StateStore
    champion: Champion | None
    ruleset: RuleSet
    dry_run: bool
    run_id: str
    now: datetime
    replace: bool
    data_dir: Path | None
    top: int


def run_day(
    as_of: date,
    *,
    events: TableInput,
    customers: TableInput,
    store: StateStore,
    champion: Champion | None,
    ruleset: RuleSet,
    rules_only: bool = False,
    dry_run: bool = False,
    run_id: str,
    now: datetime,
    replace: bool = False,
    data_dir: Path | None = None,
    console: Console | None = None,
    inputs_validated: bool = False,
    mapping: EventMapping | str | Path | None = None,
    allow_unknown: bool = False,
    top: int = TOP_LEARNERS,
) -> BatchResult:
    """Run the daily batch for one ``as_of`` (see the module docstring).

    Args:
        as_of: the batch day (features use events before 00:00 UTC of it).
        events: events (frame or parquet/CSV path).
        customers: customers (frame or parquet/CSV path).
        store: the state store.
        champion: the loaded champion (``serving.scoring.load_champion``), or None.
        ruleset: the loaded rules.
        rules_only: run without the model (a champion given is then ignored).
        dry_run: compute and summarise, write nothing (neither the store nor the snapshot).
        run_id: the run's id (unique across runs).
        now: the current instant (aware): validation limit and the run's ``started_at``.
        replace: redo the latest completed day.
        data_dir: where ``features/as_of=...parquet`` snapshots go (none written when None).
        console: show a progress bar per stage on it.
        inputs_validated: the inputs already passed ``load_valid_inputs`` (a backfill).
        mapping: event-type mapping (YAML path or ``EventMapping``) for a foreign log.
        allow_unknown: load event types the mapping does not cover as ``other``.
        top: length of the call list in the summary.

    Raises:
        NoChampionError: no champion and not ``rules_only``.
        features.validation.InputError: the inputs fail validation (the rendered report).
        ValueError: a day before the latest completed one, or a replace of another day.
    """
    champion = None if rules_only else champion
    if champion is None and not rules_only:
        raise NoChampionError(no_champion_message())
    completed = _completed_runs(store)
    done = _check_day_order(as_of, completed, replace=replace)
    if done is not None:
        return _already_done(done, store)
    with _progress(console) as progress:
        stages = _Stages(progress, as_of)
        if not inputs_validated:
            with stages.stage("inputs"):
                events, customers = load_valid_inputs(
                    events, customers, mapping=mapping, allow_unknown=allow_unknown, now=now
                )
        day = _Day(
            as_of, events, customers, store, champion, ruleset, dry_run, run_id, now, replace,
            data_dir, top,
        )  # fmt: skip
        return _run_stages(day, stages, completed)


def _run_stages(day: _Day, stages: _Stages, completed: pd.DataFrame) -> BatchResult:
    """Stages 2-7 of one day (inputs already valid)."""
    con = connect()
    try:
        with stages.stage("learners"):
            state = _state_before(day.store, day.as_of, completed, replace=day.replace)
            spine, eligible = _learners(day, state, con)
        with stages.stage("features"):
            features = build_features(day.events, day.customers, spine=spine, con=con)
    finally:
        con.close()
    with stages.stage("score"):
        scores = score_features(features, day.champion)
    with stages.stage("decide"):
        decisions = decide_learners(features, scores, day.ruleset, state, day.as_of)
    with stages.stage("write"):
        run, snapshot = _write(day, features, scores, decisions)
    with stages.stage("summary"):
        summary = _summarise(day, state, features, decisions, run)
    return BatchResult(
        as_of=day.as_of,
        run=run,
        dry_run=day.dry_run,
        already_done=False,
        rules_only=day.champion is None,
        model_version=day.champion.version if day.champion is not None else None,
        learners=len(features),
        eligible=eligible,
        live_inactive=len(features) - eligible,
        stage_seconds=dict(stages.seconds),
        feature_snapshot=snapshot,
        **summary,
    )


def run_range(
    start: date,
    end: date,
    *,
    events: TableInput,
    customers: TableInput,
    store: StateStore,
    champion: Champion | None,
    ruleset: RuleSet,
    rules_only: bool = False,
    dry_run: bool = False,
    run_id: str,
    now: datetime,
    data_dir: Path | None = None,
    console: Console | None = None,
    mapping: EventMapping | str | Path | None = None,
    allow_unknown: bool = False,
    top: int = TOP_LEARNERS,
) -> list[BatchResult]:
    """Backfill: run the days ``start..end`` (inclusive) in order, validating the inputs once.

    Each day's run id is ``{run_id}-{YYYY-MM-DD}``; days already completed are skipped (their
    earlier record is returned). A dry run of several days is refused: each day is decided on
    the state the previous day wrote, which a dry run does not write.

    Raises:
        ValueError: ``end`` before ``start``, or a multi-day dry run.
        NoChampionError, features.validation.InputError: as ``run_day``.
    """
    if end < start:
        raise ValueError(f"backfill: --to {end} is before --from {start}")
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    if dry_run and len(days) > 1:
        raise ValueError(
            f"backfill: a dry run covers one day ({len(days)} asked): each day is decided on the "
            "state the previous day writes"
        )
    if champion is None and not rules_only:
        raise NoChampionError(no_champion_message())
    events, customers = load_valid_inputs(
        events, customers, mapping=mapping, allow_unknown=allow_unknown, now=now
    )
    shared = {
        "events": events,
        "customers": customers,
        "store": store,
        "champion": champion,
        "ruleset": ruleset,
        "rules_only": rules_only,
        "dry_run": dry_run,
        "now": now,
        "data_dir": data_dir,
        "inputs_validated": True,
        "top": top,
    }
    # One bar over the days rather than a bar per stage per day: a month's backfill would
    # otherwise print some 200 lines.
    results: list[BatchResult] = []
    with _progress(console) as progress:
        task = None if progress is None else progress.add_task("backfill days", total=len(days))
        for day in days:
            results.append(run_day(day, run_id=f"{run_id}-{day.isoformat()}", **shared))
            if progress is not None:
                progress.update(task, advance=1, description=f"backfill days (done {day})")
    return results


# --- stages ---------------------------------------------------------------------------------------


def _completed_runs(store: StateStore) -> pd.DataFrame:
    runs = store.runs()
    return runs[runs["status"] == "completed"]


def _check_day_order(as_of: date, completed: pd.DataFrame, *, replace: bool) -> RunRecord | None:
    """The completed record to reuse for ``as_of``, or None to run the day.

    Raises:
        ValueError: a day before the latest completed one, or replace of any other day.
    """
    if completed.empty:
        if replace:
            raise ValueError(f"replace: no completed run to replace (asked for {as_of})")
        return None
    latest = completed["as_of"].max().date()
    if replace and as_of != latest:
        raise ValueError(
            f"replace: only the latest completed day ({latest}) can be redone, not {as_of}"
        )
    if as_of < latest and not (completed["as_of"].dt.date == as_of).any():
        raise ValueError(
            f"{as_of} is before the latest completed batch day {latest}: days move forward; "
            "a missed day can only be run before later days"
        )
    same_day = completed[completed["as_of"].dt.date == as_of]
    if same_day.empty or replace:
        return None
    return RunRecord(**_record_values(same_day.iloc[0].to_dict()))


def _record_values(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: (None if _is_missing(value) else value) for name, value in row.items()}
    values["as_of"] = pd.Timestamp(values["as_of"]).date()
    for name in ("started_at", "finished_at"):
        if values[name] is not None:
            values[name] = pd.Timestamp(values[name]).to_pydatetime()
    return values


def _is_missing(value: Any) -> bool:
    return not isinstance(value, dict | list | str) and bool(pd.isna(value))


def _already_done(run: RunRecord, store: StateStore) -> BatchResult:
    """The result of a day completed earlier: its record and the current tag distribution."""
    tags = _tag_counts(store.state_frame()["tag"])
    return BatchResult(
        as_of=run.as_of,
        run=run,
        dry_run=False,
        already_done=True,
        rules_only=run.rules_only,
        model_version=run.model_version,
        tags_before=tags,
        tags_after=tags,
    )


def _state_before(
    store: StateStore, as_of: date, completed: pd.DataFrame, *, replace: bool
) -> pd.DataFrame:
    """The state the day is decided on: the store's, or for a replace the one before that day."""
    state = store.state_frame(as_of)
    if not replace:
        return state
    replaced_run = completed.loc[completed["as_of"].dt.date == as_of, "run_id"].iloc[0]
    log = store.transitions_frame(until=as_of)
    kept = log[log["run_id"].isna() | (log["run_id"] != replaced_run)]
    last = kept.sort_values("id").groupby("customer_id", sort=False).tail(1)
    before = last[["customer_id", "to_tag", "as_of"]].rename(
        columns={"to_tag": "tag", "as_of": "since"}
    )
    overrides = state[["customer_id", "override_tag", "override_expires"]]
    rebuilt = before.merge(overrides, on="customer_id", how="left")
    return rebuilt.sort_values("customer_id", ignore_index=True)


def _learners(day: _Day, state: pd.DataFrame, con: Any) -> tuple[pd.DataFrame, int]:
    """The spine to decide on (eligible UNION live-tagged learners) and how many are eligible."""
    eligible = eligible_spine(day.events, day.customers, [day.as_of], con=con)
    live = state.loc[state["tag"] != CHURNED_TAG, "customer_id"]
    extra = live[~_is_in(live, eligible["customer_id"])]
    as_of = pd.Timestamp(day.as_of.year, day.as_of.month, day.as_of.day).as_unit("us")
    kept = pd.DataFrame({"customer_id": extra.to_numpy(), "as_of": as_of})
    spine = pd.concat([eligible[["customer_id", "as_of"]], kept], ignore_index=True)
    return spine.sort_values("customer_id", ignore_index=True), len(eligible)


def _is_in(values: pd.Series, candidates: pd.Series) -> np.ndarray:
    """``values.isin(candidates)`` by an Arrow hash lookup.

    pandas' isin on a million Arrow-backed strings is pathologically slow; Arrow's is not.
    """
    found = pc.is_in(pa.array(values.astype(str)), value_set=pa.array(candidates.astype(str)))
    return found.to_numpy(zero_copy_only=False)


def _write(
    day: _Day, features: pd.DataFrame, scores: pd.DataFrame, decisions: pd.DataFrame
) -> tuple[RunRecord | None, Path | None]:
    """Commit the day to the store, then write the feature snapshot (nothing on a dry run)."""
    if day.dry_run:
        return None, None
    version = day.champion.version if day.champion is not None else None
    run = day.store.apply_batch(
        day.as_of,
        decisions,
        scores if day.champion is not None else None,
        run_id=day.run_id,
        model_version=version,
        rules_only=day.champion is None,
        now=day.now,
        replace=day.replace,
    )
    snapshot = None
    if day.data_dir is not None:
        snapshot = write_feature_snapshot(features, Path(day.data_dir), day.as_of)
    return run, snapshot


# --- feature snapshots ----------------------------------------------------------------------------


def snapshot_path(data_dir: Path, as_of: date) -> Path:
    """``<data_dir>/features/as_of=YYYY-MM-DD.parquet``."""
    return Path(data_dir) / FEATURES_SUBDIR / f"as_of={as_of.isoformat()}.parquet"


def write_feature_snapshot(features: pd.DataFrame, data_dir: Path, as_of: date) -> Path:
    """Write a day's feature frame atomically (a reader never sees a half-written file)."""
    target = snapshot_path(data_dir, as_of)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    features.to_parquet(partial, index=False)
    partial.replace(target)
    return target


def latest_feature_snapshot(data_dir: Path) -> tuple[date, pd.DataFrame] | None:
    """The newest ``features/as_of=YYYY-MM-DD.parquet`` under ``data_dir``, validated.

    Returns:
        (its as_of, the feature frame), or None when no snapshot exists yet.
    """
    directory = Path(data_dir) / FEATURES_SUBDIR
    if not directory.is_dir():
        return None
    dated = [
        (date.fromisoformat(match.group(1)), path)
        for path in directory.iterdir()
        if (match := _SNAPSHOT_NAME.match(path.name))
    ]
    if not dated:
        return None
    as_of, path = max(dated)
    return as_of, read_features(path)


# --- summary --------------------------------------------------------------------------------------


def _tag_counts(tags: pd.Series) -> dict[str, int]:
    counts = tags.astype(str).value_counts()
    return {tag: int(counts[tag]) for tag in STATUS_TAGS if tag in counts.index}


def _tags_after(state: pd.DataFrame, decisions: pd.DataFrame) -> pd.Series:
    """Each learner's tag once the decisions are applied (unchanged learners keep theirs)."""
    decided = decisions.loc[decisions["to_tag"].notna(), ["customer_id", "to_tag"]]
    decided = decided.astype({"customer_id": str, "to_tag": str})
    undecided = state.loc[~_is_in(state["customer_id"], decided["customer_id"]), "tag"]
    return pd.concat([undecided.astype(str), decided["to_tag"]], ignore_index=True)


def _summarise(
    day: _Day,
    state: pd.DataFrame,
    features: pd.DataFrame,
    decisions: pd.DataFrame,
    run: RunRecord | None,
) -> dict[str, Any]:
    """The summary fields of ``BatchResult``."""
    skipped = dict((run.summary or {}).get("skipped", {})) if run is not None else {}
    if any(skipped.values()):  # the store left some moves out: read what it actually holds
        tags_after = _tag_counts(day.store.state_frame()["tag"])
    else:
        tags_after = _tag_counts(_tags_after(state, decisions))
    changed = decisions[decisions["changed"]]
    by_rule = changed["rule_id"].astype(str).value_counts()
    held = decisions["held"].dropna().astype(str).value_counts()
    top, control_excluded = _top_learners(day, features, decisions)
    return {
        "tags_before": _tag_counts(state["tag"]),
        "tags_after": tags_after,
        "transitions_by_rule": {str(rule): int(count) for rule, count in by_rule.items()},
        "held": {str(reason): int(count) for reason, count in held.items()},
        "skipped": {str(reason): int(count) for reason, count in skipped.items()},
        "top_learners": top,
        "control_excluded": control_excluded,
    }


def _top_learners(
    day: _Day, features: pd.DataFrame, decisions: pd.DataFrame
) -> tuple[tuple[TopLearner, ...], int]:
    """The call list: P1/P2 outside the control group, in the engine's order (value at risk)."""
    urgent = decisions[decisions["priority"].astype(str).isin(ACTION_PRIORITIES)]
    listed = urgent[~urgent["control"]].head(day.top)
    rows = features[features["customer_id"].isin(listed["customer_id"])]
    reasons = _reason_texts(rows, day.champion)
    top = tuple(
        TopLearner(
            customer_id=str(row["customer_id"]),
            priority=str(row["priority"]),
            action=str(row["action"]),
            to_tag=str(row["to_tag"]),
            p_churn=None if pd.isna(row["p_churn"]) else float(row["p_churn"]),
            value_at_risk=float(row["value_at_risk"]),
            rule_id=None if pd.isna(row["rule_id"]) else str(row["rule_id"]),
            reasons=reasons.get(str(row["customer_id"])) or (str(row["description"]),),
        )
        for row in listed.to_dict("records")
    )
    return top, int(urgent["control"].sum())


def _reason_texts(rows: pd.DataFrame, champion: Champion | None) -> dict[str, tuple[str, ...]]:
    """Top reasons per learner: SHAP reason codes, or without a model the risk flags that are on.

    Rules-only risk comes from the 12 risk indicators, so naming the ones that are on is the
    honest "why" (their catalog labels, in catalog order).
    """
    if champion is not None:
        explained = explain_learners(rows, champion, top=TOP_REASONS)
        return {key: tuple(reason.text for reason in value) for key, value in explained.items()}
    catalog = load_catalog()
    flags = [name for name in catalog.risk_indicators if name in rows.columns]
    texts = {}
    for row in rows.to_dict("records"):
        on = [catalog.get(name).label for name in flags if bool(row[name])]
        texts[str(row["customer_id"])] = tuple(on[:TOP_REASONS])
    return texts


def render_summary(result: BatchResult) -> RenderableType:
    """The end-of-run summary for the terminal: tags, transitions by rule, the call list."""
    if result.already_done:
        run_id = result.run.run_id if result.run is not None else "?"
        return Group(
            f"[yellow]{result.as_of}: already completed by run {run_id}; nothing was written[/]",
            _tags_table(result),
        )
    mode = "rules only (no model score)" if result.rules_only else f"model v{result.model_version}"
    written = "DRY RUN: nothing written" if result.dry_run else f"run {result.run.run_id}"
    header = (
        f"[bold]{result.as_of}[/]: {result.learners:,} learners ({result.eligible:,} eligible, "
        f"{result.live_inactive:,} live but inactive), {result.transitions:,} transitions; "
        f"{mode}; {written}; {sum(result.stage_seconds.values()):.1f} s"
    )
    parts: list[RenderableType] = [header, _tags_table(result), _rules_table(result)]
    if any(result.skipped.values()):
        parts.append(f"[yellow]moves the store skipped: {result.skipped}[/]")
    parts.append(_top_table(result))
    return Group(*parts)


def _tags_table(result: BatchResult) -> Table:
    table = Table(title="status tags", title_justify="left")
    for column in ("tag", "name", "before", "after", "change"):
        table.add_column(column, justify="left" if column in ("tag", "name") else "right")
    for tag, name in STATUS_TAGS.items():
        before, after = result.tags_before.get(tag, 0), result.tags_after.get(tag, 0)
        table.add_row(tag, name, f"{before:,}", f"{after:,}", f"{after - before:+,}")
    return table


def _rules_table(result: BatchResult) -> Table:
    table = Table(title="transitions by rule", title_justify="left")
    table.add_column("rule")
    table.add_column("moves", justify="right")
    for rule, count in sorted(result.transitions_by_rule.items(), key=lambda item: -item[1]):
        table.add_row(rule, f"{count:,}")
    if result.held:
        table.caption = "held: " + ", ".join(f"{k} {v:,}" for k, v in result.held.items())
    return table


def _top_table(result: BatchResult) -> Table:
    title = f"top {len(result.top_learners)} P1/P2 learners to contact"
    if result.control_excluded:
        title += f" ({result.control_excluded:,} in the control group left out)"
    table = Table(title=title, title_justify="left")
    for column in ("learner", "priority", "tag", "p_churn", "value at risk", "why"):
        table.add_column(column, overflow="fold")
    for learner in result.top_learners:
        p_churn = "-" if learner.p_churn is None else f"{learner.p_churn:.2f}"
        table.add_row(
            learner.customer_id,
            learner.priority,
            learner.to_tag,
            p_churn,
            f"{learner.value_at_risk:,.2f}",
            "\n".join(learner.reasons),
        )
    return table


__all__ = [
    "STAGES",
    "BatchResult",
    "TopLearner",
    "latest_feature_snapshot",
    "render_summary",
    "run_day",
    "run_range",
    "snapshot_path",
    "write_feature_snapshot",
]
