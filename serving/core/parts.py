"""A large day scored in parts, each part decided on a thread while the next one is scored.

LightGBM's predict keeps both cores busy and releases the GIL; the rules engine is pandas and
numpy on one core. Scored whole and then decided whole, a core sat idle through the decisions
(at 1M learners ~3-4 s a day). Here the day is cut into parts of whole prediction chunks
(``PART_ROWS``); the main thread scores part k+1 while a second thread decides part k, and only
the last part is decided alone.

The decisions of each learner do not depend on the others' (the day's capacity cut, the one
thing that does, is ``whole_day=True``: never in parts); so the parts' decisions, put back in
``rules.decide``'s order, are the whole day's (``tests/serving/core/test_parts.py``). Each part
is decided on its own learners' stored state: the rules engine checks the state it is given,
and the whole state checked once per part cost ~0.4 s of CPU each at 1M learners. Every row of
the state is still checked once, by one part: the state of learners outside the day goes with
the first part.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from itertools import pairwise

import numpy as np
import pandas as pd

from models.matrix import PREDICT_CHUNK_ROWS
from rules.codes import codes_of
from rules.decisions import in_decision_order

PART_ROWS = 2 * PREDICT_CHUNK_ROWS
"""Learners per part: whole prediction chunks, so that no part ends in a short chunk."""

Decide = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame], pd.DataFrame]
"""Decisions of a part's features, its scores and its learners' state (``decide_learners`` with
the day's rules)."""
Score = Callable[[pd.DataFrame], pd.DataFrame]
"""Scores of a part's features (``score_features`` with the champion)."""
Stage = Callable[[str], AbstractContextManager[None]]


def in_parts(rows: int) -> bool:
    """Whether a day of ``rows`` learners is scored and decided in parts: two parts at least,
    so that one is decided while the other is scored."""
    return rows > PART_ROWS


def scored_and_decided(
    features: pd.DataFrame,
    state: pd.DataFrame,
    score: Score,
    decide: Decide,
    priority_order: tuple[str, ...],
    stage: Stage,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scores and decisions of ``features``, part by part (see the module docstring).

    The ``score`` stage holds the scoring and the decisions made beside it, ``decide`` the
    last part's decisions and the joining of the parts.

    Returns:
        The scores in ``features``' order, and the decisions in ``rules.decide``'s order (P1
        first), as ``score`` and ``decide`` give them for the whole frame.

    Raises:
        Whatever ``score`` or ``decide`` raises for a part; the parts not started are dropped,
            the one being decided is waited for.
    """
    scored: list[pd.DataFrame] = []
    decided: list[Future[pd.DataFrame]] = []
    starts = range(0, len(features), PART_ROWS)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstep-decide") as beside:
        try:
            # first on the thread beside (its jobs run in turn), while the first part is scored
            states = beside.submit(_state_parts, state, features["customer_id"], len(starts))
            with stage("score"):
                for index, start in enumerate(starts):
                    part = features.iloc[start : start + PART_ROWS]
                    scored.append(score(part))
                    decided.append(beside.submit(_decided, decide, part, scored[-1], states, index))
            with stage("decide"):
                decisions = _joined([job.result() for job in decided])
                return _joined(scored), in_decision_order(decisions, priority_order)
        except BaseException:
            for job in decided:
                job.cancel()
            raise


def _state_parts(state: pd.DataFrame, customer_ids: pd.Series, parts: int) -> list[pd.DataFrame]:
    """``state``'s rows of each part's learners; the rows of learners outside the day go with
    the first part, so that each row is checked once (a learner's rows all go to one part)."""
    if state.empty:
        return [state] * parts
    at = codes_of(state["customer_id"].array, customer_ids.array)  # row in the day, -1: none
    part = np.where(at >= 0, at // PART_ROWS, 0)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    return [state.take(order[a:b]).reset_index(drop=True) for a, b in pairwise(bounds)]


def _decided(
    decide: Decide,
    part: pd.DataFrame,
    scores: pd.DataFrame,
    states: Future[list[pd.DataFrame]],
    index: int,
) -> pd.DataFrame:
    return decide(part, scores, states.result()[index])


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)
