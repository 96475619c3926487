"""The day's answers: every learner of the batch job's latest snapshot, scored and decided once.

A ``/score`` request for a learner by id, on the day of the batch job's latest feature snapshot,
asks a question whose inputs are all known beforehand: the learner's snapshot row, the champion,
the rules and the learner's stored state. ``DayAnswers.build`` runs the shared scoring core
(``serving.scoring``: ``score_features`` and ``decide_learners``) over all the snapshot's
learners at once, vectorised, and keeps each learner's scores and decision beside the state they
were decided on. Answering is then a lookup, a check that the learner's stored state is still
that state, and the learner's reason codes: one TreeSHAP row, computed on first use and kept
(TreeSHAP costs milliseconds per learner, too much to run for a million learners up front).

Each answer is the scoring core's own output for the same inputs, so it equals what the scorer
service computes for that learner (``tests/serving/test_answers.py`` checks every learner). When
the learner's state has moved since the answers were built (an override, an applied move),
``DayAnswers.record`` returns None and the service asks the scorer, which decides on the new state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.churn import PREDICTION_COLUMNS, ChurnModel
from models.explain import KEY_COLUMNS, Reason, points_of, ranked_reasons
from rules import RuleSet
from serving.batch import latest_feature_snapshot
from serving.scoring import Champion, decide_learners, learner_record, score_features
from serving.store import StateStore

logger = logging.getLogger("bentoml.lstep")

StateRow = tuple[str, date, str | None, date | None]
"""A learner's stored state on a day: tag, since, active override's tag and expiry (or None)."""
DECISION_FIELDS = (
    "from_tag",
    "to_tag",
    "rule_id",
    "description",
    "signal",
    "priority",
    "action",
    "control",
)
"""The decision columns a learner's record quotes (``serving.scoring.learner_record``)."""
FEATURE_SOURCE = "snapshot"


def state_row(tag: Any, since: Any, override_tag: Any, override_expires: Any) -> StateRow:
    """One normal form for a state row, whether it came from a frame or from a query."""
    since_day = _day(since)
    if since_day is None:
        raise ValueError(f"state row of tag {tag}: missing since")
    override = None if _missing(override_tag) else str(override_tag)
    return str(tag), since_day, override, _day(override_expires)


def state_rows_of(state: pd.DataFrame) -> dict[str, StateRow]:
    """``state_row`` of every row of a ``state_frame``, by customer_id (column-wise: fast)."""
    overrides = state["override_tag"]
    columns = zip(
        state["tag"].astype(str).tolist(),
        _days(state["since"]),
        overrides.astype(object).where(overrides.notna(), None).tolist(),
        _days(state["override_expires"]),
        strict=True,
    )
    return dict(zip(state["customer_id"].astype(str).tolist(), columns, strict=True))


def _days(column: pd.Series) -> list[date | None]:
    """A datetime column as ``date`` objects, None where missing."""
    return column.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").tolist()


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _day(value: Any) -> date | None:
    if _missing(value):
        return None
    return value.date() if isinstance(value, datetime) else value


@dataclass
class DayAnswers:
    """Scores and decisions of one day's learners, and the state each was decided on.

    Attributes:
        as_of: the day (the snapshot's as_of).
        model_version: the champion's version, None in rules-only mode.
        positions: customer_id -> row of the arrays below.
        states: customer_id -> the ``StateRow`` the decision was made on (absent: new learner).
        scores: prediction column -> one value per row (NaN in rules-only mode).
        decisions: ``DECISION_FIELDS`` -> one value per row.
        feature_columns: the snapshot's feature columns, which the reason texts quote.
        model_values: the booster's input rows (None in rules-only mode).
        model: the champion's ``ChurnModel`` (None in rules-only mode).
        call_order: positions in the rules engine's order: P1 first, then by value at risk.
        top_reasons: reasons per record.
    """

    as_of: date
    model_version: str | None
    positions: dict[str, int]
    states: dict[str, StateRow]
    scores: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]
    feature_columns: dict[str, np.ndarray]
    model_values: np.ndarray | None
    model: ChurnModel | None
    call_order: np.ndarray
    top_reasons: int = 3
    _reasons: dict[int, list[Reason]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        features: pd.DataFrame,
        *,
        champion: Champion | None,
        ruleset: RuleSet,
        state: pd.DataFrame,
        as_of: date,
        top_reasons: int = 3,
    ) -> DayAnswers:
        """Score and decide every learner of ``features`` (one day) against ``state``.

        Learners whose stored tag began after ``as_of`` are left out: that day can no longer
        be decided for them (the scorer explains why, with a 422).

        Args:
            features: the day's feature snapshot (``build_features`` output, one day).
            champion: the loaded champion, or None for rules-only.
            ruleset: the loaded rules.
            state: the state store's ``state_frame(as_of)``.
            as_of: the snapshot's day.
            top_reasons: reasons per record.
        """
        later = state["since"] > pd.Timestamp(as_of)
        if later.any():
            gone = set(state.loc[later, "customer_id"])
            features = features[~features["customer_id"].isin(gone)].reset_index(drop=True)
            state = state[~later].reset_index(drop=True)
        scores = score_features(features, champion)
        decisions = decide_learners(features, scores, ruleset, state, as_of, check_output=False)
        ids = scores["customer_id"].tolist()
        positions = {customer_id: row for row, customer_id in enumerate(ids)}
        aligned = decisions.set_index("customer_id").reindex(pd.Index(ids, dtype=object))
        model = None if champion is None else champion.model
        return cls(
            as_of=as_of,
            model_version=None if champion is None else champion.version,
            positions=positions,
            states=state_rows_of(state),
            scores={name: scores[name].to_numpy(np.float64) for name in PREDICTION_COLUMNS},
            decisions={name: aligned[name].to_numpy(object) for name in DECISION_FIELDS},
            feature_columns={
                name: features[name].to_numpy()
                for name in features.columns
                if name not in KEY_COLUMNS
            },
            model_values=None
            if model is None
            else np.ascontiguousarray(model.model_values(features)),
            model=model,
            call_order=np.array([positions[c] for c in decisions["customer_id"]], dtype=np.int64),
            top_reasons=top_reasons,
        )

    def __len__(self) -> int:
        return len(self.positions)

    def record(self, customer_id: str, state: StateRow | None) -> dict[str, Any] | None:
        """The learner's record, if the answers hold them and their state is still ``state``.

        Args:
            customer_id: the learner.
            state: their stored state now (``state_row`` form; None when they have none).

        Returns:
            The record ``ScoredLearners.to_records`` gives, plus ``feature_source``; None when
            the learner is not among the answers or their state moved since the build.
        """
        position = self.positions.get(customer_id)
        if position is None or self.states.get(customer_id) != state:
            return None
        score = {"customer_id": customer_id, "as_of": self.as_of}
        score |= {name: values[position] for name, values in self.scores.items()}
        decision = {name: values[position] for name, values in self.decisions.items()}
        record = learner_record(score, decision, self.reasons(position), self.model_version)
        return record | {"feature_source": FEATURE_SOURCE}

    def reasons(self, position: int) -> list[Reason]:
        """The top reasons of the learner at ``position``: TreeSHAP on their row, then kept."""
        if self.model is None:
            return []  # rules-only: nothing to explain
        kept = self._reasons.get(position)
        if kept is None:
            kept = self._explain([position])[0]
        return kept

    def warm_reasons(self, limit: int, *, chunk: int = 256) -> int:
        """Compute the reasons of the first ``limit`` learners in call-list order, ahead of asks.

        TreeSHAP runs on one thread, ``chunk`` learners at a time, so the other cores stay free
        for requests; a learner asked about before their turn is explained on the spot.

        Returns:
            How many learners' reasons are kept now (0 in rules-only mode).
        """
        if self.model is None:
            return 0
        waiting = [int(p) for p in self.call_order[:limit] if int(p) not in self._reasons]
        for start in range(0, len(waiting), chunk):
            self._explain(waiting[start : start + chunk], num_threads=1)
        return len(self._reasons)

    def _explain(self, positions: list[int], num_threads: int = 0) -> list[list[Reason]]:
        """Top reasons of the learners at ``positions`` (one TreeSHAP call), kept for later."""
        if self.model is None or self.model_values is None:
            raise RuntimeError("rules-only answers have no model to explain with")
        contributions = self.model.raw_contributions(
            self.model_values[positions], num_threads=num_threads
        )
        points, _, _ = points_of(contributions)
        names = self.model.feature_names
        explained = [
            ranked_reasons(self._row(position), names, points[i], self.top_reasons)
            for i, position in enumerate(positions)
        ]
        self._reasons.update(zip(positions, explained, strict=True))
        return explained

    def _row(self, position: int) -> dict[str, Any]:
        return {name: values[position] for name, values in self.feature_columns.items()}


def load_day_answers(
    data_dir: Path,
    *,
    champion: Champion | None,
    ruleset: RuleSet,
    store: StateStore,
    newer_than: date | None = None,
    top_reasons: int = 3,
) -> DayAnswers | None:
    """Build the answers of the batch job's latest snapshot under ``data_dir``.

    Returns:
        The answers, or None when there is no snapshot (or none newer than ``newer_than``).
    """
    latest = latest_feature_snapshot(data_dir)
    if latest is None or (newer_than is not None and latest[0] <= newer_than):
        return None
    as_of, features = latest
    return DayAnswers.build(
        features,
        champion=champion,
        ruleset=ruleset,
        state=store.state_frame(as_of),
        as_of=as_of,
        top_reasons=top_reasons,
    )


def _warm(answers: DayAnswers, limit: int) -> None:
    """Background: the reasons of the day's first ``limit`` learners (call-list order)."""
    started = time.perf_counter()
    try:
        kept = answers.warm_reasons(limit)
    except Exception:  # a background thread: log; requests explain on the spot instead
        logger.exception("computing the reasons of the day's learners ahead failed")
        return
    seconds = time.perf_counter() - started
    logger.info("reasons of %d learners of %s ready in %.1f s", kept, answers.as_of, seconds)


class AnswerKeeper:
    """The service's current ``DayAnswers``, and the answers of a newer snapshot when one appears.

    The batch job writes one snapshot a day. A request for a day after the answers' day makes
    the keeper look for a newer snapshot (at most every ``recheck_s`` seconds) and build its
    answers in a background thread; until they are ready such requests go to the scorer.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        champion: Champion | None,
        ruleset: RuleSet,
        store: StateStore,
        top_reasons: int = 3,
        warm_reasons: int = 0,
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.champion = champion
        self.ruleset = ruleset
        self.store = store
        self.top_reasons = top_reasons
        self.warm_reasons = warm_reasons
        self.recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._refreshing = False
        self._checked_at = clock()
        self.current: DayAnswers | None = self._load(newer_than=None)

    def _load(self, newer_than: date | None) -> DayAnswers | None:
        started = time.perf_counter()
        answers = load_day_answers(
            self.data_dir,
            champion=self.champion,
            ruleset=self.ruleset,
            store=self.store,
            newer_than=newer_than,
            top_reasons=self.top_reasons,
        )
        if answers is not None:
            seconds = time.perf_counter() - started
            logger.info(
                "day answers of %s: %d learners in %.1f s", answers.as_of, len(answers), seconds
            )
            if self.warm_reasons and answers.model is not None:
                threading.Thread(
                    target=_warm,
                    args=(answers, self.warm_reasons),
                    name="lstep-reasons",
                    daemon=True,
                ).start()
        return answers

    def answer(self, customer_ids: Sequence[str], as_of: date) -> list[dict[str, Any]] | None:
        """Records of all ``customer_ids`` on ``as_of``, or None when any must go to the scorer.

        One query reads the learners' stored state; a learner the answers do not hold, or whose
        state moved since they were built, sends the whole request to the scorer.
        """
        answers = self.current
        if answers is None or as_of != answers.as_of:
            if answers is None or as_of > answers.as_of:
                self.refresh_soon()
            return None
        rows = self.store.state_rows(customer_ids, as_of)
        records = []
        for customer_id in customer_ids:
            row = rows.get(customer_id)
            record = answers.record(customer_id, None if row is None else state_row(*row))
            if record is None:
                return None
            records.append(record)
        return records

    def refresh_soon(self) -> None:
        """Look for a newer snapshot in the background, unless looked for lately."""
        now = self._clock()
        with self._lock:
            if self._refreshing or now - self._checked_at < self.recheck_s:
                return
            self._refreshing, self._checked_at = True, now
        threading.Thread(target=self.refresh, name="lstep-day-answers", daemon=True).start()

    def refresh(self) -> bool:
        """Build the answers of a snapshot newer than the current one (blocking).

        Returns:
            True when newer answers replaced the current ones. A failure is logged and the
            current answers stay (requests they cannot answer go to the scorer).
        """
        try:
            current = self.current
            newer = self._load(newer_than=None if current is None else current.as_of)
        except Exception:  # a background thread: log, keep serving
            logger.exception("building the day answers of a newer snapshot failed")
            return False
        finally:
            with self._lock:
                self._refreshing = False
        if newer is not None:
            self.current = newer
        return newer is not None


__all__ = [
    "DECISION_FIELDS",
    "AnswerKeeper",
    "DayAnswers",
    "StateRow",
    "load_day_answers",
    "state_row",
    "state_rows_of",
]
