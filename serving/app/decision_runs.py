"""The runs the run-based KPIs measure, kept day by day in a ledger beside the stored KPIs.

Progression velocity and detection speed measure an automatic move into ST_002 or ST_004 from
the first day of the uninterrupted run of days on which the learner qualified for it
(``serving.app.qualifying``). A run is known once its days are: it needs the learner's stored
inputs (feature snapshot and scores) on each day of it, and nothing after the move. Evaluating
the rules again over every stored day for every KPI day grew with days x learners (at 1M
learners a stored day cost ~0.3 s to decode for its few rows, so a year ~2 minutes a day).

``run_ledger`` keeps, per completed batch day, two small parquet files under
``<data_dir>/kpis/runs/<digest>/``:

- ``as_of=DAY.open.parquet``: the runs open at the end of the day, one row per learner, source
  tag and target they qualified for that day (``RUN``), with ``run_start``, the run's first day;
- ``as_of=DAY.moves.parquet``: the day's measured moves (``measured_moves``) with their run's
  ``run_start`` (a move whose learner did not qualify on its day has none: not qualifying).

A new day reads yesterday's open runs and its own snapshot and scores once (every learner,
evaluated against the rules once), and the KPIs read the moves' files: O(learners) a day and
O(moves) for the KPIs instead of O(days x learners).

Each day's files carry a key chained from the first stored day: the day, its completed run, its
snapshot's file version (size, modification time, inode), and the key of the day before, so a
replaced or backfilled day, a rewritten or lost snapshot invalidate that day and every later one.
The directory's ``digest`` is that of the rules into the measured tags (as resolved: operating
points are numbers by then) and of the KPIs' code, so the batch's and another caller's rules
keep separate ledgers instead of overwriting each other's. A file that is missing, unreadable or
keyed otherwise is computed again from the last valid day; a workspace that cannot be written
costs only speed (the runs are computed in memory as before).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rules import MODEL_SCORE_COLUMNS, RuleSet
from rules.conditions import iter_leaves
from rules.config import NEW
from serving.app.qualifying import MEASURED_TARGETS, DecisionDays, qualifying_days
from serving.infra.snapshots import snapshot_path

KEYS = ["customer_id", "as_of"]
RUN = ["customer_id", "from_tag", "to_tag"]
"""A measured run: the learner, the tag they qualified from and the tag they qualified for."""
RUNS_SUBDIR = "runs"
LEDGER_LAYOUT = 1
KEY_METADATA = b"lstep.run_ledger"
"""The schema metadata entry holding a ledger file's chained key."""

ScoresOf = Callable[[date], pd.DataFrame]
"""A day's stored scores of every learner: ``KEYS`` and the model columns the rules read."""

_OPEN_SCHEMA = pa.schema(
    [("customer_id", pa.string()), ("from_tag", pa.string()), ("to_tag", pa.string()),
     ("run_start", pa.date32())]
)  # fmt: skip
_MOVES_SCHEMA = _OPEN_SCHEMA.insert(1, pa.field("as_of", pa.date32()))


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
) -> DecisionDays:
    """The measured moves' runs (``DecisionDays.runs``), from the ledger where it holds.

    Args:
        data_dir: where the batch writes its snapshots (``Settings.data_path``), and the ledger.
        ruleset: the rules whose conditions say who qualifies.
        days: the completed batch days and their runs' ids, in any order.
        moves: the moves to measure (``measured_moves``).
        scores_of: a day's stored scores of every learner.
        code: the digest of the code that computes the runs (``kpi_files.code_digest``).
    """
    days = sorted(days)
    folder = ledger_dir(data_dir, ruleset, code)
    keys = _chained_keys(data_dir, days)
    valid = _valid_prefix(folder, [day for day, _ in days], keys)
    moved = [_read(_path(folder, day, "moves")) for day, _ in days[:valid]]
    open_runs = _read(_path(folder, days[valid - 1][0], "open")) if valid else _empty(_OPEN_SCHEMA)
    moves_on = {day.date(): group[RUN] for day, group in moves.groupby("as_of")}
    wanted = measured_features(ruleset)
    for (day, _), key in zip(days[valid:], keys[valid:], strict=True):
        path = snapshot_path(data_dir, day)
        if path.exists():
            inputs = _day_inputs(path, wanted, scores_of(day))
            carried = open_runs if valid and days[valid - 1][0] == day - timedelta(days=1) else None
            open_runs = open_on(day, DecisionDays(ruleset, inputs), carried)
        else:  # no inputs: no one qualifies, every open run ends here
            open_runs = _empty(_OPEN_SCHEMA)
        found = moves_on.get(day, pd.DataFrame(columns=RUN)).merge(open_runs, on=RUN)
        moved.append(found.assign(as_of=day)[_MOVES_SCHEMA.names])
        _write(_path(folder, day, "open"), open_runs, _OPEN_SCHEMA, key)
        _write(_path(folder, day, "moves"), moved[-1], _MOVES_SCHEMA, key)
        valid += 1
    return _decision_days(data_dir, ruleset, [day for day, _ in days], moved)


def open_on(day: date, inputs: DecisionDays, carried: pd.DataFrame | None) -> pd.DataFrame:
    """The runs open at the end of ``day``: each (learner, source, target) qualifying on it,
    with its run's first day: that of the run open the day before (``carried``; None: the day
    before has no stored inputs), else ``day``."""
    found = [
        qualifying_days(inputs, target)[["customer_id", "from_tag"]].assign(to_tag=target)
        for target in MEASURED_TARGETS
    ]
    today = pd.concat(found, ignore_index=True)
    if carried is None or carried.empty:
        return today.assign(run_start=day)[_OPEN_SCHEMA.names]
    today = today.merge(carried, on=RUN, how="left")
    return today.assign(run_start=today["run_start"].fillna(day))[_OPEN_SCHEMA.names]


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
    return Path(data_dir) / "kpis" / RUNS_SUBDIR / digest


def _chained_keys(data_dir: Path, days: Sequence[tuple[date, str]]) -> list[str]:
    """Each day's key: its day, run and snapshot version, chained to the day before's."""
    keys, previous = [], ""
    for day, run_id in days:
        try:
            status = snapshot_path(data_dir, day).stat()
            snapshot = f"{status.st_size}:{status.st_mtime_ns}:{status.st_ino}"
        except FileNotFoundError:
            snapshot = "missing"
        text = f"{previous}|{day.isoformat()}|{run_id}|{snapshot}"
        previous = hashlib.sha256(text.encode()).hexdigest()[:32]
        keys.append(previous)
    return keys


def _valid_prefix(folder: Path, days: list[date], keys: list[str]) -> int:
    """How many of the first days have both files under their key."""
    for index, (day, key) in enumerate(zip(days, keys, strict=True)):
        if not all(_key_of(_path(folder, day, kind)) == key for kind in ("open", "moves")):
            return index
    return len(days)


def _key_of(path: Path) -> str | None:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return metadata.get(KEY_METADATA, b"").decode() or None


def _path(folder: Path, day: date, kind: str) -> Path:
    return folder / f"as_of={day.isoformat()}.{kind}.parquet"


def _read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas(types_mapper=None).astype({"customer_id": str})


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema, key: str) -> None:
    """Write one ledger file (temporary name, then rename); a failed write is only a miss."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata({KEY_METADATA: key.encode()})
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pq.write_table(table, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only workspace: computed again next time


def _day_inputs(path: Path, wanted: list[str], scores: pd.DataFrame) -> pd.DataFrame:
    """One day's snapshot (its columns among ``KEYS + wanted``) with the day's scores: what the
    batch decided on that day."""
    present = set(pq.read_schema(path).names)
    columns = [name for name in KEYS + wanted if name in present]
    features = pq.read_table(path, columns=columns).to_pandas()
    features = features.astype({"customer_id": str, "as_of": "datetime64[us]"})
    scores = scores.astype({"customer_id": str, "as_of": "datetime64[us]"})
    return features.merge(scores, on=KEYS, how="left")


def _decision_days(
    data_dir: Path, ruleset: RuleSet, days: list[date], moved: list[pd.DataFrame]
) -> DecisionDays:
    """The ``DecisionDays`` of the moves' runs: no inputs, the stored and missing days, and
    per target the rows ``qualifying_runs`` would give for the moves' days."""
    loaded = tuple(day for day in days if snapshot_path(data_dir, day).exists())
    missing = tuple(day for day in days if day not in set(loaded))
    found = pd.concat([_empty(_MOVES_SCHEMA), *moved], ignore_index=True).astype(_TYPES)
    runs = {
        target: found.loc[found["to_tag"] == target, _RUN_DAYS].reset_index(drop=True)
        for target in MEASURED_TARGETS
    }
    no_inputs = pd.DataFrame({name: pd.Series(dtype=_TYPES[name]) for name in KEYS})
    return DecisionDays(ruleset, no_inputs, missing=missing, loaded=loaded, runs=runs)


_TYPES = {
    "customer_id": str,
    "from_tag": str,
    "as_of": "datetime64[us]",
    "run_start": "datetime64[us]",
}
_RUN_DAYS = ["customer_id", "as_of", "from_tag", "run_start"]
"""The columns of ``qualifying_runs`` that ``run_starts`` reads."""


__all__ = ["ScoresOf", "ledger_dir", "measured_features", "measured_moves", "open_on", "run_ledger"]
