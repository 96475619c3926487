"""The window features on Spark SQL: the DuckDB SQL of ``features.window_sql``, transpiled.

One feature definition, two engines (issue 14): every statement ``features.workspace.Workspace``
runs is written in DuckDB's dialect and, on Spark, transpiled by SQLGlot (``read="duckdb",
write="spark"``) with one transform of our own (``make_timestamp(epoch_us(x))`` -> ``x``, see
``_drop_epoch_us``). A ``SparkEngine`` plays the DuckDB connection for the workspace, so
``build_features`` and ``eligible_spine`` take it as their ``con``; ``spark_features`` returns the
features as a Spark DataFrame without collecting them to the driver.

The Spark session time zone must be UTC: an as_of is midnight UTC and the SQL truncates
timestamps to days in the session zone, so another zone moves events across days and drops rows
without an error. ``spark_session`` sets it and ``SparkEngine`` refuses a session without it.

pyspark and sqlglot are the optional ``spark`` extra: they are imported inside the functions, so
importing this module costs nothing without them.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.catalog import load_catalog
from features.machine import usable_cores
from features.window_sql import _ACTIVE_PAIRS_TABLE, _ELIGIBLE, _WINDOW_TABLE
from features.windows import (
    _as_of_dates,
    as_of_series,
    check_catalog_coverage,
    feature_dtypes,
    normalize_spine,
)
from features.workspace import TableInput, Workspace

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from sqlglot import exp

TIME_ZONE_KEY = "spark.sql.session.timeZone"
UTC = "UTC"
SPARK_TYPES = {"int64": "bigint", "Int64": "bigint", "float64": "double", "bool": "boolean"}
"""The Spark type of each ``feature_dtypes()`` pandas dtype (anything else, i.e. str: string)."""
MASTER_CONNECT_TIMEOUT_S = 5.0


# --- the session ----------------------------------------------------------------------------------


def spark_session(
    master: str = "local[2]", *, app_name: str = "lstep", conf: dict[str, str] | None = None
) -> SparkSession:
    """A SparkSession for the features: UTC, no UI, Arrow on, nothing fetched from the network.

    Args:
        master: ``local[N]``, ``spark://host:port``, ``yarn``, ``k8s://...``.
        app_name: the application's name in the cluster manager.
        conf: more Spark settings; they win over the defaults here, except the time zone.

    Raises:
        ValueError: when ``conf`` sets a session time zone other than UTC, when a
            ``spark://`` master does not answer, or when Spark cannot start a session.
    """
    from pyspark.sql import SparkSession

    settings = {**session_defaults(master), **(conf or {})}
    if settings[TIME_ZONE_KEY] != UTC:
        raise ValueError(
            f"{TIME_ZONE_KEY}={settings[TIME_ZONE_KEY]}: the features need UTC "
            "(another zone moves events across days and drops rows silently)"
        )
    check_master_reachable(master)
    if local_cores(master) is not None:  # local workers run this interpreter (pandas UDFs)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as error:  # py4j/JVM start-up failures have no common type
        message = f"Spark master {master}: cannot start a session ({_first_line(error)})"
        raise ValueError(message) from None
    # runtime setting: also applied when getOrCreate handed back an existing session
    spark.conf.set(TIME_ZONE_KEY, UTC)
    return spark


def session_defaults(master: str) -> dict[str, str]:
    """The settings ``spark_session`` starts from for ``master``."""
    settings = {
        TIME_ZONE_KEY: UTC,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "ERROR",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # no spark.jars.packages: nothing is resolved through ivy at run time
    }
    cores = local_cores(master)
    if cores is not None:
        # a few statements of small shuffles: one partition per core, not Spark's 200
        settings["spark.sql.shuffle.partitions"] = str(cores)
        settings["spark.driver.memory"] = "4g"
    return settings


def local_cores(master: str) -> int | None:
    """The cores of a ``local``, ``local[N]`` or ``local[*]`` master; None for a cluster."""
    if master == "local":
        return 1
    if not (master.startswith("local[") and master.endswith("]")):
        return None
    count = master[len("local[") : -1].split(",")[0]
    return usable_cores() if count == "*" else int(count)


def check_master_reachable(master: str) -> None:
    """Fail fast, naming the URL, when no ``spark://`` master answers (Spark retries for a minute).

    Raises:
        ValueError: when none of the master's host:port pairs accepts a connection.
    """
    if not master.startswith("spark://"):
        return
    errors = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=MASTER_CONNECT_TIMEOUT_S):
                return
        except (OSError, ValueError) as error:
            errors.append(f"{address}: {error}")
    raise ValueError(f"Spark master {master} cannot be reached ({'; '.join(errors)})")


@contextmanager
def spark_engine(master: str = "local[2]", **session: Any) -> Iterator[SparkEngine]:
    """A ``SparkEngine`` on ``spark_session(master)``; the session is stopped afterwards, unless
    it was already running in this process (a notebook's, a test's)."""
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    spark = spark_session(master, **session)
    engine = SparkEngine(spark)
    try:
        yield engine
    finally:
        engine.close()
        if running is None:
            spark.stop()


# --- the engine -----------------------------------------------------------------------------------


class SparkResult:
    """A Spark DataFrame with the result methods of a DuckDB connection the workspace uses."""

    def __init__(self, frame: DataFrame) -> None:
        self.frame = frame

    def df(self) -> pd.DataFrame:
        """The rows as pandas (through Arrow)."""
        return self.frame.toPandas()

    def fetchall(self) -> list[tuple]:
        """The rows as tuples."""
        return [tuple(row) for row in self.frame.collect()]


class SparkEngine:
    """Runs a ``features.workspace.Workspace`` on a SparkSession (``con=SparkEngine(spark)``).

    Each statement is transpiled from DuckDB's dialect (``to_spark_sql``). DuckDB's temporary
    tables become cached tables (``CACHE TABLE``, materialised once) when ``cache_tables``, else
    lazy temporary views that each later statement recomputes.
    """

    def __init__(self, spark: SparkSession, *, cache_tables: bool = True) -> None:
        """Raises: ValueError when the session's time zone is not UTC."""
        zone = spark.conf.get(TIME_ZONE_KEY)
        if zone != UTC:
            raise ValueError(
                f"Spark session {TIME_ZONE_KEY} is {zone}: the features need UTC "
                "(use features.spark.spark_session, or set it)"
            )
        self.spark = spark
        self.cache_tables = cache_tables
        self._at_close: list[Callable[[], None]] = []

    def execute(self, sql: str) -> SparkResult:
        """Run one DuckDB-dialect statement on Spark."""
        return SparkResult(self.spark.sql(to_spark_sql(sql, cache_tables=self.cache_tables)))

    def register(self, name: str, frame: pd.DataFrame | DataFrame) -> None:
        """Expose a pandas or Spark DataFrame as the temporary view ``name``."""
        if isinstance(frame, pd.DataFrame):
            frame = self.spark.createDataFrame(_arrow_ready(frame))
        frame.createOrReplaceTempView(name)

    def unregister(self, name: str) -> None:
        """Drop the temporary view ``name``."""
        self.spark.catalog.dropTempView(name)

    def parquet_relation(self, ws: Workspace, path: str | Path, role: str) -> str:
        """Spark reads the parquet file or directory at any Hadoop-compatible URI (s3a://, ...).

        Raises:
            FileNotFoundError: naming the role and path when there is nothing at ``path``.
        """
        from pyspark.errors import AnalysisException

        try:
            frame = self.spark.read.parquet(str(path))
        except AnalysisException as error:
            if "PATH_NOT_FOUND" in str(error) or "does not exist" in str(error):
                raise FileNotFoundError(f"{role}: no such file {path}") from None
            raise ValueError(f"{role}: cannot read {path} ({_first_line(error)})") from None
        return ws.register(f"{role}_parquet", frame)

    def column_names(self, relation: str) -> list[str]:
        """The columns of a registered relation."""
        return self.spark.table(relation).columns

    def numbered(self, pairs: pd.DataFrame | DataFrame) -> pd.DataFrame | DataFrame:
        """Spine pairs with a ``row_id``: their position for pandas, any unique id for Spark."""
        if isinstance(pairs, pd.DataFrame):
            return pairs.assign(row_id=range(len(pairs)))
        from pyspark.sql import functions

        return pairs.withColumn("row_id", functions.monotonically_increasing_id())

    def at_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the engine is closed (after lazy results are consumed)."""
        self._at_close.append(cleanup)

    def close(self) -> None:
        """Drop the temporary objects of the lazy results handed out (``spark_features``)."""
        while self._at_close:
            self._at_close.pop()()


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its pandas ``str`` columns as object: pyspark's Arrow conversion cannot take
    pandas 3's Arrow-backed strings (and would fall back to converting row by row)."""
    strings = {name: object for name, dtype in frame.dtypes.items() if dtype == "str"}
    return frame.astype(strings) if strings else frame


def to_spark_sql(sql: str, *, cache_tables: bool = False) -> str:
    """A DuckDB-dialect statement of ``features.window_sql`` in Spark SQL.

    ``CREATE TEMP TABLE t AS q`` becomes ``CACHE TABLE t AS q`` when ``cache_tables`` (SQLGlot
    writes a lazy ``CREATE TEMPORARY VIEW``).
    """
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb").transform(_drop_epoch_us)
    if cache_tables and isinstance(tree, exp.Create) and tree.kind == "TABLE":
        return f"CACHE TABLE {tree.this.sql('spark')} AS {tree.expression.sql('spark')}"
    return tree.sql("spark")


def _drop_epoch_us(node: exp.Expression) -> exp.Expression:
    """``make_timestamp(epoch_us(x))`` -> ``x``.

    DuckDB needs it to make a TIMESTAMPTZ naive UTC whatever its TimeZone setting; Spark has no
    ``epoch_us``, and in a UTC session its TIMESTAMP (an instant) already shows and truncates to
    days in UTC.
    """
    from sqlglot import exp

    if (
        isinstance(node, exp.UnixToTime)
        and isinstance(node.this, exp.Anonymous)
        and node.this.name.lower() == "epoch_us"
    ):
        return node.this.expressions[0]
    return node


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


# --- the features as a Spark DataFrame ------------------------------------------------------------


def spark_features(
    engine: SparkEngine,
    events: TableInput,
    customers: TableInput,
    *,
    spine: pd.DataFrame | DataFrame,
) -> DataFrame:
    """The catalog features of ``spine``'s pairs as a Spark DataFrame, computed where Spark runs.

    Nothing is collected to the driver but the spine's distinct dates. The result reads the
    engine's temporary tables: it stays valid until ``engine.close()``.

    Args:
        engine: the engine whose session computes.
        events: events parquet path (any Hadoop-compatible URI) or pandas frame.
        customers: customers parquet path or pandas frame.
        spine: (customer_id, as_of) pairs, a pandas frame or a Spark DataFrame; as_of at
            midnight UTC, no pair twice.

    Returns:
        customer_id (string), as_of (timestamp, midnight UTC), then the catalog features in
        catalog order, typed as ``feature_dtypes()`` (``SPARK_TYPES``); rows in no given order.

    Raises:
        ValueError: on a bad spine, missing columns, or spine learners missing from customers.
        FileNotFoundError: when an input path does not exist.
    """
    catalog = load_catalog()
    check_catalog_coverage(catalog)
    pairs = normalize_spine(spine) if isinstance(spine, pd.DataFrame) else _spark_spine(spine)
    dates = _spine_dates(pairs)
    if dates.empty:
        return engine.spark.createDataFrame([], schema=feature_schema())
    ws = Workspace(engine)
    engine.at_close(ws.close)
    ws.register_inputs(events, customers)
    ws.register_dates(dates, restrict_to=pairs)
    window = ws.create("TABLE", "window", _WINDOW_TABLE, **ws.window_parts())
    raw = engine.execute(ws.features_sql(pairs, window, catalog)).frame
    return raw.selectExpr(*[f"CAST({name} AS {kind}) AS {name}" for name, kind in _spark_columns()])


def spark_eligible(
    engine: SparkEngine, events: TableInput, customers: TableInput, as_of: Sequence[date]
) -> DataFrame:
    """``features.windows.eligible_spine`` as a lazy Spark DataFrame (valid until engine.close()).

    Returns:
        the eligible (customer_id string, as_of timestamp) pairs at each date.
    """
    ws = Workspace(engine)
    engine.at_close(ws.close)
    ws.register_inputs(events, customers)
    ws.register_dates(_as_of_dates(as_of))
    active = ws.create("TABLE", "active", _ACTIVE_PAIRS_TABLE, in_window=ws.in_window())
    sql = _ELIGIBLE.format(customers=ws.customers, dates=ws.dates, active=active)
    return engine.execute(sql).frame


def event_days(engine: SparkEngine, events: TableInput) -> tuple[date, date]:
    """The UTC days of the first and the last event (the span ``--every-days`` steps through).

    Raises:
        ValueError: when there are no events.
    """
    ws = Workspace(engine)
    try:
        ws.register_events(events)
        first, last = engine.execute(
            f"SELECT CAST(min(ts) AS DATE), CAST(max(ts) AS DATE) FROM {ws.events}"
        ).fetchall()[0]
    finally:
        ws.close()
    if first is None:
        raise ValueError(f"events: {events} holds no events")
    return first, last


def feature_schema() -> str:
    """The DDL schema of ``spark_features``' result."""
    return ", ".join(f"{name} {kind}" for name, kind in _spark_columns())


def _spark_columns() -> list[tuple[str, str]]:
    dtypes = feature_dtypes()
    features = [(name, SPARK_TYPES.get(dtype, "string")) for name, dtype in dtypes.items()]
    return [("customer_id", "string"), ("as_of", "timestamp"), *features]


def _spark_spine(spine: DataFrame) -> DataFrame:
    """A Spark spine's pairs, typed, after the checks ``normalize_spine`` makes of a pandas one.

    Raises:
        ValueError: on missing columns, nulls, as_of off midnight, or a pair given twice.
    """
    missing = [column for column in ("customer_id", "as_of") if column not in spine.columns]
    if missing:
        raise ValueError(f"spine: missing columns {missing}; it has {spine.columns}")
    pairs = spine.selectExpr("CAST(customer_id AS STRING) AS customer_id", "as_of")
    pairs = pairs.selectExpr("customer_id", "CAST(as_of AS TIMESTAMP) AS as_of")
    counts = pairs.selectExpr(
        "count(*) AS n_rows",
        "count(DISTINCT customer_id, as_of) AS n_pairs",
        "count_if(customer_id IS NULL OR as_of IS NULL) AS n_null",
        "count_if(as_of != date_trunc('DAY', as_of)) AS n_off_midnight",
    ).first()
    if counts["n_null"]:
        raise ValueError(f"spine: {counts['n_null']} rows have a null customer_id or as_of")
    if counts["n_off_midnight"]:
        raise ValueError(f"spine: {counts['n_off_midnight']} as_of values are not at midnight UTC")
    if counts["n_pairs"] != counts["n_rows"]:
        repeated = counts["n_rows"] - counts["n_pairs"]
        raise ValueError(f"spine: {repeated} rows repeat a (customer_id, as_of) pair")
    return pairs


def _spine_dates(pairs: pd.DataFrame | DataFrame) -> pd.Series:
    """The distinct as_of dates of a spine (a few: the only data brought to the driver)."""
    if isinstance(pairs, pd.DataFrame):
        return pd.Series(pairs["as_of"].unique())
    dates = pairs.select("as_of").distinct().toPandas()["as_of"]
    return as_of_series(dates, source="spine: column as_of")
