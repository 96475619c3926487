# ruff: noqa: E402 - the Spark/telemetry environment is set before pyspark is imported
"""Feasibility spike: run features.windows.build_features on Spark SQL (local[2]) by transpiling
every statement it executes with SQLGlot (duckdb -> spark), and compare with DuckDB.

    SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python benchmarks/spark_spike.py [--raw] [--customers N]

--raw: no custom transforms, run each statement and list every Spark failure (cascades).
The Spark side goes through the same Workspace code as DuckDB: `SparkCon` mimics the few
DuckDBPyConnection methods build_features uses (execute/.df/.fetchall, register, unregister).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
for var in ("MLFLOW_DISABLE_TELEMETRY", "BENTOML_DO_NOT_TRACK", "DO_NOT_TRACK"):
    os.environ.setdefault(var, "true")

import numpy as np
import pandas as pd
import sqlglot

from features import windows
from features.simulator import SimulationConfig, simulate
from features.spark import to_spark_sql

AS_OF = [dt.date(2026, 3, 1), dt.date(2026, 4, 15), dt.date(2026, 5, 31)]


# --- SQLGlot: the production transpilation (features.spark), or none with --raw -----------------


def to_spark(sql: str, *, raw: bool) -> str:
    if raw:
        return sqlglot.parse_one(sql, read="duckdb").sql("spark")
    return to_spark_sql(sql)


# --- a DuckDB-connection look-alike on a SparkSession --------------------------------------------


class Result:
    def __init__(self, frame):
        self.frame = frame

    def df(self) -> pd.DataFrame:
        return self.frame.toPandas()

    def fetchall(self):
        return [tuple(row) for row in self.frame.collect()]


class SparkCon:
    def __init__(self, spark, *, raw: bool = False, keep_going: bool = False, cache: bool = False):
        self.spark, self.raw, self.keep_going, self.cache = spark, raw, keep_going, cache
        self.log: list[tuple[str, str, str | None]] = []  # (duckdb sql, spark sql, error)

    def execute(self, sql: str):
        spark_sql = to_spark(sql, raw=self.raw)
        if not self.raw:
            spark_sql = self._statement_fixes(spark_sql)
        try:
            frame = self.spark.sql(spark_sql)
        except Exception as error:
            self.log.append((sql, spark_sql, f"{type(error).__name__}: {str(error)[:400]}"))
            if self.keep_going:
                return Result(self.spark.createDataFrame([], "x int"))
            raise
        self.log.append((sql, spark_sql, None))
        return Result(frame)

    def _statement_fixes(self, spark_sql: str) -> str:
        # DuckDB's DESCRIBE <query> is Spark's DESCRIBE QUERY <query>
        spark_sql = re.sub(r"^DESCRIBE SELECT", "DESCRIBE QUERY SELECT", spark_sql)
        if self.cache:  # materialise DuckDB's TEMP TABLEs (SQLGlot makes them temporary views)
            spark_sql = re.sub(r"^CREATE TEMPORARY VIEW (\w+) AS", r"CACHE TABLE \1 AS", spark_sql)
        return spark_sql

    def register(self, name: str, frame: pd.DataFrame):
        self.spark.createDataFrame(frame).createOrReplaceTempView(name)
        self.log.append((f"register {name}", f"createOrReplaceTempView({name})", None))

    def unregister(self, name: str):
        self.spark.catalog.dropTempView(name)

    def close(self):
        pass


def spark_session(tz: str = "UTC"):
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("lstep-spark-spike")
        .config("spark.sql.session.timeZone", tz)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.log.level", "FATAL")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


# --- comparison -----------------------------------------------------------------------------------


MAX_DIFF: dict[str, float] = {}


def compare(duck: pd.DataFrame, spark: pd.DataFrame, tol: float = 1e-9) -> list[str]:
    problems = []
    if dict(duck.dtypes) != dict(spark.dtypes):
        problems.append(f"dtypes differ: {set(duck.dtypes.items()) ^ set(spark.dtypes.items())}")
    if list(duck.columns) != list(spark.columns):
        problems.append(f"columns differ: {set(duck.columns) ^ set(spark.columns)}")
    if len(duck) != len(spark):
        problems.append(f"rows: duckdb {len(duck)} spark {len(spark)}")
        return problems
    keys = ["customer_id", "as_of"]
    d = duck.sort_values(keys, ignore_index=True)
    s = spark.sort_values(keys, ignore_index=True)
    for column in duck.columns:
        a, b = d[column], s[column]
        null_a, null_b = a.isna().to_numpy(), b.isna().to_numpy()
        bad = null_a != null_b
        both = ~null_a & ~null_b
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            x = a.to_numpy(dtype=float, na_value=np.nan)
            y = b.to_numpy(dtype=float, na_value=np.nan)
            bad |= both & ~(np.abs(x - y) <= tol)
            MAX_DIFF[column] = max(
                MAX_DIFF.get(column, 0.0), float(np.nanmax(np.abs(x - y), initial=0))
            )
        else:
            bad |= (a.astype(object).where(both, 0) != b.astype(object).where(both, 0)).to_numpy()
        if bad.any():
            i = np.flatnonzero(bad)[0]
            problems.append(
                f"{column}: {int(bad.sum())} rows differ (dtype {a.dtype} vs {b.dtype}), e.g. "
                f"{d.loc[i, 'customer_id']} {d.loc[i, 'as_of']}: "
                f"duckdb {a.iloc[i]!r} spark {b.iloc[i]!r}"
            )
    return problems


def scenarios(events: str, customers: str) -> dict[str, dict]:
    """build_features calls to compare: a few dates, many dates, an explicit spine (eligible or
    not, so customer_filter and negative tenures are exercised) and a foreign type_firsts."""
    cust = pd.read_parquet(customers)
    rng = np.random.default_rng(0)
    weekly = [dt.date(2026, 1, 20) + dt.timedelta(days=7 * i) for i in range(19)]
    spine = pd.DataFrame(
        {
            "customer_id": rng.choice(cust["customer_id"].to_numpy(), 400),
            "as_of": pd.to_datetime(rng.choice(np.array(weekly, dtype="datetime64[D]"), 400)),
        }
    ).drop_duplicates(ignore_index=True)
    firsts = windows.event_type_firsts(events)
    firsts = firsts[firsts["event_type"] != "video_watched"]  # a type the log "never had"
    return {
        "3 dates": {"as_of": AS_OF},
        "19 weekly dates": {"as_of": weekly},
        "spine 400 random pairs": {"spine": spine},
        "3 dates, type_firsts w/o video": {"as_of": AS_OF, "type_firsts": firsts},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", action="store_true", help="no custom transforms; list failures")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--tz", default="UTC", help="spark.sql.session.timeZone")
    parser.add_argument("--cache", action="store_true", help="CREATE TEMP TABLE -> CACHE TABLE")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--out", default="/tmp/spark_spike")
    args = parser.parse_args()

    out = Path(args.out) / f"log-{args.customers}x{args.days}"
    if not (out / "events.parquet").exists():
        simulate(
            SimulationConfig(customers=args.customers, days=args.days, seed=5, truth_share=0.0), out
        )
    events, customers = str(out / "events.parquet"), str(out / "customers.parquet")
    import pyspark

    print(f"log: {out} ({len(pd.read_parquet(events))} events)")
    print(
        f"versions: sqlglot {sqlglot.__version__}, pyspark {pyspark.__version__}, "
        f"duckdb {windows.duckdb.__version__}, pandas {pd.__version__}; session tz {args.tz}"
    )
    t = time.perf_counter()
    spark = spark_session(args.tz)
    spark.sql("SELECT 1").collect()
    print(f"spark local[2] start-up: {time.perf_counter() - t:.1f} s")

    failed = False
    for name, kwargs in scenarios(events, customers).items():
        if args.only and args.only not in name:
            continue
        timings = {}
        for engine in ("duckdb", "spark"):
            for run in ("first", "second"):
                con = SparkCon(spark, raw=args.raw, keep_going=args.raw, cache=args.cache)
                t = time.perf_counter()
                try:
                    frame = windows.build_features(
                        events, customers, con=con if engine == "spark" else None, **kwargs
                    )
                except Exception:
                    traceback.print_exc(limit=3)
                    for duck_sql, spark_sql, error in con.log:
                        if error:
                            print("\n--- FAILED:", " ".join(duck_sql.split())[:120])
                            print("    spark sql:", " ".join(spark_sql.split())[:300])
                            print("    error:", error.split("\n")[0][:300])
                    return 1
                timings[engine, run] = time.perf_counter() - t
            if engine == "duckdb":
                duck = frame
        problems = compare(duck, frame)
        failed |= bool(problems)
        print(
            f"\n[{name}] rows {len(duck)} x columns {duck.shape[1]} "
            f"({len(duck) * duck.shape[1]} cells), dates {duck['as_of'].nunique()}, "
            f"nulls {int(duck.isna().sum().sum())}; mismatches: {len(problems) or 'none'}"
        )
        for problem in problems:
            print("   ", problem)
        print(
            "    timings (first/second call): "
            + ", ".join(
                f"{engine} {timings[engine, 'first']:.2f}/{timings[engine, 'second']:.2f} s"
                for engine in ("duckdb", "spark")
            )
            + f"; ratio {timings['spark', 'second'] / timings['duckdb', 'second']:.0f}x"
        )
    print(
        "\nlargest float difference over all scenarios: "
        f"{max(MAX_DIFF.values(), default=float('nan')):.3g}"
    )
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
