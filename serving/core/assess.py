"""``assess``: score -> decide -> explain, the one path every caller takes.

A feature frame of one day, the champion (or none: rules-only), the rules and the learners'
stored state go in; an ``Assessment`` comes out: the calibrated scores (``score_features``), the
rules engine's decisions (``decide_learners``) and, on demand, each learner's reasons. Reasons
are of two kinds, given in every mode: the model's reason codes (TreeSHAP in probability points,
empty without a model) and the risk indicators that are on (the flags rule-side moves fire on).
``Assessment.record`` is what the API, the batch's call list and the report say of a learner.

The daily batch, the service's day answers, the online scorer, ``lstep explain`` and the report
all call ``assess``; ``tests/serving/core/test_paths.py`` checks they give identical records.

Nothing here reads a clock, a file or a database: the state comes in as a frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property, partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pyarrow_lib

from features.schemas import KEY_COLUMNS
from models.churn import PREDICTION_COLUMNS, ChurnModel
from models.explain import Explanation, Reason, explain_frame, points_of, ranked_reasons
from models.matrix import SMALL_BATCH_ROWS
from rules import OVER_CAPACITY, RuleSet, decide
from rules.capacity import cut_whole_day
from rules.codes import codes_of, one_array
from rules.columns import Columns
from serving.core.frames import numbered
from serving.core.parts import in_parts, scored_and_decided
from serving.core.records import is_on, learner_record, risk_flags, rule_wording
from serving.core.scoring import (
    SCORES_SCHEMA,
    ModelHandle,
    check_keys,
    score_features,
    scores_and_contributions,
)

TOP_REASONS = 3
"""Reason codes per learner in a record, the call list and the report."""
SCORE_COLUMNS: tuple[str, ...] = ("customer_id", "as_of", *PREDICTION_COLUMNS)
DECISION_FIELDS: tuple[str, ...] = (
    "from_tag",
    "to_tag",
    "rule_id",
    "description",
    "signal",
    "priority",
    "action",
    "campaign_id",
    "channel",
    "control",
    OVER_CAPACITY,
    "behaviour_tags",
    "why",
    "value_at_risk",
    "expected_months",
    "projected_value",
)
"""The decision columns a learner's record quotes."""

# --- decisions ------------------------------------------------------------------------------------


def decide_learners(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    *,
    check_inputs: bool = True,
    check_output: bool = True,
    whole_day: bool = False,
) -> pd.DataFrame:
    """Run the rules engine on features plus scores (``rules.decide``), then the day's capacity.

    The capacity for personal outreach is a limit on a whole day (``rules.cut_to_capacity``):
    it is applied when ``features`` are all of the day's learners (the batch, the day's
    answers). Learners decided on demand, without the rest of their day, keep the rules'
    priority and action, and ``over_capacity`` is null: not known.

    Args:
        features: one row per learner at ``as_of``.
        scores: ``score_features`` output for the same learners.
        ruleset: the loaded rules.
        state: the learners' stored state on ``as_of`` (an empty frame for a fresh store).
        as_of: the decision day.
        check_inputs: passed to ``rules.decide`` (False: ``scored`` and ``state`` are only
            coerced, not checked; for frames of the caller's own making).
        check_output: passed to ``rules.decide`` (False skips the engine's self-check only).
        whole_day: ``features`` hold every learner of the day: apply the capacity.

    Returns:
        The engine's decisions (``rules.DECISION_COLUMNS``) plus ``over_capacity`` (nullable
        boolean: null when the capacity was not applied), P1 first.

    Raises:
        ValueError: when features hold another day, or features and scores name other learners.
    """
    check_keys(features)
    columns = Columns.of(features)
    _check_day(columns, as_of)
    scored = _with_scores(features, columns, Columns.of(scores))
    decisions = decide(
        ruleset,
        state,
        scored,
        as_of,
        check_inputs=check_inputs,
        check_output=check_output,
        wording=rule_wording(),
    )
    if whole_day:
        decisions = cut_whole_day(ruleset, decisions, scored)
        over = decisions[OVER_CAPACITY].astype("boolean")
    else:
        over = pd.array([pd.NA] * len(decisions), dtype="boolean")
    # The one column set in place: astype on the frame would copy every decision column.
    decisions[OVER_CAPACITY] = over
    return decisions


def _with_scores(features: pd.DataFrame, columns: Columns, score_columns: Columns) -> Columns:
    """``features`` (and their ``columns``) with the score columns of the same learners: the
    engine's ``scored``.

    Scores made from this very frame (every caller's case) list the same ids in the same order:
    their arrays join the feature columns as they are, and no frame is built. A merge, which
    copies every feature block (~10 ms for one learner), is the general case.

    Raises:
        ValueError: features and scores name other learners.
    """
    learners = len(columns)
    ids = score_columns["customer_id"]
    if len(ids) == learners and np.array_equal(ids, columns["customer_id"]):
        return columns.with_values({name: score_columns[name] for name in PREDICTION_COLUMNS})
    present = [name for name in PREDICTION_COLUMNS if name in features.columns]
    base = features.drop(columns=present) if present else features
    kept = score_columns.frame()[["customer_id", *PREDICTION_COLUMNS]]
    # A merge indicator, not Series.isin: isin on a million Arrow-backed strings is very slow.
    scored = base.merge(kept, on="customer_id", how="left", validate="one_to_one", indicator=True)
    unscored = int((scored["_merge"] == "left_only").sum())
    if unscored or len(score_columns) != learners:
        raise ValueError(
            f"scores: {len(score_columns)} rows for {learners} learners "
            f"({unscored} learners without a score row); score the same frame you decide on"
        )
    return Columns.of(scored.drop(columns="_merge"))


def _check_day(features: Columns, as_of: date) -> None:
    if not len(features):
        return
    other = features["as_of"] != pd.Timestamp(as_of.year, as_of.month, as_of.day).to_datetime64()
    if other.any():
        days = sorted({str(pd.Timestamp(day).date()) for day in features["as_of"][other]})
        raise ValueError(
            f"feature frame: {int(other.sum())} rows are for {days[:5]}, not as_of {as_of}"
        )


# --- the assessment -------------------------------------------------------------------------------


@dataclass(eq=False)
class Assessment:
    """Scores, decisions and (on demand) reasons of a group of learners on one day.

    Attributes:
        as_of: the day.
        features: the assessed feature rows, in input order (index 0..n-1).
        scores: ``score_features`` output, row for row with ``features``.
        decisions: ``decide_learners`` output, P1 first.
        model: the champion's ``ChurnModel``, None in rules-only mode.
        model_version: the champion's version, None in rules-only mode.
        top_reasons: reason codes per learner.
    """

    as_of: date
    features: pd.DataFrame
    scores: pd.DataFrame
    decisions: pd.DataFrame
    model: ChurnModel | None = None
    model_version: str | None = None
    top_reasons: int = TOP_REASONS
    _reasons: dict[int, list[Reason]] = field(default_factory=dict, repr=False)
    _model_values: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def rules_only(self) -> bool:
        """True when no model scored these learners."""
        return self.model is None

    @cached_property
    def positions(self) -> dict[str, int]:
        """customer_id -> row of ``features`` and ``scores``."""
        ids = self.scores["customer_id"].astype(str).tolist()
        return {customer_id: row for row, customer_id in enumerate(ids)}

    @cached_property
    def call_order(self) -> np.ndarray:
        """Positions in the rules engine's order: P1 first, then by value at risk."""
        ids = self.decisions["customer_id"].astype(str).tolist()
        return np.array([self.positions[customer_id] for customer_id in ids], dtype=np.int64)

    def positions_of(self, customer_ids: Sequence[str]) -> list[int]:
        """Positions of some learners (in the order given), by one vectorised lookup.

        Raises:
            KeyError: naming a learner the assessment does not hold.
        """
        asked = list(customer_ids)
        # the ask's own learners, in its order (the length first: the day's ids as a list of a
        # million strings cost ~0.2 s, for a call list of 20)
        if len(asked) == len(self) and asked == self._ids:
            return list(range(len(self._ids)))
        # codes_of hashes the few learners asked for, not the day's million ids (a table of
        # those cost ~0.2 s to build, for the batch's call list of 20): ``INVERTED_FROM``
        ids = one_array(pyarrow_lib.array(self.scores["customer_id"].astype(str)))
        positions = codes_of(pyarrow_lib.array(asked, type=ids.type), ids)
        for customer_id, position in zip(asked, positions.tolist(), strict=True):
            if position < 0:
                raise KeyError(f"learner {customer_id!r} was not assessed on {self.as_of}")
        return positions.tolist()

    def record(self, position: int) -> dict[str, Any]:
        """What lstep says of the learner at ``position`` (the API's ``LearnerScore`` fields)."""
        score = {"customer_id": self._ids[position], "as_of": self.as_of}
        score |= {name: values[position] for name, values in self._score_values.items()}
        decision = {name: values[position] for name, values in self._decided.items()}
        return learner_record(
            score,
            decision,
            self.reasons([position])[0],
            self.indicators(position),
            self.model_version,
        )

    def records(self, customer_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Records of ``customer_ids`` (all learners, in input order, for None)."""
        positions = range(len(self)) if customer_ids is None else self.positions_of(customer_ids)
        self.reasons(list(positions))  # one TreeSHAP call for all of them
        return [self.record(position) for position in positions]

    def reasons(self, positions: Sequence[int], *, num_threads: int = 0) -> list[list[Reason]]:
        """The top reason codes of the learners at ``positions``; computed once, then kept.

        Empty lists in rules-only mode. The learners not explained yet get one TreeSHAP call.
        """
        if self.model is None:
            return [[] for _ in positions]
        waiting = sorted({int(p) for p in positions if int(p) not in self._reasons})
        if waiting:
            self._explain(waiting, num_threads)
        return [self._reasons[int(position)] for position in positions]

    def indicators(self, position: int) -> list[dict[str, str]]:
        """The risk indicators on for the learner at ``position``, in catalog order."""
        return [
            {"feature": name, "text": label}
            for name, label in self._flags
            if is_on(self._columns[name][position])
        ]

    def reason_texts(self, position: int) -> tuple[str, ...]:
        """The "why" of a call-list line: the reason codes' texts, else the indicators that are on.

        Rules-only risk comes from the risk indicators, so naming those that are on is the honest
        "why" when there is no model to explain with.
        """
        if self.model is not None:
            return tuple(reason.text for reason in self.reasons([position])[0])
        on = [indicator["text"] for indicator in self.indicators(position)]
        return tuple(on[: self.top_reasons])

    def explanation(self, position: int) -> Explanation:
        """Every model feature's points for the learner at ``position`` (``lstep explain``).

        Raises:
            ValueError: in rules-only mode (there is no model to explain with).
        """
        if self.model is None:
            raise ValueError("rules-only mode: there is no model to explain with")
        return explain_frame(self.model, self.features.iloc[[position]])[0]

    def prepare_reasons(self) -> None:
        """Build the booster's input rows of every learner now, so that a reason costs one row."""
        if self.model is not None and self._model_values is None:
            self._model_values = np.ascontiguousarray(self.model.model_values(self.features))

    def keep_contributions(self, contributions: np.ndarray) -> None:
        """Word and keep every learner's reasons from TreeSHAP rows computed with the scores."""
        self._word(list(range(len(self))), contributions)

    def _explain(self, positions: list[int], num_threads: int) -> None:
        if self._model_values is not None:
            values = self._model_values[positions]
        else:
            values = self.model.model_values(self.features.iloc[positions])
        self._word(positions, self.model.raw_contributions(values, num_threads=num_threads))

    def _word(self, positions: list[int], contributions: np.ndarray) -> None:
        points, _, _ = points_of(contributions)
        names = self.model.feature_names
        for index, position in enumerate(positions):
            row = _Row(self._columns, position)
            self._reasons[position] = ranked_reasons(row, names, points[index], self.top_reasons)

    @cached_property
    def _scored(self) -> Columns:
        return Columns.of(self.scores)

    @cached_property
    def _ids(self) -> list[str]:
        return [str(customer_id) for customer_id in self._scored["customer_id"]]

    @cached_property
    def _score_values(self) -> dict[str, np.ndarray]:
        return {name: self._scored.to_numpy(name, np.float64) for name in PREDICTION_COLUMNS}

    @cached_property
    def _decided(self) -> dict[str, np.ndarray]:
        """The decision fields row for row with ``features`` (the engine sorts by priority)."""
        decisions = Columns.of(self.decisions)
        decided = [str(customer_id) for customer_id in decisions["customer_id"]]
        if decided == self._ids:  # already in input order (always so for one learner)
            return {name: decisions.to_numpy(name, object) for name in DECISION_FIELDS}
        aligned = self.decisions.set_index("customer_id").reindex(pd.Index(self._ids, dtype=object))
        return {name: aligned[name].to_numpy(object) for name in DECISION_FIELDS}

    @cached_property
    def _flags(self) -> tuple[tuple[str, str], ...]:
        return risk_flags(tuple(self._columns.names()))

    @cached_property
    def _columns(self) -> Columns:
        """The feature columns the reason texts quote, as arrays (a row costs no frame); each
        converted when first read: a reason quotes a few of some sixty columns."""
        return Columns.of(self.features)


class _Row(Mapping[str, Any]):
    """One learner's feature values (keys excluded), read from the columns only when asked."""

    def __init__(self, columns: Columns, position: int) -> None:
        self._columns, self._position = columns, position

    def __getitem__(self, name: str) -> Any:
        if name in KEY_COLUMNS or name not in self._columns:
            raise KeyError(name)
        return self._columns[name][self._position]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._columns if name not in KEY_COLUMNS)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True)
class AssessOptions:
    """How deep ``assess`` goes.

    Attributes:
        top_reasons: reason codes per learner.
        explain: compute every learner's reason codes with the scores, in one pass (a request
            of a few learners); otherwise they are computed when asked for.
        check_inputs: validate the frames the rules engine decides on (``rules.decide``). The
            online scorer turns it off: its features, scores and state are its own typed
            frames, and a pandera pass over one learner's frames costs more than the rest of
            the assessment; every other caller keeps the check.
        check_output: run the rules engine's self-check of its output (the batch does).
        whole_day: the features are every learner of the day, so the day's capacity for
            personal outreach is applied (the batch and the day's answers); an on-demand ask
            of a few learners is decided without it (``decide_learners``).
        explainer: with ``explain``, where TreeSHAP of a few learners (up to
            ``SMALL_BATCH_ROWS``) runs while the rules engine decides (the online scorer's
            thread: LightGBM releases the GIL, so a second core takes its ~2.4 ms per learner
            off the request's path); None: before deciding, on the caller's thread.
    """

    top_reasons: int = TOP_REASONS
    explain: bool = False
    check_inputs: bool = True
    check_output: bool = False
    whole_day: bool = False
    explainer: Executor | None = None


def _no_stage(_name: str) -> AbstractContextManager[None]:
    return nullcontext()


def assess(
    features: pd.DataFrame,
    *,
    champion: ModelHandle | None,
    ruleset: RuleSet,
    state: pd.DataFrame,
    as_of: date,
    options: AssessOptions = AssessOptions(),
    stage: Callable[[str], AbstractContextManager[None]] = _no_stage,
) -> Assessment:
    """Score, decide and (optionally now) explain the learners of one day.

    Args:
        features: one row per learner at ``as_of`` (``build_features`` output).
        champion: the loaded champion, or None for rules-only.
        ruleset: the loaded rules.
        state: the learners' stored state on ``as_of`` (``STATE_SCHEMA``).
        as_of: the decision day.
        options: reasons per learner, explain now, self-check the rules engine.
        stage: wraps the ``score`` and ``decide`` steps (the batch times them and shows
            progress; this module reads no clock). A large day with a model is scored in parts,
            each decided while the next is scored (``serving.core.parts``): the same frames.

    Raises:
        ValueError: features of another day, missing keys or repeated learners.
    """

    def decide(part: pd.DataFrame, scores: pd.DataFrame, state: pd.DataFrame) -> pd.DataFrame:
        return decide_learners(
            part, scores, ruleset, state, as_of, check_inputs=options.check_inputs,
            check_output=options.check_output, whole_day=options.whole_day,
        )  # fmt: skip

    contributions = None
    whole = options.explain or options.whole_day  # explained now, or cut to the day's capacity
    if champion is not None and not whole and in_parts(len(features)):
        check_keys(features)  # each part checks its own keys: a learner in two parts is not
        score = partial(score_features, champion=champion)
        order = ruleset.interventions.priority_order
        scores, decisions = scored_and_decided(features, state, score, decide, order, stage)
        return _assessment(as_of, features, scores, decisions, champion, options)
    with stage("score"):
        if champion is not None and options.explain and not features.empty:
            beside = options.explainer if len(features) <= SMALL_BATCH_ROWS else None
            scores, contributions = scores_and_contributions(features, champion, beside=beside)
        else:
            scores = score_features(features, champion)
    with stage("decide"):
        decisions = decide(features, scores, state)
    assessment = _assessment(as_of, features, scores, decisions, champion, options)
    if contributions is not None:
        assessment.keep_contributions(contributions())
    return assessment


def _assessment(
    as_of: date,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    decisions: pd.DataFrame,
    champion: ModelHandle | None,
    options: AssessOptions,
) -> Assessment:
    return Assessment(
        as_of=as_of,
        features=numbered(features),
        scores=scores,
        decisions=decisions,
        model=None if champion is None else champion.model,
        model_version=None if champion is None else champion.version,
        top_reasons=options.top_reasons,
    )


__all__ = [
    "DECISION_FIELDS",
    "SCORES_SCHEMA",
    "SCORE_COLUMNS",
    "TOP_REASONS",
    "AssessOptions",
    "Assessment",
    "ModelHandle",
    "assess",
    "decide_learners",
    "score_features",
]
