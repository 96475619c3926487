"""The day's answers as one Arrow table: what the batch writes and the service maps (layout).

``answers_table`` decides all of a day's learners at once (``score_features`` +
``decide_learners``, the two steps of ``assess``, on the state the day left) and lays each
learner's snapshot row, scores, decision and the state it was decided on side by side, sorted by
``customer_id``; ``write_day_answers`` is the batch job's call. ``serving.app.answers`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.churn import PREDICTION_COLUMNS
from rules import RuleSet
from rules.codes import codes_of, one_array
from serving.app.day_decisions import DecidedDay, answers_decisions, arrow_text
from serving.core.assess import DECISION_FIELDS
from serving.core.frames import repeats_in
from serving.core.state import without_later_states
from serving.infra.answers_file import answers_path, remove_older_answers, stage_answers_file

KEY, CALL_ORDER = "lstep.key", "lstep.call_order"
SCORE, DECISION = "lstep.score.", "lstep.decision."
STATE = ("lstep.state.tag", "lstep.state.since", "lstep.state.override_tag",
         "lstep.state.override_expires")  # fmt: skip
META_AS_OF, META_MODEL, META_FEATURES = b"lstep.as_of", b"lstep.model_version", b"lstep.features"


def answers_tag(model_version: str | None, ruleset: RuleSet) -> str:
    """Names what decided a day's answers: the champion's version and the rules' content.

    A service serving another champion or other rules than the batch's must not answer from
    the batch's file: its own answers would differ. Where the rules were read from is not their
    content: the rules directory (``source``) and its templates folder (``templates_dir``) are
    left out, so that a service installed elsewhere than the batch (another checkout, a
    container) finds the batch's file instead of building its own. No answer reads a template.
    """
    where = {"source": True, "campaigns": {"templates_dir": True}}
    rules = ruleset.model_dump_json(exclude=where).encode()
    digest = hashlib.sha256(rules).hexdigest()[:12]
    model = "rules-only" if model_version is None else f"model-{model_version}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", model) + f".rules-{digest}"


def answers_table(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    model_version: str | None,
    decided: DecidedDay | None = None,
) -> pa.Table:
    """Decide every learner of one day on ``state`` and lay the answers out by ``customer_id``.

    Args:
        features: the day's feature frame (every learner of the day: the capacity is applied).
        scores: ``score_features`` of those learners (any order; NaN scores: rules-only).
        ruleset: the loaded rules.
        state: the learners' stored state on ``as_of``; learners whose tag began after it are
            left out (that day can no longer be decided for them: the scorer says so).
        as_of: the day.
        model_version: the champion's version, None in rules-only mode.
        decided: the day's first decide (the batch's, on the state before the day): only the
            learners it cannot answer for are decided again (``answers_decisions``).

    Returns:
        The snapshot's columns, then the scores, the decision fields, the state decided on and
        each learner's place in the call list, sorted by the ids' UTF-8 bytes.
    """
    features, state, _ = without_later_states(features, state, as_of)
    features = features.reset_index(drop=True)
    id_texts = _id_texts(features["customer_id"])  # the ids as Arrow, converted once
    scores = _aligned(scores, id_texts)
    # Found once for the reuse's change check and the state columns (a million among a million)
    state_rows = codes_of(id_texts, _id_texts(state["customer_id"]))
    decisions = answers_decisions(
        features, scores, ruleset, state, as_of, decided, state_rows=state_rows
    )
    keys = _utf8_keys(id_texts)
    order = np.argsort(keys, kind="stable")
    columns: dict[str, Any] = {KEY: pa.array(keys, type=pa.binary(max(keys.dtype.itemsize, 1)))}
    columns |= {
        SCORE + name: pa.array(scores[name], from_pandas=True) for name in PREDICTION_COLUMNS
    }
    decided, unsorted = _decisions_by_id(decisions, _id_texts(decisions["customer_id"]), id_texts)
    for name in DECISION_FIELDS:
        columns[DECISION + name] = _decision_array(decided[name])
    columns |= _state_columns(state, id_texts, state_rows)
    table = pa.Table.from_pandas(features, preserve_index=False)
    for name, values in columns.items():
        table = table.append_column(name, values)
    if not (order == np.arange(len(order))).all():  # the batch's spine is sorted already
        table = table.take(pa.array(order))
    # Sorted position of each learner, in call-list order (P1 first): the warm-up's order.
    unsorted_to_sorted = np.empty(len(order), dtype=np.int64)
    unsorted_to_sorted[order] = np.arange(len(order))
    call_order = unsorted_to_sorted[unsorted]
    table = table.append_column(CALL_ORDER, pa.array(call_order))
    return _with_metadata(table, as_of, model_version, list(features.columns))


def _with_metadata(
    table: pa.Table, as_of: date, model_version: str | None, features: list[str]
) -> pa.Table:
    """``table`` with the day, the champion's version and the snapshot's columns in its schema."""
    metadata = dict(table.schema.metadata or {}) | {
        META_AS_OF: as_of.isoformat().encode(),
        META_MODEL: (model_version or "").encode(),
        META_FEATURES: json.dumps(features).encode(),
    }
    return table.replace_schema_metadata(metadata)


def _aligned(scores: pd.DataFrame, ids: pa.Array) -> pd.DataFrame:
    """``scores`` in the order of ``ids`` (the batch's come aligned: a 1M-row reindex saved)."""
    if _id_texts(scores["customer_id"]).equals(ids):
        return scores.reset_index(drop=True)
    by_id = pd.Index(ids.to_numpy(zero_copy_only=False), dtype=object)
    return scores.set_index(scores["customer_id"].astype(str)).loc[by_id].reset_index(drop=True)


def _decisions_by_id(
    decisions: pd.DataFrame, decision_ids: pa.Array, ids: pa.Array
) -> tuple[pd.DataFrame, np.ndarray]:
    """The decisions row for row with ``ids``, as ``reindex`` by customer_id gives them, and
    the row of ``ids`` holding each decision's learner (-1 for none).

    Every learner has one decision (``answers_decisions``): the rows are taken by an Arrow hash
    lookup, not a reindex on a pandas Index of the day's ids (a tenth of the answers stage).
    Then the lookup is a permutation (the day's ids are distinct), and the rows of the
    decisions' learners are its inverse, not a second lookup.
    """
    at = codes_of(ids, decision_ids)
    if len(decision_ids) != len(ids) or (at < 0).any():
        by_id = pd.Index(decision_ids.to_numpy(zero_copy_only=False), dtype=object)
        reindexed = decisions.set_index(by_id).reindex(ids.to_numpy(zero_copy_only=False))
        return reindexed, codes_of(decision_ids, ids)
    rows = np.full(len(at), -1, dtype=np.int64)
    rows[at] = np.arange(len(at))
    if (rows < 0).any():  # a repeated id: not a permutation, so look the decisions up
        rows = codes_of(decision_ids, ids)
    return decisions.take(at), rows


def _decision_array(column: pd.Series) -> pa.Array:
    """The array the service reads of a decision column: each value that of
    ``pa.array(column.astype(object), from_pandas=True)``, a categorical's text kept as a
    dictionary of strings (its codes and its few texts).

    Arrow takes a number, flag, text or categorical column of text from its own buffers (or
    codes) instead of one Python object per learner and inferring the type again from them (a
    tenth of a steady day's answers). A column without one value goes the object way: Arrow
    infers the null type there. The service reads one value at a time (``as_py``), which a
    dictionary answers as its text; decoded, the day's descriptions, actions, tags, campaigns
    and channels were ~120 MB of the file at 1M learners, each a fresh copy of the same few
    sentences, made on the answers' thread while the day is planned and committed.
    """
    dtype = column.dtype
    categorical = isinstance(dtype, pd.CategoricalDtype)
    text = isinstance(dtype, pd.StringDtype) or (
        categorical and dtype.categories.inferred_type == "string"
    )
    numeric = dtype.kind in "fb" or isinstance(dtype, pd.BooleanDtype)
    if not (text or numeric) or not column.notna().any():
        return pa.array(column.astype(object), from_pandas=True)
    values = pa.array(column, from_pandas=True)
    if categorical and text:
        return values.cast(pa.dictionary(values.type.index_type, pa.string()))
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values.cast(pa.string()) if text else values


def _state_columns(
    state: pd.DataFrame, ids: pa.Array, found: np.ndarray | None = None
) -> dict[str, pa.Array]:
    """Each learner's stored state (null tag: a new learner), in ``ids`` order, as Arrow
    (``found``: each id's state row, ``codes_of(ids, state ids)``, when the caller has it).

    Each column is converted once on the state's rows and then taken into ``ids`` order, a null
    where a learner has no state: the same arrays as a reindex by customer_id then converted,
    without the reindex's pandas Index of the ids (a sixth of the answers stage).
    """
    state_ids = _id_texts(state["customer_id"])
    if not _distinct(state_ids):
        raise ValueError("cannot reindex on an axis with duplicate labels")  # as reindex did
    found = codes_of(ids, state_ids) if found is None else found
    rows = pa.array(found, mask=found < 0)

    def day(name: str) -> pa.Array:
        values = pd.to_datetime(state[name]).to_numpy(dtype="datetime64[D]")
        return pa.array(values, type=pa.date32(), from_pandas=True).take(rows)

    def text(name: str) -> pa.Array:
        values = arrow_text(state[name])
        if values is None:
            values = pa.array(state[name].astype(object), type=pa.string(), from_pandas=True)
        return values.take(rows)

    tag, since, override, expires = STATE
    return {
        tag: text("tag"),
        since: day("since"),
        override: text("override_tag"),
        expires: day("override_expires"),
    }


def _texts(values: pd.Index | pd.Series | np.ndarray) -> pa.Array:
    """Ids as an Arrow string array (typed: an empty object array would be Arrow's null type)."""
    return pa.array(np.asarray(values, dtype=object), pa.string())


def _distinct(ids: pa.Array) -> bool:
    """No id repeats: seen without hashing when the ids are sorted strictly (the store's are)."""
    if ids.null_count == 0 and len(ids) > 1 and pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        return True
    return ids.null_count == 0 and not repeats_in(ids)


def _id_texts(ids: pd.Series) -> pa.Array:
    """``_texts(ids.astype(str))``, from the column's Arrow buffers when it is text without
    nulls (two round trips of a day's ids through Python strings were a sixth of the answers)."""
    texts = arrow_text(ids)
    if texts is not None and texts.null_count == 0:
        return texts
    return _texts(ids.astype(str))


def _utf8_keys(ids: pa.Array) -> np.ndarray:
    """``np.char.encode(ids.to_numpy(dtype=str), "utf-8")``, from Arrow's UTF-8 bytes.

    Each id's bytes, NUL-padded to the longest, as numpy's fixed-width bytes; numpy's strings
    end at their last non-NUL character, so trailing NULs are no part of a key or its width.
    Copied one byte position at a time (a dozen vectorised passes), not one id at a time.
    """
    ids = ids.cast(pa.large_string())
    offsets = np.frombuffer(ids.buffers()[1], np.int64)[ids.offset : ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2] or b"", np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    matrix = np.zeros((len(ids), max(int(lengths.max(initial=0)), 1)), np.uint8)
    for position in range(matrix.shape[1]):
        has = np.flatnonzero(lengths > position)
        matrix[has, position] = data[starts[has] + position]
    used = np.flatnonzero(matrix.any(axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    return np.ascontiguousarray(matrix[:, :width]).view(f"S{width}").ravel()


def column_of(table: pa.Table, name: str) -> pa.Array:
    """One column as one array (a memory-mapped file holds one chunk: a view, no copy)."""
    return one_array(table.column(name))


def write_day_answers(
    data_dir: Path,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    model_version: str | None,
    decided: DecidedDay | None = None,
) -> Path:
    """Decide a day's learners on ``state`` (the state the day left) and write the answers file.

    The batch job calls this after committing a day, with its features and scores: the service
    then opens the file instead of assessing everyone at start-up; with the day's first decide
    (``decided``) only the learners it cannot answer for are decided again.

    Raises:
        OSError: the data directory cannot be written.
    """
    table = answers_table(
        features, scores, ruleset=ruleset, state=state, as_of=as_of,
        model_version=model_version, decided=decided,
    )  # fmt: skip
    return stage_answers(data_dir, table, ruleset=ruleset).place()


@dataclass(frozen=True)
class StagedAnswers:
    """A day's answers file written under a temporary name, not yet the day's (``stage_answers``).

    Attributes:
        staged: where it is written.
        path: the day's answers file it becomes (``answers_path``).
        data_dir: the data directory.
        as_of: its day.
    """

    staged: Path
    path: Path
    data_dir: Path
    as_of: date

    def place(self) -> Path:
        """Make it the day's answers file, and remove older days' files."""
        self.staged.replace(self.path)
        remove_older_answers(self.data_dir, self.as_of)  # only the latest day is served
        return self.path

    def discard(self) -> None:
        """Remove it (its day's answers are not these)."""
        self.staged.unlink(missing_ok=True)


def stage_answers(data_dir: Path, table: pa.Table, *, ruleset: RuleSet) -> StagedAnswers:
    """Write an ``answers_table`` beside its day's answers file, for ``place`` to publish.

    The day and the champion's version are read from the table's metadata, so that the file's
    name always says what its answers were decided with.

    Raises:
        OSError: the data directory cannot be written.
    """
    metadata = table.schema.metadata
    as_of = date.fromisoformat(metadata[META_AS_OF].decode())
    model_version = metadata[META_MODEL].decode() or None
    path = answers_path(data_dir, as_of, answers_tag(model_version, ruleset))
    return StagedAnswers(stage_answers_file(table, path), path, Path(data_dir), as_of)


__all__ = [
    "CALL_ORDER",
    "DECISION",
    "KEY",
    "META_AS_OF",
    "META_FEATURES",
    "META_MODEL",
    "SCORE",
    "STATE",
    "StagedAnswers",
    "answers_table",
    "answers_tag",
    "column_of",
    "stage_answers",
    "write_day_answers",
]
