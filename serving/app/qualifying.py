"""When a learner first met the condition of a move: runs of qualifying data days before it.

The batch keeps, for every learner and batch day, what it decided on: the day's feature snapshot
(``serving.infra.snapshots``) and the day's stored scores (``p_churn``, ``confidence``, ...).
Evaluating the conditions of the rules into a tag (``rule.to``) from the learner's tag
(``rule.sources``) on those inputs says on which days the learner qualified for the move, whether
or not a cooldown or an override held it that day. The KPIs measure from the first day of the
uninterrupted run of qualifying days that ends at the move.

Everything is in data days (``as_of``); nothing here reads a clock, a file or a database. The
rules are taken from the ``RuleSet`` object (``rule.to`` and ``rule.sources``), never by rule id,
so a rule added into a tag (say from ST_005 to ST_004) is picked up without a change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from rules import MODEL_SCORE_COLUMNS, RuleSet
from rules.conditions import evaluate, iter_leaves
from rules.config import NEW, STATE_COLUMNS, Rule
from serving.core.frames import distinct_sorted
from serving.core.tags import RISK_TAG

DAY = timedelta(days=1)
MEASURED = "measured"
BEFORE_HISTORY = "before history"
"""The run reaches a day with no stored inputs: its real first day is unknown."""
NO_INPUTS = "no inputs"
"""The move's own day has no stored inputs (no snapshot): nothing to measure from."""
NOT_QUALIFYING = "not qualifying"
"""The move's day does not meet today's rules (the rules changed since the move)."""


@dataclass(frozen=True)
class DecisionDays:
    """What the batch decided on, day by day.

    Attributes:
        ruleset: the rules whose conditions are evaluated.
        inputs: one row per learner and stored batch day: ``customer_id``, ``as_of`` (naive
            midnight) and the columns the rules read (features and model scores).
        missing: batch days whose feature snapshot is missing (their learners have no inputs).
        loaded: the days whose inputs were loaded (None: the days present in ``inputs``). A
            loader that keeps only some learners says which days it read, so that a day is not
            taken for a gap because none of those learners was scored on it.
        runs: ``qualifying_runs`` by target when a loader found them without keeping the inputs
            (``serving.app.decision_runs.run_ledger``: the rows of the measured moves' days
            only); None: found from ``inputs``.
    """

    ruleset: RuleSet
    inputs: pd.DataFrame
    missing: tuple[date, ...] = field(default=())
    loaded: tuple[date, ...] | None = None
    runs: dict[str, pd.DataFrame] | None = field(default=None, compare=False, repr=False)

    @property
    def days(self) -> frozenset[pd.Timestamp]:
        """The days with stored inputs."""
        days = self.inputs["as_of"].unique() if self.loaded is None else list(self.loaded)
        return frozenset(pd.to_datetime(days))


MEASURED_TARGETS = ("ST_002", RISK_TAG)
"""The tags whose automatic moves the run-based KPIs measure (progression velocity into ST_002,
detection speed into ST_004)."""
RUN_KEYS = ["customer_id", "from_tag", "as_of"]
"""The order of the qualifying days: a learner's runs from one tag, day after day."""

_EMPTY_QUALIFYING = pd.DataFrame(
    {
        "customer_id": pd.Series(dtype=str),
        "as_of": pd.Series(dtype="datetime64[us]"),
        "from_tag": pd.Series(dtype=str),
    }
)


def qualifying_days(decisions: DecisionDays, target: str) -> pd.DataFrame:
    """Every (learner, day, source tag) on which a rule from that tag into ``target`` held.

    Returns:
        ``customer_id``, ``as_of``, ``from_tag`` (``rules.config.NEW`` for a learner not yet in
        the store), one row per qualifying combination, sorted by ``RUN_KEYS``.
    """
    inputs = decisions.inputs
    frames = [
        inputs.loc[held, ["customer_id", "as_of"]].assign(from_tag=source)
        for (_, source), held in held_from(inputs, decisions.ruleset, [target]).items()
    ]
    # Typed like the frames it is concatenated with: an untyped (object) empty frame would make
    # pandas box every as_of into an object Timestamp (~1 s for a 60-day demo's kpis).
    found = pd.concat([_EMPTY_QUALIFYING, *frames], ignore_index=True)
    found = found.astype({"customer_id": str, "from_tag": str, "as_of": "datetime64[us]"})
    return distinct_sorted(found, RUN_KEYS).reset_index(drop=True)


def held_from(
    inputs: pd.DataFrame, ruleset: RuleSet, targets: Sequence[str]
) -> dict[tuple[str, str], np.ndarray]:
    """Per (target, source tag): whether a rule from that tag into that target holds on each row
    of ``inputs`` (a boolean per row; rules that read a state column are left out, the state
    columns, ``campaign_active``, not being among the stored inputs)."""
    columns = _rule_columns(inputs, ruleset)
    held: dict[tuple[str, str], np.ndarray] = {}
    for rule in ruleset.rules:
        if rule.to not in targets or reads_state(rule):
            continue
        fired = np.asarray(
            evaluate(rule.condition, columns, MODEL_SCORE_COLUMNS, len(inputs)).fired, dtype=bool
        )
        for source in rule.sources:
            held[rule.to, source] = held.get((rule.to, source), False) | fired
    return held


def reads_state(rule: Rule) -> bool:
    """Whether a rule's condition reads a state column (``rules.config.STATE_COLUMNS``)."""
    return any(leaf.feature in STATE_COLUMNS for _, leaf in iter_leaves(rule.condition))


def _rule_columns(inputs: pd.DataFrame, ruleset: RuleSet) -> dict[str, pd.Series]:
    """The columns the conditions read, typed as the engine reads them (numbers as floats).

    A column the stored inputs lack (a feature added after the snapshot was written) is all
    null, so conditions on it do not hold, as they would not for a null value.
    """
    strings = set(ruleset.string_features)
    columns = {}
    for name in ruleset.features_used:
        if name not in inputs:
            columns[name] = pd.Series(np.nan, index=inputs.index)
        elif name in strings:
            columns[name] = inputs[name].astype(object)
        else:
            columns[name] = pd.Series(
                inputs[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan),
                index=inputs.index,
            )
    return columns


def qualifying_runs(decisions: DecisionDays, target: str) -> pd.DataFrame:
    """Each qualifying day into ``target`` with its run's first day (``run_start``).

    It depends on the stored inputs only, not on the day the KPIs describe: a caller measuring
    many days finds it once and passes it to ``run_starts``.
    """
    if decisions.runs is not None:
        return decisions.runs[target]
    return _runs(qualifying_days(decisions, target))


def run_starts(
    moves: pd.DataFrame, decisions: DecisionDays, target: str, runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The first day of the run of qualifying days that ends at each move into ``target``.

    The run counts back from the move's day over consecutive days on which the learner met the
    condition of a rule from the move's ``from_tag`` into ``target``, and never before the day
    after the learner entered that tag (``entered``; before it they were in another tag).

    Args:
        moves: one row per move: ``customer_id``, ``as_of`` (the move's day), ``from_tag`` (null
            for a learner first seen that day) and ``entered`` (the day they entered
            ``from_tag``; NaT for a new learner).
        decisions: the stored inputs of the batch days.
        target: the tag moved into.
        runs: ``qualifying_runs(decisions, target)`` when already found.

    Returns:
        ``moves`` with ``first_day`` (NaT unless measured) and ``status``: ``MEASURED``,
        ``BEFORE_HISTORY`` (the run reaches a day without stored inputs, so it may have begun
        earlier), ``NO_INPUTS`` (the move's day has none) or ``NOT_QUALIFYING`` (today's rules
        do not hold on the move's day).
    """
    if runs is None:
        runs = qualifying_runs(decisions, target)
    keyed = moves.assign(
        as_of=pd.to_datetime(moves["as_of"]).astype("datetime64[us]"),
        from_tag=moves["from_tag"].astype(object).where(moves["from_tag"].notna(), NEW),
    )
    found = keyed.merge(runs, on=["customer_id", "as_of", "from_tag"], how="left")
    entered = pd.to_datetime(found["entered"]).astype("datetime64[us]")
    bound = entered + DAY  # the first day spent in from_tag before its decision
    first = found["run_start"].where(entered.isna() | (found["run_start"] > bound), bound)
    before = first - DAY
    stored = decisions.days
    unknown_start = ~before.isin(stored) & (entered.isna() | (first > bound))
    status = np.select(
        [
            ~found["as_of"].isin(stored),
            found["run_start"].isna(),
            unknown_start,
        ],
        [NO_INPUTS, NOT_QUALIFYING, BEFORE_HISTORY],
        default=MEASURED,
    )
    result = moves.reset_index(drop=True).assign(status=status)
    return result.assign(first_day=first.where(result["status"] == MEASURED).to_numpy())


def _runs(ordered: pd.DataFrame) -> pd.DataFrame:
    """Each qualifying day with ``run_start``: the first day of its run of consecutive days
    (``ordered``: ``qualifying_days``', distinct and sorted by ``RUN_KEYS``)."""
    same = (ordered["customer_id"] == ordered["customer_id"].shift()) & (
        ordered["from_tag"] == ordered["from_tag"].shift()
    )
    consecutive = same & (ordered["as_of"] - ordered["as_of"].shift() == pd.Timedelta(DAY))
    run = (~consecutive).cumsum()
    return ordered.assign(run_start=ordered.groupby(run)["as_of"].transform("min"))


__all__ = [
    "BEFORE_HISTORY",
    "MEASURED",
    "MEASURED_TARGETS",
    "NOT_QUALIFYING",
    "NO_INPUTS",
    "DecisionDays",
    "held_from",
    "qualifying_days",
    "qualifying_runs",
    "reads_state",
    "run_starts",
]
