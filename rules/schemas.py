"""Pandera contracts of the engine's frames: ``scored`` and ``state`` in, decisions out.

The input schemas are ``strict="filter"``: the caller may pass the whole feature frame and the
whole state table, and the engine keeps the columns it reads (nothing it keeps is dropped or
altered beyond the documented coercion). Rule features are read as float64 (flags become 1.0/0.0,
nullable integers become NaN where null), except those the rules compare with strings.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

from rules.arrivals import ARRIVAL_FEATURE
from rules.campaigns import CHANNELS, Catalogue
from rules.codes import texts_repeat
from rules.columns import Columns
from rules.config import MODEL_SCORE_COLUMNS, RuleSet
from rules.interventions import RISK_INDICATOR_TOTAL

SIGNALS: tuple[str, ...] = ("fact", "rules", "model", "both")
HELD_REASONS: tuple[str, ...] = ("cooldown", "override")
DECISION_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "as_of",
    "from_tag",
    "to_tag",
    "changed",
    "rule_id",
    "description",
    "signal",
    "p_churn",
    "confidence",
    "priority",
    "action",
    "campaign_id",
    "channel",
    "control",
    "value_at_risk",
    "expected_months",
    "projected_value",
    "held",
    "behaviour_tags",
    "why",
)


class DecisionInputError(ValueError):
    """A ``scored`` or ``state`` frame the engine cannot decide on; says which column and rows."""


_BUILT: dict[int, tuple[weakref.ref[Any], dict[Hashable, Any]]] = {}
"""What was built per ruleset (or catalogue), by identity: they hold dicts, so are not hashable."""
DAYS_KEPT = 8
"""``state_schema`` days kept per ruleset: a service's current days, a backfill's recent ones."""


def built_once(ruleset: RuleSet | Catalogue, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` for ``ruleset`` and ``key``, built on first use and then kept.

    For what depends only on the ruleset (and ``key``): a schema costs ~1 ms to build, as much
    as validating a one-row frame, and the engine asks for the same few on every call (and
    for its lookup tables, ``rules.decisions``; the campaign catalogue's compiled triggers,
    ``rules.campaign_matching``, are kept per catalogue alike). The entry goes with the ruleset
    (weak reference), so a new ruleset reusing a dead one's ``id`` never sees the dead one's
    values. Values are shared: never modify one.
    """
    ident = id(ruleset)
    entry = _BUILT.get(ident)
    if entry is None or entry[0]() is not ruleset:
        entry = (weakref.ref(ruleset, lambda ref: _forget(ident, ref)), {})
        _BUILT[ident] = entry
    built = entry[1]
    value = built.get(key)
    if value is None:  # two threads may both build: the first one kept wins, both are equal
        value = built.setdefault(key, build())
    return value


def _forget(ident: int, ref: weakref.ref[Any]) -> None:
    entry = _BUILT.get(ident)
    if entry is not None and entry[0] is ref:
        _BUILT.pop(ident, None)


def unique_ids() -> pa.Check:
    """pandera's ``unique=True`` for a column of ids, as a check of the same name and failures.

    pandera asks pandas whether the column is unique, which hashes a million Arrow-backed ids
    (0.1-0.4 s of CPU, a fresh hash table each time) on every frame of a batch day that holds
    them: scores and decisions of each part, their checks at the store. Ids of one width are
    sorted as integers instead (``rules.codes.texts_repeat``, ~0.02 s); only when they repeat,
    or cannot be keyed, is every repeated row found (pandas' ``duplicated``, as pandera reports
    them: each row whose id another row holds too).
    """
    return pa.Check(_unique_rows, name="field_uniqueness")


def _unique_rows(ids: pd.Series) -> bool | pd.Series:
    if texts_repeat(ids.array) is False:
        return True
    return ~ids.duplicated(keep=False)


def _probability() -> pa.Column:
    """A score in [0, 1]; null (NaN) means there is no model score."""
    return pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True)


def scored_schema(
    ruleset: RuleSet, optional: Sequence[str] = (), *, filtered: bool = True
) -> pa.DataFrameSchema:
    """The columns ``decide`` reads from ``scored``: keys, scores and every feature a rule uses.

    ``optional`` columns (the risk indicators and evidence a ``why`` quotes) are kept, as
    floats, where present. Built once per (ruleset, optional, filtered) and shared: do not
    modify it.

    Args:
        ruleset: the rules whose features are read.
        optional: the columns kept where present.
        filtered: drop the columns the schema does not name (``strict="filter"``); False keeps
            them, with the same checks, for a frame holding only the schema's columns already
            (one validated in place: pandera refuses to filter in place).
    """
    optional = tuple(optional)
    return built_once(
        ruleset,
        ("scored", optional, filtered),
        lambda: _scored_schema(ruleset, optional, filtered),
    )


def _scored_schema(
    ruleset: RuleSet, optional: tuple[str, ...], filtered: bool
) -> pa.DataFrameSchema:
    columns = {
        "customer_id": pa.Column(str, unique_ids()),
        "product_tag": pa.Column(str, pa.Check.isin(ruleset.interventions.product_tags)),
        "mrr": pa.Column(float, pa.Check.ge(0.0), nullable=True),
        "p_churn": _probability(),
        "confidence": _probability(),
        "risk_indicator_count": pa.Column(
            float, pa.Check.in_range(0.0, float(RISK_INDICATOR_TOTAL)), nullable=True
        ),
    }
    strings = set(ruleset.string_features)
    for feature in ruleset.features_used:
        if feature in columns:
            continue
        if feature in MODEL_SCORE_COLUMNS:
            columns[feature] = _probability()
        else:
            columns[feature] = pa.Column(str if feature in strings else float, nullable=True)
    # Behaviour tags read their features where present: a missing one is null, so not held.
    # The campaigns read the learner's tenure where present (``rules.arrivals``).
    arrivals = [ARRIVAL_FEATURE] if ruleset.campaigns.arrival_days is not None else []
    for name in [*optional, *ruleset.behaviour_features, *arrivals]:
        columns.setdefault(name, pa.Column(float, nullable=True, required=False))
    strict = "filter" if filtered else False
    return pa.DataFrameSchema(columns, strict=strict, coerce=True, name="scored")


def state_schema(ruleset: RuleSet, as_of: pd.Timestamp) -> pa.DataFrameSchema:
    """The current tag of every known learner; ``since`` may not be after ``as_of``.

    Built once per (ruleset, as_of) and shared, for the last ``DAYS_KEPT`` days asked for.
    """
    days = built_once(ruleset, "state", dict)
    schema = days.get(as_of)
    if schema is None:
        schema = _state_schema(ruleset, as_of)
        while len(days) >= DAYS_KEPT:  # drop the day asked for first (dicts keep that order)
            days.pop(next(iter(days), None), None)
        days[as_of] = schema
    return schema


def _state_schema(ruleset: RuleSet, as_of: pd.Timestamp) -> pa.DataFrameSchema:
    tags = ruleset.tag_ids
    return pa.DataFrameSchema(
        {
            "customer_id": pa.Column(str, unique_ids()),
            "tag": pa.Column(str, pa.Check.isin(tags)),
            "since": pa.Column(
                pa.DateTime,
                pa.Check.le(as_of, error=f"since must not be after as_of {as_of.date()}"),
            ),
            "override_tag": pa.Column(str, pa.Check.isin(tags), nullable=True),
            "override_expires": pa.Column(pa.DateTime, nullable=True),
            "override_kind": pa.Column(
                str, pa.Check.isin(["hold", "campaign"]), nullable=True, required=False
            ),
        },
        strict="filter",
        coerce=True,
        name="state",
    )


def decision_schema(ruleset: RuleSet) -> pa.DataFrameSchema:
    """One row per decided learner; :func:`rules.engine.decide` documents each column.

    Built once per ruleset and shared: do not modify it.
    """
    return built_once(ruleset, "decisions", lambda: _decision_schema(ruleset))


def _decision_schema(ruleset: RuleSet) -> pa.DataFrameSchema:
    rule_ids = [rule.id for rule in ruleset.rules]
    tag = pa.Column(pa.Category, pa.Check.isin(ruleset.tag_ids), nullable=True)
    columns = {
        # Not re-checked for uniqueness: ids are unique in scored and decisions map rows 1:1.
        "customer_id": pa.Column(str),
        "as_of": pa.Column(pa.DateTime),
        "from_tag": tag,
        "to_tag": tag,
        "changed": pa.Column(bool),
        "rule_id": pa.Column(pa.Category, pa.Check.isin(rule_ids), nullable=True),
        "description": pa.Column(pa.Category),
        "signal": pa.Column(pa.Category, pa.Check.isin(SIGNALS), nullable=True),
        "p_churn": _probability(),
        "confidence": _probability(),
        "priority": pa.Column(
            pa.Category, pa.Check.isin(ruleset.interventions.priority_order), nullable=True
        ),
        "action": pa.Column(pa.Category, nullable=True),
        # The first campaign whose trigger matches (rules.campaigns), and its first step's channel.
        "campaign_id": pa.Column(pa.Category, pa.Check.isin(ruleset.campaigns.ids), nullable=True),
        "channel": pa.Column(pa.Category, pa.Check.isin(CHANNELS), nullable=True),
        "control": pa.Column(bool),
        "value_at_risk": pa.Column(float, pa.Check.ge(0.0), nullable=True),
        # The lifetime projection (rules.lifetime): months in [1, cap], value mrr x months.
        "expected_months": pa.Column(float, pa.Check.ge(1.0), nullable=True),
        "projected_value": pa.Column(float, pa.Check.ge(0.0), nullable=True),
        "held": pa.Column(pa.Category, pa.Check.isin(HELD_REASONS), nullable=True),
        # The behaviour tags held: sorted ids joined by ",", "" for none.
        "behaviour_tags": pa.Column(str),
        # The true leaves of the rule that moved or held the learner, in words; else null.
        "why": pa.Column(str, nullable=True),
    }
    return pa.DataFrameSchema(columns, strict=True, ordered=True, name="decisions")


def validate_frame(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, *, inplace: bool = False
) -> pd.DataFrame:
    """Validate ``frame``; on failure raise one error listing every failing column and check.

    Args:
        schema: the contract.
        frame: the frame to check.
        inplace: check and coerce ``frame`` itself rather than a copy of it: for a frame the
            engine built for this check, which nobody else holds (pandera's copy of the day's
            scored frame was a tenth of a batch decide). Every check runs either way. Not with
            a ``strict="filter"`` schema: pandera no longer filters in place.

    Raises:
        DecisionInputError: e.g. "scored: column 'p_churn' fails in_range(0.0, 1.0) on 2 rows
            (e.g. 1.5, -0.1)".
        ValueError: ``inplace`` with a filtering schema.
    """
    if inplace and schema.strict == "filter":
        raise ValueError(f"{schema.name}: a filtering schema cannot validate in place")
    try:
        return schema.validate(frame, lazy=True, inplace=inplace)
    except pa.errors.SchemaErrors as error:
        raise DecisionInputError(_describe_failures(schema.name, error.failure_cases)) from None


def conform(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the schema's dtypes, without its checks (``conformed_columns`` as a frame).

    Raises:
        DecisionInputError: a required column is missing.
    """
    return conformed_columns(schema, frame).frame(index=frame.index)


def conformed_columns(schema: pa.DataFrameSchema, frame: pd.DataFrame | Columns) -> Columns:
    """``frame``'s columns with the schema's dtypes, without its checks (a trusted caller's frame).

    Each column whose dtype the schema would coerce is coerced as validation would: float64
    columns (counts, nullable counts, flags) by one numpy conversion each, the rest by the
    schema's own ``coerce``. Columns are not filtered (the engine reads by name) and no check
    runs: a frame that breaks the contract gives undefined decisions, so only frames the caller
    built with these dtypes and values (``serving.core``'s online path) should come here. The
    columns are taken out of the frame once (``rules.columns``): no frame is copied or set.

    Raises:
        DecisionInputError: a required column is missing.
    """
    columns = frame if isinstance(frame, Columns) else Columns.of(frame)
    changed: dict[str, Any] = {}
    for name, column in schema.columns.items():
        if name not in columns:
            if column.required:
                raise DecisionInputError(f"{schema.name}: missing column(s) [{name!r}]")
            continue
        array = columns.array(name)
        if _fits(column.dtype, array.dtype):
            continue
        if column.dtype.type == np.float64:
            changed[name] = (
                array.astype(np.float64)
                if isinstance(array, np.ndarray)
                else array.to_numpy(np.float64, na_value=np.nan)
            )
        else:
            changed[name] = column.dtype.coerce(pd.Series(array, name=name)).array
    return columns.with_values(changed) if changed else columns


@functools.lru_cache(maxsize=1024)
def _fits(target: pandas_engine.DataType, dtype: Any) -> bool:
    """A column of ``dtype`` needs no coercion to ``target`` (pandera's own dtype check)."""
    return bool(target.check(pandas_engine.Engine.dtype(dtype)))


def _describe_failures(frame_name: str, failures: pd.DataFrame) -> str:
    """Summarise pandera's failures: one clause per (column, check), with counts and examples."""
    clauses = []
    missing = failures.loc[failures["check"] == "column_in_dataframe", "failure_case"]
    if len(missing):
        clauses.append(f"missing column(s) {sorted(str(name) for name in missing)}")
    failures = failures[failures["check"] != "column_in_dataframe"]
    for (column, check), group in failures.groupby(["column", "check"], sort=True, dropna=False):
        examples = ", ".join(str(value) for value in group["failure_case"].drop_duplicates()[:5])
        clauses.append(f"column {column!r} fails {check} on {len(group)} rows (e.g. {examples})")
    return f"{frame_name}: " + "; ".join(clauses)
