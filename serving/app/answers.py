"""The day's answers: every learner of the batch job's latest snapshot, assessed once.

A ``/score`` request for a learner by id, on the day of the batch job's latest feature snapshot,
asks a question whose inputs are all known beforehand: the learner's snapshot row, the champion,
the rules and the learner's stored state. ``DayAnswers.build`` runs ``assess`` over all the
snapshot's learners at once, vectorised, and keeps each learner's assessment beside the state it
was decided on. Answering is then a lookup, a check that the learner's stored state is still
that state, and the learner's reason codes: one TreeSHAP row, computed on first use and kept
(TreeSHAP costs milliseconds per learner, too much to run for a million learners up front).

Each answer is ``assess``'s own record for the same inputs, so it equals what the on-demand path
computes for that learner. When the learner's state has moved since the answers were built (an
override, an applied move), ``DayAnswers.record`` returns None and the request is assessed on
demand, on the new state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from rules import RuleSet
from serving.core.assess import TOP_REASONS, Assessment, AssessOptions, ModelHandle, assess
from serving.core.state import StateRow, state_rows_of, without_later_states
from serving.infra.snapshots import latest_feature_snapshot
from serving.infra.store import StateStore

logger = logging.getLogger("bentoml.lstep")

FEATURE_SOURCE = "snapshot"
WARM_CHUNK = 256
"""Learners explained per TreeSHAP call of the background warm-up."""


@dataclass
class DayAnswers:
    """The assessment of one day's learners and the state each was decided on.

    Attributes:
        assessment: ``assess`` over the snapshot's learners (those whose tag began after the day
            left out: that day can no longer be decided for them).
        states: customer_id -> the ``StateRow`` the decision was made on (absent: new learner).
    """

    assessment: Assessment
    states: dict[str, StateRow]

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
    ) -> DayAnswers:
        """Assess every learner of ``features`` (one day) against ``state``."""
        features, state, _ = without_later_states(features, state, as_of)
        assessment = assess(
            features,
            champion=champion,
            ruleset=ruleset,
            state=state,
            as_of=as_of,
            options=AssessOptions(top_reasons=top_reasons, whole_day=True),
        )
        assessment.prepare_reasons()
        assessment.positions  # noqa: B018 - built now, not on the first request
        return cls(assessment=assessment, states=state_rows_of(state))

    @property
    def as_of(self) -> date:
        return self.assessment.as_of

    def __len__(self) -> int:
        return len(self.assessment)

    def record(self, customer_id: str, state: StateRow | None) -> dict[str, Any] | None:
        """The learner's record, if the answers hold them and their state is still ``state``.

        Args:
            customer_id: the learner.
            state: their stored state now (None when they have none).

        Returns:
            ``Assessment.record`` plus ``feature_source``; None when the learner is not among
            the answers or their state moved since the build.
        """
        position = self.assessment.positions.get(customer_id)
        if position is None or self.states.get(customer_id) != state:
            return None
        return self.assessment.record(position) | {"feature_source": FEATURE_SOURCE}

    def features_of(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        """The snapshot rows of those of ``customer_ids`` the answers hold."""
        positions = self.assessment.positions
        held = [positions[c] for c in customer_ids if c in positions]
        return self.assessment.features.iloc[held].reset_index(drop=True)

    def warm_reasons(self, limit: int, *, chunk: int = WARM_CHUNK) -> int:
        """Compute the reasons of the first ``limit`` learners in call-list order, ahead of asks.

        TreeSHAP runs on one thread, ``chunk`` learners at a time, so the other cores stay free
        for requests; a learner asked about before their turn is explained on the spot.

        Returns:
            How many learners' reasons were computed (0 in rules-only mode).
        """
        if self.assessment.rules_only:
            return 0
        order = [int(position) for position in self.assessment.call_order[:limit]]
        for start in range(0, len(order), chunk):
            self.assessment.reasons(order[start : start + chunk], num_threads=1)
        return len(order)


def load_day_answers(
    data_dir: Path,
    *,
    champion: ModelHandle | None,
    ruleset: RuleSet,
    store: StateStore,
    newer_than: date | None = None,
    top_reasons: int = TOP_REASONS,
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
    """The current ``DayAnswers``, and the answers of a newer snapshot when one appears.

    The batch job writes one snapshot a day. A request for a day after the answers' day makes
    the keeper look for a newer snapshot (at most every ``recheck_s`` seconds) and build its
    answers in a background thread; until they are ready such requests are assessed on demand.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        champion: ModelHandle | None,
        ruleset: RuleSet,
        store: StateStore,
        top_reasons: int = TOP_REASONS,
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
            if self.warm_reasons and not answers.assessment.rules_only:
                threading.Thread(
                    target=_warm,
                    args=(answers, self.warm_reasons),
                    name="lstep-reasons",
                    daemon=True,
                ).start()
        return answers

    def answer(self, customer_ids: Sequence[str], as_of: date) -> list[dict[str, Any]] | None:
        """Records of all ``customer_ids`` on ``as_of``, or None when any must be assessed anew.

        One query reads the learners' stored state; a learner the answers do not hold, or whose
        state moved since they were built, sends the whole request to the on-demand path.
        """
        answers = self.current
        if answers is None or as_of != answers.as_of:
            if answers is None or as_of > answers.as_of:
                self.refresh_soon()
            return None
        rows = self.store.state_rows(customer_ids, as_of)
        records = []
        for customer_id in customer_ids:
            record = answers.record(customer_id, rows.get(customer_id))
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
            current answers stay (requests they cannot answer are assessed on demand).
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


__all__ = ["FEATURE_SOURCE", "AnswerKeeper", "DayAnswers", "load_day_answers"]
