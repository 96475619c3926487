"""The service's current day answers, and the answers of a newer batch day when one appears.

``AnswerKeeper`` maps the answers file of the latest snapshot at start-up (``serving.app.answers``
reads it), warms the reason codes of the call list's first learners in the background, and looks
for a newer snapshot when a request asks about a later day; until answers are ready such requests
are assessed on demand.
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

from rules import RuleSet
from serving.app.answers import FEATURE_SOURCE, REASONS_CACHE, DayAnswers, load_day_answers
from serving.core.assess import TOP_REASONS, ModelHandle
from serving.infra.store import StateStore

logger = logging.getLogger("bentoml.lstep")


def _warm(answers: DayAnswers, limit: int, after: Callable[[], None] | None) -> None:
    """Background: the reasons of the day's first ``limit`` learners (call-list order), then
    ``after`` (when given)."""
    started = time.perf_counter()
    try:
        kept = answers.warm_reasons(limit)
        if after is not None:
            after()
    except Exception:  # a background thread: log; requests explain on the spot instead
        logger.exception("computing the reasons of the day's learners ahead failed")
        return
    seconds = time.perf_counter() - started
    logger.info("reasons of %d learners of %s ready in %.1f s", kept, answers.as_of, seconds)


@dataclass(frozen=True)
class ReasonOptions:
    """The reason codes of the day's answers.

    Attributes:
        top_reasons: reason codes per learner.
        warm_reasons: learners of the call list explained in the background after a load.
        cache_size: learners whose reason codes a worker keeps.
        after_warm: called once a warm-up has finished (the service freezes its heap there).
    """

    top_reasons: int = TOP_REASONS
    warm_reasons: int = 0
    cache_size: int = REASONS_CACHE
    after_warm: Callable[[], None] | None = None


class AnswerKeeper:
    """The current ``DayAnswers``, and the answers of a newer snapshot when one appears.

    Start-up maps the answers file of the latest snapshot; without one it is built in the
    background (``background``) or now. A request for a day after the answers' day makes the
    keeper look for a newer snapshot (at most every ``recheck_s`` seconds) in a background
    thread; until answers are ready such requests are assessed on demand.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        champion: ModelHandle | None,
        ruleset: RuleSet,
        store: StateStore,
        reasons: ReasonOptions = ReasonOptions(),
        recheck_s: float = 60.0,
        background: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.champion = champion
        self.ruleset = ruleset
        self.store = store
        self.top_reasons = reasons.top_reasons
        self.warm_reasons = reasons.warm_reasons
        self.cache_size = reasons.cache_size
        self.after_warm = reasons.after_warm
        self.recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._refreshing = False
        self._checked_at = clock()
        self.current: DayAnswers | None = self._load(newer_than=None, build=not background)
        if self.current is None and background:
            self._refreshing = True
            self._start(self.refresh)

    def _load(self, newer_than: date | None, *, build: bool = True) -> DayAnswers | None:
        started = time.perf_counter()
        answers = load_day_answers(
            self.data_dir, champion=self.champion, ruleset=self.ruleset, store=self.store,
            newer_than=newer_than, top_reasons=self.top_reasons, cache_size=self.cache_size,
            build=build,
        )  # fmt: skip
        if answers is not None:
            seconds = time.perf_counter() - started
            logger.info(
                "day answers of %s: %d learners in %.1f s", answers.as_of, len(answers), seconds
            )
            if self.warm_reasons and not answers.rules_only:
                self._start(_warm, answers, self.warm_reasons, self.after_warm)
        return answers

    @staticmethod
    def _start(target: Callable[..., Any], *args: Any) -> None:
        threading.Thread(target=target, args=args, name="lstep-day-answers", daemon=True).start()

    def answer(self, customer_ids: Sequence[str], as_of: date) -> list[dict[str, Any]] | None:
        """Records of all ``customer_ids`` on ``as_of``, or None when any must be assessed anew.

        One query reads the learners' stored state; a learner the answers do not hold, or whose
        state moved since they were decided, sends the whole request to the on-demand path.
        """
        if (answers := self.current) is None or not self.holds(as_of, answers):
            return None
        positions = answers.positions(customer_ids)
        if (positions < 0).any():
            return None
        rows = self.store.state_rows(customer_ids, as_of)
        records = []
        for customer_id, position in zip(customer_ids, positions.tolist(), strict=True):
            if answers.state_at(position) != rows.get(customer_id):
                return None
            records.append(answers.record_at(position) | {"feature_source": FEATURE_SOURCE})
        return records

    def holds(self, as_of: date, answers: DayAnswers | None = None) -> bool:
        """Whether ``answers`` (default: the current ones) are of ``as_of``, without I/O; a later
        day, or none held, makes the keeper look for a newer snapshot in the background."""
        answers = self.current if answers is None else answers
        if answers is not None and as_of == answers.as_of:
            return True
        if answers is None or as_of > answers.as_of:
            self.refresh_soon()
        return False

    def refresh_soon(self) -> None:
        """Look for a newer snapshot in the background, unless looked for lately."""
        now = self._clock()
        with self._lock:
            if self._refreshing or now - self._checked_at < self.recheck_s:
                return
            self._refreshing, self._checked_at = True, now
        self._start(self.refresh)

    def refresh(self) -> bool:
        """Load (or build) the answers of a snapshot newer than the current one (blocking).

        Returns:
            True when newer answers replaced the current ones. A failure is logged and the
            current answers stay (requests they cannot answer are assessed on demand).
        """
        # One load at a time in this process: a second one would find the file lock taken by
        # the first and come back empty-handed instead of waiting for its answers.
        with self._loading:
            try:
                current = self.current
                newer = self._load(newer_than=None if current is None else current.as_of)
            except Exception:  # a background thread: log, keep serving
                logger.exception("loading the day answers of a newer snapshot failed")
                return False
            finally:
                with self._lock:
                    self._refreshing = False
            if newer is not None:
                self.current = newer
            return newer is not None


__all__ = ["AnswerKeeper", "ReasonOptions"]
