"""Data contracts (DESIGN §3) as pandera schemas: events, customers, labels and the feature frame.

Conventions every schema here shares:

- **Time.** Instants are ``datetime64[us, UTC]`` (microseconds: what the simulator writes, what
  pandas 3 parses text into, and a range far wider than nanoseconds). Naive timestamps are read as
  UTC; tz-aware ones are converted to UTC. ``as_of`` (labels, feature frame) is different on
  purpose: a naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day (the project-wide
  convention).
- **Strict and coercing, losslessly.** Unknown columns fail. Every column is coerced to its
  contract dtype, except where a coercion could change a value: integer columns accept only
  integral numbers (``0.5`` is not truncated to 0) and booleans are never produced from text
  (``"no"`` is not ``True``). Those columns are converted by a lossless parser instead and fail
  with a dtype error when that is impossible.
- **Optional columns.** Nullable columns of the input contracts (``duration_s``, ``channel``,
  ``item``, ``mrr``) may be absent from a file: the loader in ``features.validation`` adds them as
  all-null columns and says so. The schemas themselves always require every column.

The column contracts (``EVENT_CONTRACT``, ``CUSTOMER_CONTRACT``) are the single description of the
input files; ``features.validation`` derives its friendly checks from the same tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.catalog import FeatureCatalog, FeatureSpec, load_catalog
from features.keys import KEY_COLUMNS
from features.layout import CUSTOMERS_FILE, EVENTS_FILE
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, OTHER_EVENT_TYPE, PRODUCT_TAGS

UTC_INSTANT = pd.DatetimeTZDtype(unit="us", tz="UTC")
"""dtype of every instant column (``ts``, ``enrolled_at``)."""
AS_OF_DTYPE = np.dtype("datetime64[us]")
"""dtype of ``as_of``: naive, at midnight, meaning 00:00 UTC of that day."""
EARLIEST_INSTANT = pd.Timestamp("2000-01-01", tz="UTC")
"""No course log starts before this: an earlier ts or enrolled_at is a typo (0001-01-01) or an
epoch zero, and is refused by the contracts rather than read as 25 years of inactivity."""

ColumnKind = Literal["text", "timestamp", "number"]


@dataclass(frozen=True)
class ColumnContract:
    """One column of an input contract.

    Attributes:
        name: column name in the contract.
        kind: ``text`` (str), ``timestamp`` (UTC instant) or ``number`` (float64).
        nullable: whether nulls are allowed; nullable columns may also be absent from a file.
        allowed: the only values allowed (nulls aside), or None for any value.
        non_negative: numbers must be >= 0.
        unique: values must not repeat.
    """

    name: str
    kind: ColumnKind
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    non_negative: bool = False
    unique: bool = False


EVENT_CONTRACT: tuple[ColumnContract, ...] = (
    ColumnContract("customer_id", "text"),
    ColumnContract("ts", "timestamp"),
    # The vocabulary of event_type depends on the mapping and --allow-unknown, so the loader checks
    # it separately; events_schema() adds the isin check.
    ColumnContract("event_type", "text"),
    ColumnContract("duration_s", "number", nullable=True, non_negative=True),
    ColumnContract("channel", "text", nullable=True, allowed=CHANNELS),
    ColumnContract("item", "text", nullable=True),
)
CUSTOMER_CONTRACT: tuple[ColumnContract, ...] = (
    ColumnContract("customer_id", "text", unique=True),
    ColumnContract("product_tag", "text", allowed=tuple(PRODUCT_TAGS)),
    ColumnContract("enrolled_at", "timestamp"),
    ColumnContract("mrr", "number", nullable=True, non_negative=True),
)
EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENT_CONTRACT)
CUSTOMER_COLUMNS: tuple[str, ...] = tuple(c.name for c in CUSTOMER_CONTRACT)


# --- lossless parsers and reusable checks ---------------------------------------------------------


def _to_as_of(values: pd.Series) -> pd.Series:
    """Bring dates/datetimes to naive ``datetime64[us]``; leave anything else for the dtype check.

    Pandera ignores the unit of naive datetimes when coercing, hence this parser.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values  # an instant is not a day: let the dtype check reject it
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.astype(AS_OF_DTYPE)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        try:
            converted = pd.to_datetime(values, errors="coerce", format="ISO8601")
        except (ValueError, TypeError):  # e.g. mixed time zones: not a column of days
            return values
        if converted.notna().sum() == values.notna().sum() and converted.dt.tz is None:
            return converted.astype(AS_OF_DTYPE)
    return values


def _lossless_integers(target: str) -> Callable[[pd.Series], pd.Series]:
    """A parser converting to ``target`` only when no value changes (no rounding, no overflow)."""
    info = np.iinfo(target.lower())
    nullable_target = target[0].isupper()

    def convert(values: pd.Series) -> pd.Series:
        if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
            return values.astype(target)
        if not (pd.api.types.is_integer_dtype(values.dtype) or values.dtype.kind == "f"):
            return values
        present = values.dropna()
        has_nulls = len(present) < len(values)
        integral = bool((present == np.trunc(present)).all()) if values.dtype.kind == "f" else True
        in_range = present.empty or (present.min() >= info.min and present.max() <= info.max)
        if integral and in_range and (nullable_target or not has_nulls):
            return values.astype(target)
        return values

    return convert


def _boolean_without_nulls(values: pd.Series) -> pd.Series:
    """Turn a nullable ``boolean`` column without nulls into numpy ``bool``; nothing else."""
    if isinstance(values.dtype, pd.BooleanDtype) and not values.isna().any():
        return values.astype(bool)
    return values


def _finite() -> pa.Check:
    return pa.Check(lambda s: ~np.isinf(s), ignore_na=True, name="finite", error="is infinite")


def _non_empty() -> pa.Check:
    return pa.Check.str_length(min_value=1, error="is an empty string")


def _at_midnight() -> pa.Check:
    return pa.Check(lambda s: s == s.dt.normalize(), name="at_midnight", error="is not at 00:00")


# --- the input contracts -------------------------------------------------------------------------


def contract_column(contract: ColumnContract, extra_checks: Sequence[pa.Check] = ()) -> pa.Column:
    """The pandera column of one input-contract column (coercing), plus ``extra_checks``."""
    checks: list[pa.Check] = list(extra_checks)
    if contract.kind == "text":
        dtype: object = str
        if contract.name == "customer_id":
            checks.append(_non_empty())
    elif contract.kind == "timestamp":
        dtype = UTC_INSTANT
    else:
        dtype = np.float64
        checks.append(_finite())
    if contract.allowed is not None:
        checks.append(pa.Check.isin(contract.allowed))
    if contract.non_negative:
        checks.append(pa.Check.ge(0))
    return pa.Column(dtype, checks, nullable=contract.nullable, unique=contract.unique, coerce=True)


def _contract_schema(
    name: str, contract: tuple[ColumnContract, ...], extra_checks: dict[str, list[pa.Check]]
) -> pa.DataFrameSchema:
    columns = {c.name: contract_column(c, extra_checks.get(c.name, ())) for c in contract}
    return pa.DataFrameSchema(columns, name=name, strict=True, coerce=True)


def events_schema(*, allow_other: bool = True) -> pa.DataFrameSchema:
    """The events contract.

    Args:
        allow_other: accept ``event_type == "other"`` (where ``allow_unknown`` puts unmapped types).
            ``EventsSchema`` allows it; pass False for a stream that must be purely canonical.
    """
    vocabulary = CANONICAL_EVENT_TYPES + ((OTHER_EVENT_TYPE,) if allow_other else ())
    return _contract_schema("events", EVENT_CONTRACT, {"event_type": [pa.Check.isin(vocabulary)]})


def customers_schema() -> pa.DataFrameSchema:
    """The customers contract: unique ids, known product tags, UTC enrolment, mrr >= 0 or null."""
    return _contract_schema("customers", CUSTOMER_CONTRACT, {})


def labels_schema() -> pa.DataFrameSchema:
    """Bring-your-own labels: ``customer_id``, ``as_of`` (naive midnight), ``churned`` int8 0/1."""
    columns = {
        "customer_id": pa.Column(str, _non_empty(), coerce=True),
        "as_of": pa.Column(AS_OF_DTYPE, _at_midnight(), parsers=pa.Parser(_to_as_of)),
        "churned": pa.Column(
            np.int8, pa.Check.isin([0, 1]), parsers=pa.Parser(_lossless_integers("int8"))
        ),
    }
    return pa.DataFrameSchema(
        columns, name="labels", strict=True, unique=list(KEY_COLUMNS), report_duplicates="all"
    )


EventsSchema: pa.DataFrameSchema = events_schema()
"""Events: customer_id, ts, event_type (canonical or "other"), duration_s, channel, item."""
CustomersSchema: pa.DataFrameSchema = customers_schema()
"""Customers: customer_id (unique), product_tag, enrolled_at, mrr."""
LabelsSchema: pa.DataFrameSchema = labels_schema()
"""Labels: customer_id, as_of, churned; unique on (customer_id, as_of)."""


# --- the feature frame ---------------------------------------------------------------------------


def feature_column(spec: FeatureSpec) -> pa.Column:
    """The pandera column of one catalog feature.

    ``float`` -> float64, nullable, finite; ``int`` (counts, >= 0) -> int64, or nullable ``Int64``
    when the feature ``needs`` event types (the catalog makes it null when none of them was ever
    seen); ``bool`` ->
    bool, never null (absent signals are False); ``category`` (product_tag) -> str in PRODUCT_TAGS,
    nullable.
    """
    if spec.dtype == "float":
        return pa.Column(np.float64, _finite(), nullable=True, coerce=True)
    if spec.dtype == "int":
        target = "Int64" if spec.needs else "int64"
        return pa.Column(
            target,
            pa.Check.ge(0),
            nullable=bool(spec.needs),
            parsers=pa.Parser(_lossless_integers(target)),
        )
    if spec.dtype == "bool":
        return pa.Column(bool, parsers=pa.Parser(_boolean_without_nulls))
    # Nullable: a spine may hold a learner the customers table does not know.
    return pa.Column(str, pa.Check.isin(tuple(PRODUCT_TAGS)), nullable=True, coerce=True)


def feature_frame_schema(
    catalog: FeatureCatalog | None = None, *, unique_keys: bool = True
) -> pa.DataFrameSchema:
    """The feature frame built from the catalog: keys, then every catalog feature in catalog order.

    Args:
        catalog: the catalog to build from; the packaged ``features/catalog.yaml`` by default.
        unique_keys: check that no (customer_id, as_of) pair repeats; False for a frame whose
            keys the caller showed unique (``features.keys.keys_in_order``).

    Returns:
        A strict, ordered schema, unique on (customer_id, as_of); see ``feature_column`` for dtypes.
    """
    catalog = catalog or load_catalog()
    columns = {
        "customer_id": pa.Column(str, _non_empty(), coerce=True),
        "as_of": pa.Column(AS_OF_DTYPE, _at_midnight(), parsers=pa.Parser(_to_as_of)),
    }
    for spec in catalog.features:
        columns[spec.name] = feature_column(spec)
    return pa.DataFrameSchema(
        columns,
        name="feature frame",
        strict=True,
        ordered=True,
        unique=list(KEY_COLUMNS) if unique_keys else None,
        report_duplicates="all",
    )


__all__ = [
    "AS_OF_DTYPE",
    "CUSTOMERS_FILE",
    "CUSTOMER_COLUMNS",
    "CUSTOMER_CONTRACT",
    "EARLIEST_INSTANT",
    "EVENTS_FILE",
    "EVENT_COLUMNS",
    "EVENT_CONTRACT",
    "KEY_COLUMNS",
    "UTC_INSTANT",
    "ColumnContract",
    "CustomersSchema",
    "EventsSchema",
    "LabelsSchema",
    "contract_column",
    "customers_schema",
    "events_schema",
    "feature_column",
    "feature_frame_schema",
    "labels_schema",
]
