"""The day's answers: every learner of a batch day, decided once, looked up by id.

A ``/score`` request for a learner by id, on the day of the batch job's latest feature snapshot,
asks a question whose inputs are all known beforehand: the learner's snapshot row, the champion,
the rules and the learner's stored state. ``answers_table`` decides all the day's learners at
once (``score_features`` + ``decide_learners``, the two steps of ``assess``, on the state the
day left) and lays each learner's snapshot row, scores, decision and the state it was decided
on side by side in one Arrow table sorted by ``customer_id``.

The batch job writes that table beside its snapshot (``write_day_answers``), and the service
memory-maps it (``serving.infra.answers_file``): start-up assesses nobody, a worker holds no
learner in its heap, and a lookup is a binary search (``np.searchsorted``) over the ids' bytes.
A service whose champion or rules differ from the batch's builds its own file once, in the
background (one worker process, under a lock), answering on demand meanwhile.

Answering is a lookup, a check that the learner's stored state is still the one the answer was
decided on, and the reason codes: one TreeSHAP row, computed on first use and kept in a bounded
LRU cache (milliseconds per learner: too much for millions up front). Each answer is ``assess``'s
own record for the same inputs; when the learner's state moved (an override, an applied move),
``DayAnswers.record`` returns None and the request is assessed on demand, on the new state.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.schemas import KEY_COLUMNS
from features.windows import read_features
from models.churn import PREDICTION_COLUMNS, ChurnModel
from models.explain import Reason, points_of, ranked_reasons
from rules import RuleSet
from serving.app.answers_table import (
    CALL_ORDER,
    DECISION,
    KEY,
    META_AS_OF,
    META_FEATURES,
    META_MODEL,
    SCORE,
    STATE,
    answers_table,
    answers_tag,
    column_of,
    write_day_answers,
)
from serving.core.assess import (
    DECISION_FIELDS,
    TOP_REASONS,
    ModelHandle,
    score_features,
)
from serving.core.records import is_on, learner_record, risk_flags
from serving.core.state import StateRow
from serving.infra.answers_file import (
    MappedAnswers,
    answers_path,
    build_lock,
    open_answers_file,
    write_answers_file,
)
from serving.infra.snapshots import batch_snapshots
from serving.infra.store import StateStore

logger = logging.getLogger("bentoml.lstep")

FEATURE_SOURCE = "snapshot"
WARM_CHUNK = 256
"""Learners explained per TreeSHAP call of the background warm-up."""
REASONS_CACHE = 100_000
"""Learners whose reason codes a worker keeps (least recently asked about go first)."""


class DayAnswers:
    """One day's answers (``answers_table``), looked up by id, reasons explained on first use.

    Attributes:
        as_of: the day.
        model: the champion's model that scored the day, None in rules-only mode.
        model_version: its version.
        top_reasons: reason codes per learner.
    """

    def __init__(
        self,
        answers: MappedAnswers,
        *,
        model: ChurnModel | None,
        top_reasons: int = TOP_REASONS,
        cache_size: int = REASONS_CACHE,
    ) -> None:
        table = answers.table
        metadata = table.schema.metadata
        self.as_of = date.fromisoformat(metadata[META_AS_OF].decode())
        self.model_version = metadata[META_MODEL].decode() or None
        self.model = model
        self.top_reasons = top_reasons
        self.feature_columns: list[str] = json.loads(metadata[META_FEATURES])
        self._table = table
        self._mapped = answers  # counts the rows read; lets the mapped pages go past a budget
        keys = column_of(table, KEY)
        width = keys.type.byte_width
        # A view of the (memory-mapped) key bytes: the binary search pages in ~20 of them.
        self._keys = np.frombuffer(
            keys.buffers()[1], dtype=f"S{width}", count=len(keys), offset=keys.offset * width
        )
        self._scores = {name: column_of(table, SCORE + name) for name in PREDICTION_COLUMNS}
        self._decisions = {name: column_of(table, DECISION + name) for name in DECISION_FIELDS}
        self._state = [column_of(table, name) for name in STATE]
        names = tuple(name for name in self.feature_columns if name not in KEY_COLUMNS)
        self._flags = risk_flags(names)
        self._flag_values = {name: column_of(table, name) for name, _ in self._flags}
        self._record_columns = [KEY, *(SCORE + n for n in self._scores)]
        self._record_columns += [
            *(DECISION + n for n in self._decisions),
            *STATE,
            *self._flag_values,
        ]
        self._cache: OrderedDict[int, PackedReasons] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        features: pd.DataFrame,
        *,
        champion: ModelHandle | None,
        ruleset: RuleSet,
        state: pd.DataFrame,
        as_of: date,
        top_reasons: int = TOP_REASONS,
        cache_size: int = REASONS_CACHE,
    ) -> DayAnswers:
        """Score and decide every learner of ``features`` (one day) on ``state``, in memory."""
        version = None if champion is None else champion.version
        table = answers_table(
            features, score_features(features, champion), ruleset=ruleset, state=state,
            as_of=as_of, model_version=version,
        )  # fmt: skip
        model = None if champion is None else champion.model
        answers = MappedAnswers(table)
        return cls(answers, model=model, top_reasons=top_reasons, cache_size=cache_size)

    def __len__(self) -> int:
        return self._table.num_rows

    @property
    def rules_only(self) -> bool:
        """True when no model scored these learners."""
        return self.model is None

    def positions(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Each learner's row, -1 for a learner the answers do not hold (one binary search)."""
        width = self._keys.dtype.itemsize
        wanted = [customer_id.encode() for customer_id in customer_ids]
        # Longer ids are not held; NUL bytes would compare as the padding of the fixed width.
        fits = np.array([len(key) <= width and b"\0" not in key for key in wanted], dtype=bool)
        keys = np.array([key if ok else b"" for key, ok in zip(wanted, fits, strict=True)])
        found = np.searchsorted(self._keys, keys.astype(f"S{width}"))
        inside = found < len(self._keys)
        hit = fits & inside
        hit[inside] &= self._keys[found[inside]] == keys[inside]
        return np.where(hit, found, -1)

    def state_at(self, position: int) -> StateRow | None:
        """The stored state the learner at ``position`` was decided on (None: a new learner)."""
        tag, since, override, expires = (column[position].as_py() for column in self._state)
        return None if tag is None else (tag, since, override, expires)

    def record(self, customer_id: str, state: StateRow | None) -> dict[str, Any] | None:
        """The learner's record, if the answers hold them and their state is still ``state``.

        Args:
            customer_id: the learner.
            state: their stored state now (None when they have none).

        Returns:
            ``Assessment.record`` for them plus ``feature_source``; None when the learner is
            not among the answers or their state moved since the answers were decided.
        """
        position = int(self.positions([customer_id])[0])
        if position < 0 or self.state_at(position) != state:
            return None
        return self.record_at(position) | {"feature_source": FEATURE_SOURCE}

    def record_at(self, position: int) -> dict[str, Any]:
        """``learner_record`` of the learner at ``position`` (``Assessment.record``'s fields)."""
        self._mapped.touched(1, self._record_columns)
        score = {"customer_id": self._keys[position].decode(), "as_of": self.as_of}
        score |= {name: values[position].as_py() for name, values in self._scores.items()}
        decision = {name: values[position].as_py() for name, values in self._decisions.items()}
        indicators = [
            {"feature": name, "text": label}
            for name, label in self._flags
            if is_on(self._flag_values[name][position].as_py())
        ]
        reasons = self.reasons([position])[0]
        return learner_record(score, decision, reasons, indicators, self.model_version)

    def features_of(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """The snapshot rows of those of ``customer_ids`` the answers hold, in that order."""
        held = [int(position) for position in self.positions(customer_ids) if position >= 0]
        return self._rows(held)

    def _rows(self, positions: Sequence[int]) -> pd.DataFrame:
        return self._mapped.take(positions, self.feature_columns).to_pandas()

    def reasons(self, positions: Sequence[int], *, num_threads: int = 0) -> list[list[Reason]]:
        """The top reason codes of the learners at ``positions``; kept in a bounded LRU cache.

        Empty lists in rules-only mode. The learners not in the cache get one TreeSHAP call.
        """
        if self.model is None:
            return [[] for _ in positions]
        wanted = [int(position) for position in positions]
        with self._lock:
            kept = {p: _unpacked(self._cache[p]) for p in wanted if p in self._cache}
            for position in kept:
                self._cache.move_to_end(position)
        waiting = sorted(set(wanted) - kept.keys())
        if waiting:
            explained = dict(zip(waiting, self._explain(waiting, num_threads), strict=True))
            kept |= explained
            with self._lock:
                self._cache.update((p, _packed(found)) for p, found in explained.items())
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return [kept[position] for position in wanted]

    def _explain(self, positions: list[int], num_threads: int) -> list[list[Reason]]:
        """TreeSHAP of the rows at ``positions``, worded as ``Assessment`` words them."""
        frame = self._rows(positions)
        values = self.model.model_values(frame)
        points, _, _ = points_of(self.model.raw_contributions(values, num_threads=num_threads))
        names = self.model.feature_names
        columns = {
            name: frame[name].to_numpy() for name in frame.columns if name not in KEY_COLUMNS
        }
        return [
            ranked_reasons(
                {n: v[row] for n, v in columns.items()}, names, points[row], self.top_reasons
            )
            for row in range(len(positions))
        ]

    def call_order(self, limit: int) -> list[int]:
        """The rows of the first ``limit`` learners of the call list (P1 first)."""
        return column_of(self._table, CALL_ORDER).slice(0, limit).to_pylist()

    def warm_reasons(self, limit: int, *, chunk: int = WARM_CHUNK) -> int:
        """Compute the reasons of the first ``limit`` learners in call-list order, ahead of asks.

        TreeSHAP runs on one thread, ``chunk`` learners at a time, so the other cores stay free
        for requests; a learner asked about before their turn is explained on the spot. No more
        learners than the cache keeps are warmed.

        Returns:
            How many learners' reasons were computed (0 in rules-only mode).
        """
        if self.model is None:
            return 0
        order = self.call_order(min(limit, self._cache_size))
        for start in range(0, len(order), chunk):
            self.reasons(order[start : start + chunk], num_threads=1)
        return len(order)


PackedReasons = tuple[tuple[str, Any, float, str], ...]
"""A learner's reasons as the cache keeps them: plain tuples of atomic values, which the garbage
collector stops tracking, so a full cache adds nothing to a full collection's walk."""


def _packed(reasons: list[Reason]) -> PackedReasons:
    return tuple((r.feature, r.value, r.points, r.text) for r in reasons)


def _unpacked(packed: PackedReasons) -> list[Reason]:
    return [Reason(*fields) for fields in packed]


def load_day_answers(
    data_dir: Path,
    *,
    champion: ModelHandle | None,
    ruleset: RuleSet,
    store: StateStore,
    newer_than: date | None = None,
    top_reasons: int = TOP_REASONS,
    cache_size: int = REASONS_CACHE,
    build: bool = True,
) -> DayAnswers | None:
    """The answers of the batch job's latest snapshot under ``data_dir``.

    The answers file of that day, champion and rules is memory-mapped; without one (the batch
    ran with another champion or other rules, or before answers files existed) and with
    ``build``, this process decides the day from the snapshot and writes the file, unless
    another process is writing it.

    Returns:
        The answers, or None when there is no snapshot (or none newer than ``newer_than``), no
        file and no ``build``, or another process is building it.
    """
    snapshots = batch_snapshots(data_dir)
    if not snapshots or (newer_than is not None and snapshots[-1][0] <= newer_than):
        return None
    as_of, snapshot = snapshots[-1]
    version = None if champion is None else champion.version
    path = answers_path(data_dir, as_of, answers_tag(version, ruleset))
    answers = open_answers_file(path)
    if answers is None and build:
        with build_lock(path) as held:
            answers = open_answers_file(path)  # another process may have finished meanwhile
            if answers is None and held:
                answers = _built(path, read_features(snapshot), champion, ruleset, store, as_of)
    if answers is None:
        return None
    model = None if champion is None else champion.model
    return DayAnswers(answers, model=model, top_reasons=top_reasons, cache_size=cache_size)


def _built(
    path: Path,
    features: pd.DataFrame,
    champion: ModelHandle | None,
    ruleset: RuleSet,
    store: StateStore,
    as_of: date,
) -> MappedAnswers:
    """Decide the day from its snapshot, write the file and map it (in memory if unwritable)."""
    table = answers_table(
        features, score_features(features, champion), ruleset=ruleset,
        state=store.state_frame(as_of), as_of=as_of,
        model_version=None if champion is None else champion.version,
    )  # fmt: skip
    try:
        write_answers_file(table, path)
    except OSError as error:
        logger.warning("the day's answers stay in memory: cannot write %s (%s)", path, error)
        return MappedAnswers(table)
    return open_answers_file(path) or MappedAnswers(table)


__all__ = [
    "FEATURE_SOURCE",
    "REASONS_CACHE",
    "DayAnswers",
    "answers_table",
    "answers_tag",
    "load_day_answers",
    "write_day_answers",
]
