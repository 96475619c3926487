"""The runs the run-based KPIs measure, kept day by day in a ledger beside the stored KPIs.

Progression velocity and detection speed measure an automatic move into ST_002 or ST_004 from
the first day of the uninterrupted run of days on which the learner qualified for it
(``serving.app.qualifying``). A run is known once its days are: it needs the learner's stored
inputs (feature snapshot and scores) on each day of it, and nothing after the move. Evaluating
the rules again over every stored day for every KPI day grew with days x learners (at 1M
learners a stored day cost ~0.3 s to decode for its few rows, so a year ~2 minutes a day).

``run_ledger`` keeps, per completed batch day, two small parquet files under
``<data_dir>/kpis/runs/<digest>/``:

- ``as_of=DAY.open.parquet``: the runs open at the end of the day: one row per learner who
  qualified for a move that day, one column per target and source tag a rule into a measured tag
  is from (``ST_004|ST_001`` ...), holding the first day of the learner's run for it (null: not
  qualifying for it that day);
- ``as_of=DAY.moves.parquet``: the day's measured moves (``measured_moves``) with their run's
  ``run_start`` (a move whose learner did not qualify on its day has none: not qualifying).

A new day reads yesterday's open runs and its own snapshot and scores once (every learner,
evaluated against the rules once), and the KPIs read the moves' files: O(learners) a day and
O(moves) for the KPIs instead of O(days x learners).

Each day's files carry a key chained from the first stored day: the day, its completed run, its
snapshot's file version (size and modification time, so a store copied with its times keeps its
ledger), and the key of the day before, so a replaced or backfilled day, a rewritten or lost
snapshot invalidate that day and every later one.
The directory's ``digest`` is that of the rules into the measured tags (as resolved: operating
points are numbers by then) and of the KPIs' code, so the batch's and another caller's rules
keep separate ledgers instead of overwriting each other's. A file that is missing, unreadable or
keyed otherwise is computed again from the last valid day; a workspace that cannot be written
costs only speed (the runs are computed in memory as before).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rules import MODEL_SCORE_COLUMNS, RuleSet
from rules.codes import codes_of, one_array
from rules.conditions import iter_leaves
from rules.config import NEW
from serving.app.kpi_files import KPIS_SUBDIR, DaysProgress
from serving.app.qualifying import MEASURED_TARGETS, DecisionDays, held_from, reads_state
from serving.infra.keyed_files import key_of, write_keyed
from serving.infra.snapshots import snapshot_path

KEYS = ["customer_id", "as_of"]
RUN = ["customer_id", "from_tag", "to_tag"]
"""A measured run: the learner, the tag they qualified from and the tag they qualified for."""
RUNS_SUBDIR = "runs"
LEDGER_LAYOUT = 2
STALE_AFTER = timedelta(days=7)
"""A ledger not written to for this long before the one being written is removed (the ledgers
of earlier code or rules: each new day would otherwise leave them behind for good)."""
KEY_METADATA = b"lstep.run_ledger"
"""The schema metadata entry holding a ledger file's chained key."""
KINDS = ("open", "moves")
NO_RUN = np.iinfo(np.int32).min
"""A run start (days since 1970-01-01) meaning: not qualifying."""

ScoresOf = Callable[[date], pd.DataFrame]
"""A day's stored scores of every learner: ``KEYS`` and the model columns the rules read."""

_MOVES_SCHEMA = pa.schema(
    [("customer_id", pa.string()), ("as_of", pa.date32()), ("from_tag", pa.string()),
     ("to_tag", pa.string()), ("run_start", pa.date32())]
)  # fmt: skip


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


def run_ledger(
    data_dir: Path,
    ruleset: RuleSet,
    days: Sequence[tuple[date, str]],
    moves: pd.DataFrame,
    scores_of: ScoresOf,
    *,
    code: str,
    progress: DaysProgress | None = None,
) -> DecisionDays:
    """The measured moves' runs (``DecisionDays.runs``), from the ledger where it holds.

    Args:
        data_dir: where the batch writes its snapshots (``Settings.data_path``), and the ledger.
        ruleset: the rules whose conditions say who qualifies.
        days: the completed batch days and their runs' ids, in any order.
        moves: the moves to measure (``measured_moves``).
        scores_of: a day's stored scores of every learner.
        code: the digest of the code that computes the runs (``kpi_files.code_digest``).
        progress: told how many days the ledger computes (none when it holds), then each
            day done: a first build or an upgrade computes every stored day (~1.3 s a day at 1M
            learners), a daily run one.
    """
    days = sorted(days)
    dates = [day for day, _ in days]
    folder = ledger_dir(data_dir, ruleset, code)
    versions = [_snapshot_version(data_dir, day) for day in dates]
    keys = _chained_keys(days, versions)
    loaded = tuple(day for day, version in zip(dates, versions, strict=True) if version)
    valid = _valid_prefix(folder, dates, keys)
    moved = [pq.read_table(_path(folder, day, "moves")) for day in dates[:valid]]
    if valid < len(dates):
        open_runs = pq.read_table(_path(folder, dates[valid - 1], "open")) if valid else None
        ledger = _Ledger(data_dir, ruleset, folder, scores_of)
        done = None if progress is None else progress(len(dates) - valid)
        moved += ledger.extend(dates, keys, valid, open_runs, moves, loaded, done=done)
        _prune_stale(folder)
    return _decision_days(ruleset, dates, loaded, moved)


@dataclass(frozen=True)
class _Ledger:
    """Where one ledger is written, and what its days are computed from."""

    data_dir: Path
    ruleset: RuleSet
    folder: Path
    scores_of: ScoresOf

    def extend(
        self,
        days: list[date],
        keys: list[str],
        start: int,
        open_runs: pa.Table | None,
        moves: pd.DataFrame,
        loaded: tuple[date, ...],
        *,
        done: Callable[[date], None] | None = None,
    ) -> list[pa.Table]:
        """Compute and write the days from ``days[start]`` on, from the runs open at the end of
        the day before (``open_runs``): their moves' runs, day by day (``loaded``: the days
        with a snapshot; ``done``: told each day written)."""
        pairs, wanted = measured_pairs(self.ruleset), measured_features(self.ruleset)
        moves_on = {day.date(): group[RUN] for day, group in moves.groupby("as_of")}
        moved = []
        for index in range(start, len(days)):
            day, path = days[index], snapshot_path(self.data_dir, days[index])
            follows = index > 0 and days[index - 1] == day - timedelta(days=1)
            # no inputs: no one qualifies, every open run ends here
            inputs = _day_inputs(path, wanted, self.scores_of(day)) if day in loaded else None
            open_runs = open_on(day, inputs, self.ruleset, pairs, open_runs if follows else None)
            moved.append(moves_runs(day, moves_on.get(day), open_runs))
            write_keyed(_path(self.folder, day, "open"), open_runs, KEY_METADATA, keys[index])
            write_keyed(_path(self.folder, day, "moves"), moved[-1], KEY_METADATA, keys[index])
            if done is not None:
                done(day)
        return moved


def measured_pairs(ruleset: RuleSet) -> list[tuple[str, str]]:
    """The (target, source tag) of every rule into ``MEASURED_TARGETS`` the runs measure (rules
    reading a state column are not: see ``held_from``), in a stable order."""
    return sorted(
        {(rule.to, source) for rule in ruleset.rules if rule.to in MEASURED_TARGETS
         and not reads_state(rule) for source in rule.sources}
    )  # fmt: skip


def open_on(
    day: date,
    inputs: pd.DataFrame | None,
    ruleset: RuleSet,
    pairs: list[tuple[str, str]],
    carried: pa.Table | None,
) -> pa.Table:
    """The runs open at the end of ``day``: a row per learner qualifying for a pair of ``pairs``
    on ``day`` (``inputs``: its decision inputs; None: it has none), a column per pair with the
    run's first day: that of the run open the day before (``carried``; None: none was), else
    ``day``.
    """
    today = (day - date(1970, 1, 1)).days
    held = {} if inputs is None else held_from(inputs, ruleset, MEASURED_TARGETS)
    rows = np.zeros(0 if inputs is None else len(inputs), dtype=bool)
    for mask in held.values():
        rows |= mask
    ids = pa.array(inputs["customer_id"].to_numpy()[rows] if len(rows) else [], pa.string())
    before = None if carried is None or not carried.num_rows else codes_of(ids, _ids(carried))
    columns = {"customer_id": ids}
    for target, source in pairs:
        mask = held.get((target, source))
        start = np.full(len(ids), NO_RUN, dtype=np.int32)
        if mask is not None:
            start[mask[rows]] = today
        if before is not None and _column(target, source) in carried.column_names:
            kept = _starts(carried, target, source)[np.maximum(before, 0)]
            start = np.where((start != NO_RUN) & (before >= 0) & (kept != NO_RUN), kept, start)
        columns[_column(target, source)] = pa.array(start, mask=start == NO_RUN).cast(pa.date32())
    return pa.table(columns)


def moves_runs(day: date, moves: pd.DataFrame | None, open_runs: pa.Table) -> pa.Table:
    """``day``'s measured moves (``RUN``) with their run's first day, from the runs open at the
    end of it; a move whose learner did not qualify for it that day is left out."""
    if moves is None or not len(moves) or not open_runs.num_rows:
        return _MOVES_SCHEMA.empty_table()
    at = codes_of(moves["customer_id"], _ids(open_runs))
    start = np.full(len(moves), NO_RUN, dtype=np.int32)
    for name in open_runs.column_names[1:]:
        target, source = name.split("|", 1)
        chosen = (moves["to_tag"].to_numpy() == target) & (moves["from_tag"].to_numpy() == source)
        chosen &= at >= 0
        start[chosen] = _starts(open_runs, target, source)[at[chosen]]
    found = start != NO_RUN
    return pa.table(
        {
            "customer_id": pa.array(moves["customer_id"].to_numpy()[found], pa.string()),
            "as_of": pa.array(np.full(found.sum(), day), pa.date32()),
            "from_tag": pa.array(moves["from_tag"].to_numpy()[found], pa.string()),
            "to_tag": pa.array(moves["to_tag"].to_numpy()[found], pa.string()),
            "run_start": pa.array(start[found]).cast(pa.date32()),
        },
        schema=_MOVES_SCHEMA,
    )


def _ids(table: pa.Table) -> pa.Array:
    """A ledger table's ids as one typed array (a table read back may hold no chunk at all)."""
    return one_array(table.column("customer_id"))


def _column(target: str, source: str) -> str:
    return f"{target}|{source}"


def _starts(table: pa.Table, target: str, source: str) -> np.ndarray:
    """A pair's run starts as days since 1970-01-01, ``NO_RUN`` where null."""
    days = table.column(_column(target, source)).cast(pa.int32())
    return pc.fill_null(days, NO_RUN).to_numpy().astype(np.int32, copy=False)


def measured_features(ruleset: RuleSet) -> list[str]:
    """The stored features the conditions of the rules into ``MEASURED_TARGETS`` read: the
    columns of a snapshot the runs need."""
    read = {
        leaf.feature
        for rule in ruleset.rules
        if rule.to in MEASURED_TARGETS
        for _, leaf in iter_leaves(rule.condition)
    }
    return [name for name in ruleset.features_used if name in read - MODEL_SCORE_COLUMNS]


def ledger_dir(data_dir: Path, ruleset: RuleSet, code: str) -> Path:
    """The ledger of these rules (those into the measured tags, as resolved) and this code."""
    rules = [rule.model_dump(mode="json") for rule in ruleset.rules if rule.to in MEASURED_TARGETS]
    described = {
        "layout": LEDGER_LAYOUT, "code": code, "rules": rules,
        "features": measured_features(ruleset), "strings": sorted(ruleset.string_features),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return Path(data_dir) / KPIS_SUBDIR / RUNS_SUBDIR / digest


def _snapshot_version(data_dir: Path, day: date) -> str | None:
    """A day's snapshot's size and modification time (None: no snapshot), so a store copied
    with its times keeps its ledger."""
    try:
        status = snapshot_path(data_dir, day).stat()
    except FileNotFoundError:
        return None
    return f"{status.st_size}:{status.st_mtime_ns}"


def _chained_keys(days: Sequence[tuple[date, str]], versions: list[str | None]) -> list[str]:
    """Each day's key: its day, run and snapshot version, chained to the day before's."""
    keys, previous = [], ""
    for (day, run_id), version in zip(days, versions, strict=True):
        text = f"{previous}|{day.isoformat()}|{run_id}|{version or 'missing'}"
        previous = hashlib.sha256(text.encode()).hexdigest()[:32]
        keys.append(previous)
    return keys


def _valid_prefix(folder: Path, days: list[date], keys: list[str]) -> int:
    """How many of the first days have both files under their key."""
    for index, (day, key) in enumerate(zip(days, keys, strict=True)):
        if not all(key_of(_path(folder, day, kind), KEY_METADATA) == key for kind in KINDS):
            return index
    return len(days)


def _path(folder: Path, day: date, kind: str) -> Path:
    return folder / f"as_of={day.isoformat()}.{kind}.parquet"


def _prune_stale(folder: Path) -> None:
    """Remove the sibling ledgers last written ``STALE_AFTER`` before ``folder`` was."""
    try:
        written = folder.stat().st_mtime
        for other in folder.parent.iterdir():
            if other != folder and other.stat().st_mtime < written - STALE_AFTER.total_seconds():
                shutil.rmtree(other, ignore_errors=True)
    except OSError:
        pass  # nothing written (a read-only workspace) or a sibling gone meanwhile


def _day_inputs(path: Path, wanted: list[str], scores: pd.DataFrame) -> pd.DataFrame:
    """One day's snapshot (its columns among ``KEYS + wanted``) with the day's scores: what the
    batch decided on that day."""
    present = set(pq.read_schema(path).names)
    columns = [name for name in KEYS + wanted if name in present]
    features = pq.read_table(path, columns=columns).to_pandas()
    at = codes_of(features["customer_id"], scores["customer_id"])
    for name in scores.columns.difference(KEYS):
        values = scores[name].to_numpy(dtype="float64", na_value=np.nan)
        features[name] = np.where(at >= 0, values[np.maximum(at, 0)], np.nan)
    return features


def _decision_days(
    ruleset: RuleSet, days: list[date], loaded: tuple[date, ...], moved: list[pa.Table]
) -> DecisionDays:
    """The ``DecisionDays`` of the moves' runs: no inputs, the stored (``loaded``) and missing
    days, and per target the rows ``qualifying_runs`` would give for the moves' days."""
    missing = tuple(sorted(set(days) - set(loaded)))
    table = pa.concat_tables([_MOVES_SCHEMA.empty_table(), *moved])
    found = table.to_pandas(date_as_object=False).astype(_TYPES)
    runs = {
        target: found.loc[found["to_tag"] == target, _RUN_DAYS].reset_index(drop=True)
        for target in MEASURED_TARGETS
    }
    no_inputs = pd.DataFrame({name: pd.Series(dtype=_TYPES[name]) for name in KEYS})
    return DecisionDays(ruleset, no_inputs, missing=missing, loaded=loaded, runs=runs)


_TYPES = {
    "customer_id": str, "from_tag": str, "to_tag": str, "as_of": "datetime64[us]",
    "run_start": "datetime64[us]",
}  # fmt: skip
_RUN_DAYS = ["customer_id", "as_of", "from_tag", "run_start"]
"""The columns of ``qualifying_runs`` that ``run_starts`` reads."""


__all__ = [
    "ScoresOf",
    "ledger_dir",
    "measured_features",
    "measured_moves",
    "measured_pairs",
    "moves_runs",
    "open_on",
    "run_ledger",
]
