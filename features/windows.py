"""Point-in-time window features (DESIGN §4): the public API.

``as_of`` t is a day; it means the instant 00:00 UTC of that day, and features at t use only the
events with ``ts < t``. The project-wide representation of t is a naive ``datetime64[us]`` value
at midnight (UTC implied); python ``date``s are accepted everywhere and converted.

The SQL of the features is ``features.window_sql`` (the measures) and ``features.feature_sql``
(each feature over them); where it runs (a DuckDB connection or another
engine, and the temporary objects of one call) is ``features.workspace``. This module is what
callers use: the as_of and spine conventions, the feature dtypes, reading and writing feature
frames, and the entry points ``build_features``, ``eligible_spine``, ``feature_day`` (both of one
day on a single pass over the window) and ``event_type_firsts``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pandera.pandas as pa

from features.carry import aggregated_window, day_window
from features.catalog import FeatureCatalog, FeatureSpec, load_catalog
from features.feature_sql import FEATURE_SQL
from features.keys import keys_in_order, repeated_keys
from features.schemas import KEY_COLUMNS, feature_frame_schema
from features.window_sql import _ACTIVE_PAIRS_TABLE, RISK_COUNT
from features.workspace import DuckDBEngine, SqlEngine, TableInput, Workspace, workspace

logger = logging.getLogger(__name__)

_PANDAS_DTYPES = {"float": "float64", "bool": "bool", "category": "str"}


# --- schemas -------------------------------------------------------------------------------------


# Runs only while the module is imported (it builds module constants), before mutmut picks a
# mutant: no mutant of it could ever run, so none is made (make mutate, docs/mutation.md).
def as_of_column() -> pa.Column:  # pragma: no mutate block
    """The pandera column of an as_of: naive ``datetime64[us]`` at midnight, never null.

    pandera coerces naive datetimes to nanoseconds, so the unit is checked, not coerced.
    """
    return pa.Column(
        None,
        nullable=False,
        checks=[
            pa.Check(lambda s: s.dtype == "datetime64[us]", error="as_of must be datetime64[us]"),
            pa.Check(lambda s: s == s.dt.normalize(), error="as_of must be at midnight"),
        ],
    )


SPINE_SCHEMA = pa.DataFrameSchema(
    {"customer_id": pa.Column("str", nullable=False), "as_of": as_of_column()},
    strict=True,
    coerce=True,
    unique=list(KEY_COLUMNS),
)


# --- public helpers -------------------------------------------------------------------------------


def observation_dates(start: date, end: date, every_days: int) -> list[date]:
    """Dates ``start, start + every_days, ...`` up to and including ``end``.

    Raises:
        ValueError: when ``every_days`` < 1 or ``end`` is before ``start``.
    """
    if every_days < 1:
        raise ValueError(f"every_days must be at least 1, got {every_days}")
    if end < start:
        raise ValueError(f"observation window is empty: end {end} is before start {start}")
    count = (end - start).days // every_days + 1
    return [start + timedelta(days=i * every_days) for i in range(count)]


def as_of_series(values: Sequence[date] | pd.Series, *, source: str = "as_of") -> pd.Series:
    """Convert dates (or midnight datetimes/timestamps) to the as_of representation.

    The result is naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day; tz-aware
    values are converted to UTC first.

    Raises:
        ValueError: on nulls, unparseable values, or values that are not at midnight (naming
            how many and a few examples): as_of is a day, never silently rounded.
    """
    series = pd.Series(values, copy=False)
    if series.isna().any():
        raise ValueError(f"{source}: {int(series.isna().sum())} values are null")
    try:
        parsed = pd.to_datetime(series)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: values are not dates ({error})") from error
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    parsed = parsed.astype("datetime64[us]")
    off_midnight = parsed[parsed != parsed.dt.normalize()]
    if len(off_midnight):
        examples = ", ".join(str(v) for v in off_midnight.head(3))
        raise ValueError(
            f"{source}: {len(off_midnight)} values are not at midnight (e.g. {examples}); "
            "as_of is a day meaning 00:00 UTC"
        )
    return parsed


def normalize_spine(spine: pd.DataFrame, *, source: str = "spine") -> pd.DataFrame:
    """Return ``spine``'s (customer_id, as_of) pairs in the project representation, in order.

    Other columns (e.g. ``churned`` of a labels frame) are ignored.

    Raises:
        ValueError: on missing columns, null customer ids, bad as_of values or duplicate pairs.
    """
    missing = [column for column in KEY_COLUMNS if column not in spine.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; it has {list(spine.columns)}")
    null_ids = int(spine["customer_id"].isna().sum())
    if null_ids:
        raise ValueError(f"{source}: column customer_id: {null_ids} rows are null")
    pairs = pd.DataFrame(
        {
            # an array of the str dtype: to_numpy() of no rows is an object array, no longer str
            "customer_id": spine["customer_id"].astype("str").array,
            "as_of": as_of_series(spine["as_of"], source=f"{source}: column as_of").to_numpy(),
        }
    )
    duplicated = pairs[repeated_keys(pairs)]
    if len(duplicated):
        examples = duplicated.head(3).to_dict("records")
        raise ValueError(
            f"{source}: {len(duplicated)} rows repeat a (customer_id, as_of) pair, e.g. {examples}"
        )
    # Not re-validated by SPINE_SCHEMA: the checks above are its checks (two str/datetime64[us]
    # columns, no nulls, as_of at midnight by as_of_series, unique pairs); at 186k pairs the
    # schema redid them (a second duplicated() included) for ~0.06 s of CPU.
    return pairs


def feature_dtypes(catalog: FeatureCatalog | None = None) -> dict[str, str]:
    """The pandas dtype of every feature column, from the catalog.

    float -> float64 (null as NaN), bool -> bool, category -> str. An int feature is int64 when it
    works on any event stream (``needs: []``) and the nullable ``Int64`` when it needs event types
    that may be absent from the log (then it is <NA>, not a misleading 0).
    """
    catalog = catalog or load_catalog()
    return {spec.name: _pandas_dtype(spec) for spec in catalog.features}


def frame_dtypes(catalog: FeatureCatalog | None = None) -> dict[str, str]:
    """The pandas dtype of every column of a feature frame: its keys, then ``feature_dtypes``."""
    return {"customer_id": "str", "as_of": "datetime64[us]", **feature_dtypes(catalog)}


def write_features(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a feature frame to parquet (validated first) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    feature_frame_schema().validate(frame).to_parquet(target, index=False)
    return target


def read_features(path: str | Path) -> pd.DataFrame:
    """Read a feature frame written by ``write_features`` and validate it against the catalog."""
    return feature_frame_schema().validate(pd.read_parquet(path))


# --- entry points ---------------------------------------------------------------------------------


def eligible_spine(
    events: TableInput,
    customers: TableInput,
    as_of: Sequence[date],
    *,
    con: duckdb.DuckDBPyConnection | SqlEngine | None = None,
) -> pd.DataFrame:
    """The eligible (customer_id, as_of) pairs at each date (DESIGN §4), sorted by as_of, id.

    Eligible at t: enrolled before t, and an event in [t-30d, t) or enrolled less than 30 days
    before t (a cold-start learner).
    """
    dates = _as_of_dates(as_of)
    with workspace(con) as ws:
        ws.register_inputs(events, customers)
        ws.register_dates(dates)
        active = ws.create("TABLE", "active", _ACTIVE_PAIRS_TABLE, in_window=ws.in_window())
        return ws.eligible(active)


def build_features(
    events: TableInput,
    customers: TableInput,
    *,
    as_of: Sequence[date] | None = None,
    spine: pd.DataFrame | None = None,
    con: duckdb.DuckDBPyConnection | SqlEngine | None = None,
    type_firsts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Compute the catalog features at each as_of from the events strictly before it.

    Args:
        events: events frame or parquet path (DESIGN §3 columns), validated upstream.
        customers: customers frame or parquet path, validated upstream.
        as_of: dates; every learner eligible at each date gets a row (sorted by as_of, id).
        spine: exact (customer_id, as_of) pairs to compute, eligible or not, kept in the spine's
            order; other columns are ignored. Give exactly one of ``as_of`` and ``spine``.
        con: a DuckDB connection to use, by default a fresh one from ``connect()``, or another
            engine (``features.spark.SparkEngine``). Only temporary objects are created on it,
            and they are dropped before returning.
        type_firsts: the event types' availability of a larger log (``event_type_firsts``),
            used instead of that of ``events``: availability is a property of the whole event
            stream, so features of a few learners' own events (the service's inline events)
            take it from the stored log, as the batch job does.

    Returns:
        customer_id, as_of (naive datetime64[us] at midnight UTC), then the catalog features in
        catalog order with the dtypes of ``feature_dtypes()``, validated by
        ``features.schemas.feature_frame_schema``.

    Raises:
        ValueError: when not exactly one of as_of/spine is given, on a bad spine, when spine
            learners are missing from customers, or when catalog and SQL disagree.
    """
    if (as_of is None) == (spine is None):
        raise ValueError("build_features needs exactly one of as_of (dates) or spine (pairs)")
    catalog = load_catalog()
    check_catalog_coverage(catalog)
    pairs = normalize_spine(spine) if spine is not None else None
    if pairs is not None and pairs.empty:
        return _typed_features(_empty_frame(catalog), catalog)
    dates = _as_of_dates(as_of) if pairs is None else pd.Series(pairs["as_of"].unique())
    with workspace(con) as ws:
        ws.register_inputs(events, customers)
        ws.register_dates(dates, restrict_to=pairs)
        window = aggregated_window(ws)
        pairs = ws.eligible(window) if pairs is None else pairs
        if type_firsts is not None:
            ws.use_type_firsts(type_firsts)
        raw = ws.features(pairs, window, catalog) if len(pairs) else _empty_frame(catalog)
    return _typed_features(raw, catalog)


@dataclass(frozen=True)
class FeatureDay:
    """One as_of's window aggregated once, for its eligible learners and then its features.

    ``eligible_spine`` followed by ``build_features(spine=...)`` scans the window twice (its
    distinct pairs, then its aggregates); here the eligible pairs are read off the aggregates, as
    ``build_features(as_of=...)`` does. Made by ``feature_day``; valid inside its ``with``.
    """

    workspace: Workspace
    window: str
    day: pd.Timestamp
    window_made: str = ""
    """How the window was made when a carry directory was given (``features.carry``: "carried
    from D" or "aggregated: why"), else empty."""

    def eligible(self) -> pd.DataFrame:
        """``eligible_spine(events, customers, [day])``: the eligible pairs, sorted by id."""
        return self.workspace.eligible(self.window)

    def features(self, spine: pd.DataFrame) -> pd.DataFrame:
        """``build_features(events, customers, spine=spine)`` for a spine of this day only.

        Called once per ``FeatureDay``: its tables are named after the day's workspace.

        Raises:
            ValueError: on a bad spine, a spine pair of another day, or unknown learners.
        """
        catalog = load_catalog()
        check_catalog_coverage(catalog)
        pairs = normalize_spine(spine)
        if pairs.empty:
            return _typed_features(_empty_frame(catalog), catalog)
        other_days = pairs.loc[pairs["as_of"] != self.day, "as_of"]
        if len(other_days):
            raise ValueError(
                f"spine: {len(other_days)} rows are not at {self.day.date()}, "
                f"e.g. {other_days.iloc[0].date()}"
            )
        self.workspace.restrict_to(pairs, dates=1)
        return _typed_features(self.workspace.features(pairs, self.window, catalog), catalog)


@contextmanager
def feature_day(
    events: TableInput,
    customers: TableInput,
    as_of: date,
    *,
    con: duckdb.DuckDBPyConnection | SqlEngine | None = None,
    carry: Path | None = None,
) -> Iterator[FeatureDay]:
    """The batch day's learners and features on one pass over the window (``FeatureDay``).

    The same frames as ``eligible_spine`` and ``build_features(spine=...)``; the window's
    aggregates are computed for every learner with an event in it (the eligible ones), which is
    what a day's spine is made of.

    Args:
        carry: a directory where the day's window and history are kept for the next day, and
            the day before's are read from when they hold (``features.carry``: the same
            frames); None aggregates the window from the log. Used only for an events file
            on DuckDB.
    """
    dates = _as_of_dates([as_of])
    with workspace(con) as ws:
        ws.register_inputs(events, customers)
        ws.register_dates(dates)
        on_file = not isinstance(events, pd.DataFrame) and isinstance(ws.engine, DuckDBEngine)
        how = ""
        if carry is not None and on_file:
            window, how = day_window(ws, Path(events), Path(carry))
            logger.info("features of %s: the window %s", dates.iloc[0].date(), how)
        else:
            window = aggregated_window(ws)
        yield FeatureDay(ws, window, dates.iloc[0], how)


def event_type_firsts(
    events: TableInput, con: duckdb.DuckDBPyConnection | SqlEngine | None = None
) -> pd.DataFrame:
    """Per event type, its first timestamp in ``events`` and its first with a duration.

    Returns:
        event_type, first_ts, first_timed_ts (UTC; NaT when no event of the type has a
        duration), the input ``build_features(type_firsts=...)`` takes.
    """
    with workspace(con) as ws:
        ws.register_events(events)
        firsts = ws.con.execute(
            f"SELECT CAST(event_type AS VARCHAR) AS event_type, min(ts) AS first_ts, "
            f"min(ts) FILTER (duration_s IS NOT NULL) AS first_timed_ts "
            f"FROM {ws.events} GROUP BY 1 ORDER BY 1"
        ).df()
    for column in ("first_ts", "first_timed_ts"):
        firsts[column] = pd.to_datetime(firsts[column]).dt.tz_localize("UTC")
    return firsts.astype({"event_type": "str"})


def check_catalog_coverage(catalog: FeatureCatalog) -> None:
    """Fail loudly when the catalog and ``FEATURE_SQL`` list different features.

    Raises:
        ValueError: naming the features without SQL or the SQL without a catalog entry.
    """
    catalog_names = set(catalog.names) - {RISK_COUNT}
    without_sql = sorted(catalog_names - set(FEATURE_SQL))
    without_spec = sorted(set(FEATURE_SQL) - catalog_names)
    if without_sql or without_spec:
        raise ValueError(
            "features/catalog.yaml and features/feature_sql.py disagree: "
            f"catalog features without SQL {without_sql}; SQL features not in the catalog "
            f"{without_spec}"
        )


# --- internals ------------------------------------------------------------------------------------


def _pandas_dtype(spec: FeatureSpec) -> str:
    if spec.dtype == "int":
        return "Int64" if spec.needs else "int64"
    return _PANDAS_DTYPES[spec.dtype]


def _as_of_dates(as_of: Sequence[date] | None) -> pd.Series:
    """Distinct sorted as_of values; an empty list is an error, not an empty result."""
    if as_of is None or len(as_of) == 0:
        raise ValueError("as_of: give at least one date")
    return as_of_series(list(as_of)).drop_duplicates().sort_values(ignore_index=True)


def _typed_features(raw: pd.DataFrame, catalog: FeatureCatalog) -> pd.DataFrame:
    """The raw SQL result with the catalog dtypes, validated by the shared feature-frame schema."""
    dtypes = frame_dtypes(catalog)
    frame = raw[list(dtypes)].astype(dtypes).reset_index(drop=True)
    # In place: the frame is this function's own, and pandera's copy of its ~67 columns was a
    # quarter of the check (200k learners: 0.11-0.19 -> 0.08-0.09 s of CPU; the same frame).
    # Keys in order (a batch day's) are unique without pandera's ``duplicated`` (features.keys).
    schema = feature_frame_schema(catalog, unique_keys=not keys_in_order(frame))
    return schema.validate(frame, inplace=True)


def _empty_frame(catalog: FeatureCatalog) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=d) for name, d in frame_dtypes(catalog).items()})


__all__ = [
    "SPINE_SCHEMA",
    "FeatureDay",
    "as_of_column",
    "as_of_series",
    "build_features",
    "check_catalog_coverage",
    "eligible_spine",
    "event_type_firsts",
    "feature_day",
    "feature_dtypes",
    "frame_dtypes",
    "normalize_spine",
    "observation_dates",
    "read_features",
    "write_features",
]
