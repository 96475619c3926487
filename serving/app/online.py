"""The online path: what the service does with a ``/score`` or ``/explain`` ask, without HTTP.

A dry run by id on the day of the latest snapshot is answered from the day's answers
(``serving.app.answers``). Every other ask is assessed on demand: the features of the learners come
from the snapshot when the day's answers hold them, else from the feature assembly
(``serving.infra.learners``, reached through ``fetch``: in the service, ``in_process``), and then
``assess`` scores, decides and explains them on the learners' current stored state. ``apply`` writes
the proposed moves with the batch's checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import anyio
import pandas as pd

from rules import RuleSet
from serving.app.answer_keeper import AnswerKeeper
from serving.app.answers import FEATURE_SOURCE
from serving.app.coalesce import Coalescer
from serving.core.asks import LearnerAsk
from serving.core.assess import TOP_REASONS, Assessment, AssessOptions, ModelHandle, assess
from serving.core.problems import Conflict, Invalid, Problem, TooLarge, worst
from serving.infra.learners import DayFeatures, LearnerData, day_features
from serving.infra.store import StateStore

FeatureFetch = Callable[[Sequence[LearnerAsk]], Awaitable[DayFeatures]]
"""Assembles the features of some asks of one day (the service: ``in_process``)."""
ANSWERS, ON_DEMAND = "answers", "scorer"
"""The two paths of ``/score`` (the label values of ``lstep_score_learners_total``)."""


@dataclass(frozen=True)
class Limits:
    """What one request may carry (``LSTEP_MAX_BATCH``, ``LSTEP_MAX_EVENTS``)."""

    max_learners: int
    max_events: int


@dataclass(frozen=True)
class ScoreResult:
    """The records of a ``/score`` ask and how they were made.

    Attributes:
        as_of: the day.
        records: one per learner, in the ask's order (``Assessment.record`` plus
            ``feature_source``, ``applied`` and ``not_applied_reason``).
        applied: the ask wrote the proposed moves.
        path: ``answers`` or ``scorer`` (assessed on demand).
    """

    as_of: date
    records: list[dict[str, Any]]
    applied: bool
    path: str

    @property
    def model_version(self) -> str | None:
        return self.records[0]["model_version"] if self.records else None

    @property
    def transitions_written(self) -> int:
        return sum(bool(record["applied"]) for record in self.records)


def in_process(data: LearnerData) -> FeatureFetch:
    """The features of asks assembled in this process, off the event loop, from ``data``
    (re-read when its files change: new learners arrive without a restart)."""

    def assemble(asks: Sequence[LearnerAsk]) -> DayFeatures:
        data.refresh()
        return day_features(asks, data)

    async def fetch(asks: Sequence[LearnerAsk]) -> DayFeatures:
        return await anyio.to_thread.run_sync(assemble, asks)

    return fetch


def resolve_as_of(requested: date | None, now: datetime) -> date:
    """The ask's day: ``requested``, or today (UTC).

    Raises:
        Invalid: a day after today (features need a day that has begun).
    """
    today = now.astimezone(UTC).date()
    if requested is not None and requested > today:
        raise Invalid(
            f"as_of {requested} is after today ({today}): features need a day that has begun"
        )
    return requested or today


def check_size(learners: int, events: int, limits: Limits) -> None:
    """Refuse more learners, or more inline events, than one request may carry.

    Raises:
        TooLarge: naming the count, the limit and its setting.
    """
    if learners > limits.max_learners:
        raise TooLarge(
            f"learners: {learners} learners, more than the {limits.max_learners} one "
            "request may carry (LSTEP_MAX_BATCH)"
        )
    if events > limits.max_events:
        raise TooLarge(
            f"learners.events: {events} inline events, more than the {limits.max_events} one "
            "request may carry (LSTEP_MAX_EVENTS)"
        )


@dataclass
class OnlineScoring:
    """The loaded champion, rules and stores; answers asks of any day.

    Attributes:
        champion: the loaded champion, None in rules-only mode.
        ruleset: the loaded rules.
        store: the state store (state read, moves written).
        fetch: assembles features the day's answers do not hold.
        keeper: the day's answers (None: every ask is assessed on demand).
        top_reasons: reason codes per learner.
    """

    champion: ModelHandle | None
    ruleset: RuleSet
    store: StateStore
    fetch: FeatureFetch
    keeper: AnswerKeeper | None = None
    top_reasons: int = TOP_REASONS

    def __post_init__(self) -> None:
        # A lambda, not the bound method: a test may replace ``_assess`` on the instance.
        self._coalesced = Coalescer(lambda frame, as_of: self._assess(frame, as_of))
        # TreeSHAP runs here while the rules engine decides (``AssessOptions.explainer``): two
        # threads, one per concurrent assessment (a coalesced round, an apply or an explain).
        self._explainer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lstep-treeshap")

    async def score(self, asks: Sequence[LearnerAsk], *, apply: bool, now: datetime) -> ScoreResult:
        """Score, decide and explain the asks (one day, unique learners); apply the moves.

        Raises:
            Problem: the most telling problem among the learners (unknown first), or a
                ``Conflict`` when moves cannot be applied on that day.
        """
        as_of = asks[0].as_of
        answered = None if apply else await self._answered(asks, as_of)
        if answered is not None:
            return ScoreResult(as_of, [_dry(record) for record in answered], False, ANSWERS)
        features = await self.features(asks)
        if apply:
            _check_stored(features)
        ids = [ask.customer_id for ask in asks]
        assessment = await self._assessed(features.frame, as_of, alone=apply)
        records = [
            record | {"feature_source": features.sources[record["customer_id"]]}
            for record in assessment.records(ids)
        ]
        if not apply:
            return ScoreResult(as_of, [_dry(record) for record in records], False, ON_DEMAND)
        written = await anyio.to_thread.run_sync(self._apply, assessment, now)
        return ScoreResult(as_of, _applied(records, assessment, written), True, ON_DEMAND)

    async def explain(self, ask: LearnerAsk) -> tuple[Assessment, str]:
        """The assessment of one learner (explained) and where their features came from.

        Raises:
            Conflict: rules-only mode (there is no model to explain with).
            Problem: the learner's own problem (unknown, enrolled after the day ...).
        """
        if self.champion is None:
            raise Conflict("the service runs in rules-only mode: there is no model to explain")
        features = await self.features([ask])
        assessment = await self._assessed(features.frame, ask.as_of, alone=True)
        return assessment, features.sources[ask.customer_id]

    async def features(self, asks: Sequence[LearnerAsk]) -> DayFeatures:
        """The asks' features: the snapshot's rows the day's answers hold, the rest fetched.

        Raises:
            Problem: the most telling problem among the learners that have no features.
        """
        answers = None if self.keeper is None else self.keeper.current
        held = DayFeatures.of(None, FEATURE_SOURCE)  # no rows (shared: no frame built)
        by_id = [ask.customer_id for ask in asks if not ask.inline]
        if by_id and answers is not None and answers.as_of == asks[0].as_of:
            # Inline asks alone read nothing here: taking no rows of the mapped file still
            # built a frame of its sixty-odd columns (a tenth of an inline request).
            held = DayFeatures.of(answers.features_of(by_id), FEATURE_SOURCE)
        rest = [ask for ask in asks if ask.customer_id not in held.sources]
        features = held.merged(await self.fetch(rest)) if rest else held
        _raise_worst(features.problems)
        return features

    async def _answered(
        self, asks: Sequence[LearnerAsk], as_of: date
    ) -> list[dict[str, Any]] | None:
        if self.keeper is None or any(ask.inline for ask in asks):
            return None
        if not self.keeper.holds(as_of):  # another day: no thread hop to learn it
            return None
        ids = [ask.customer_id for ask in asks]
        return await anyio.to_thread.run_sync(self.keeper.answer, ids, as_of)

    async def _assessed(self, frame: pd.DataFrame, as_of: date, *, alone: bool) -> Assessment:
        """The assessment of ``frame``'s learners: this request's alone (apply, explain: the
        result is the request's own), or shared with the concurrent requests of the day."""
        if alone:
            return await anyio.to_thread.run_sync(self._assess, frame, as_of)
        return await self._coalesced(frame, as_of)

    def _assess(self, frame: pd.DataFrame, as_of: date) -> Assessment:
        """Assess on the learners' stored state of ``as_of`` (point-in-time: never later).

        The frames are the scorer's own (features assembled as the batch's, scores of the
        champion, state of the store), so the rules engine coerces them without a pandera pass
        (``check_inputs=False``): on one learner the checks cost more than the assessment.
        """
        state = self.store.state_of(frame["customer_id"].tolist(), as_of)
        options = AssessOptions(
            top_reasons=self.top_reasons, explain=True, check_inputs=False,
            explainer=self._explainer,
        )  # fmt: skip
        return assess(
            frame, champion=self.champion, ruleset=self.ruleset, state=state, as_of=as_of,
            options=options,
        )  # fmt: skip

    def _apply(self, assessment: Assessment, now: datetime) -> dict[str, str | None]:
        """Write the changed decisions as transitions, with the daily batch's checks.

        ``StateStore.apply_learners`` under an ``api-<uuid>`` run id: moves of learners with an
        active override (except to ST_006), or whose stored tag is no longer the decision's
        ``from_tag``, are skipped; no score rows are written and the day is not marked done.

        Raises:
            ApplyRefused: the day is before the latest completed batch day (a ``Conflict``).
        """
        result = self.store.apply_learners(
            assessment.as_of,
            assessment.decisions,
            run_id=f"api-{uuid.uuid4().hex}",
            model_version=assessment.model_version,
            now=now,
        )
        return result.outcomes


def _check_stored(features: DayFeatures) -> None:
    """Moves are written only for learners the daily batch can read (the stored customers).

    Raises:
        Conflict: naming the learners known only from the request.
    """
    if features.unstored:
        named = sorted(features.unstored)
        raise Conflict(
            f"learners {named[:5]} are not in the event store's customers: apply writes moves "
            "only for learners the daily batch can read; add them to customers.parquet first, "
            "or score them without apply"
        )


def _raise_worst(problems: dict[str, Problem]) -> None:
    problem = worst(problems.values())
    if problem is not None:
        raise problem


def _dry(record: dict[str, Any]) -> dict[str, Any]:
    return record | {"applied": False, "not_applied_reason": "dry run"}


def _applied(
    records: list[dict[str, Any]], assessment: Assessment, written: dict[str, str | None]
) -> list[dict[str, Any]]:
    """Each record with whether its proposed move was written, and if not, why."""
    changed = dict(
        zip(
            assessment.decisions["customer_id"].astype(str),
            assessment.decisions["changed"].astype(bool),
            strict=True,
        )
    )
    out = []
    for record in records:
        customer_id = record["customer_id"]
        if not changed[customer_id]:
            out.append(record | {"applied": False, "not_applied_reason": "no move proposed"})
            continue
        skipped = written.get(customer_id, "not written")
        out.append(record | {"applied": skipped is None, "not_applied_reason": skipped})
    return out


__all__ = [
    "ANSWERS",
    "ON_DEMAND",
    "FeatureFetch",
    "Limits",
    "OnlineScoring",
    "ScoreResult",
    "check_size",
    "in_process",
    "resolve_as_of",
]
