# ruff: noqa: E501 - SQL probe strings
"""Each DuckDB construct of features/windows.py that plain SQLGlot (duckdb -> spark) got wrong,
before and after its rewrite: run both in DuckDB and (transpiled) in Spark local[2], UTC.

    PYTHONPATH=. .venv/bin/python benchmarks/spark_spike_constructs.py
"""

from __future__ import annotations

import os

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import duckdb
import sqlglot

from benchmarks.spikes.spark_spike import spark_session

T = "(SELECT TIMESTAMP '2026-03-01 00:00:00' AS as_of, TIMESTAMP '2026-01-01' AS lagged, 5 AS ev7, 40 AS prior, DATE '2026-02-10' AS enrol_day, DATE '2026-03-01' AS as_of_day, 0 AS window_days, 3 AS ad30)"
CASES = {
    "make_timestamp(epoch_us(ts))": (
        "SELECT make_timestamp(epoch_us(TIMESTAMPTZ '2026-03-01 10:00:00+00')) AS v",
        None,
    ),
    "range(1, 31) AS r(lag)": (
        "SELECT count(*) AS n, sum(lag) AS s FROM range(1, 31) AS r(lag)",
        "SELECT count(*) AS n, sum(lag) AS s FROM (VALUES (1), (2), (3)) AS r(lag)",
    ),
    "TIMESTAMP '-infinity'": (f"SELECT coalesce(NULL, TIMESTAMP '-infinity') AS v FROM {T}", None),
    "CAST(unnest(generate_series(..)) AS DATE)": (
        f"SELECT CAST(unnest(generate_series(lagged, as_of - INTERVAL 1 DAY, INTERVAL 1 DAY)) AS DATE) AS day FROM {T} LIMIT 2",
        f"SELECT CAST(day AS DATE) AS day FROM (SELECT unnest(generate_series(lagged, as_of - INTERVAL 1 DAY, INTERVAL 1 DAY)) AS day FROM {T}) LIMIT 2",
    ),
    "date - date": (
        f"SELECT least(30, as_of_day - enrol_day) AS v FROM {T}",
        f"SELECT least(30, date_diff('day', enrol_day, as_of_day)) AS v FROM {T}",
    ),
    "int / 7.0 (decimal literal)": (
        f"SELECT (ev7 / 7.0) / (prior / 23.0) - 1 AS v FROM {T}",
        f"SELECT (ev7 / 7) / (prior / 23) - 1 AS v FROM {T}",
    ),
    "x / 0 (window_days = 0)": (
        f"SELECT coalesce(ad30 / window_days < 0.10, FALSE) AS v FROM {T}",
        f"SELECT coalesce(ad30 / nullif(window_days, 0) < 0.10, FALSE) AS v FROM {T}",
    ),
    "a.* EXCLUDE (col)": (f"SELECT a.* EXCLUDE (as_of) FROM {T} AS a", None),
    "date - integer": (f"SELECT CAST(as_of AS DATE) - CAST(3 AS INTEGER) AS v FROM {T}", None),
    "count(*) FILTER (cond)": (f"SELECT count(*) FILTER (ev7 > 1) AS v FROM {T}", None),
    "x // 7, bit_or(1 << n), bit_count": (
        f"SELECT max((ev7 - 1) // 7) AS a, bit_count(bit_or(CAST(1 AS BIGINT) << (ev7 - 1)) & 127) AS b FROM {T}",
        None,
    ),
    "date_diff('microsecond', ..)": (
        f"SELECT date_diff('microsecond', lagged, as_of) AS v FROM {T}",
        None,
    ),
    "GROUP BY ALL": (f"SELECT ev7, count(*) AS n FROM {T} GROUP BY ALL", None),
}


def run_spark(spark, sql: str) -> str:
    spark_sql = sqlglot.transpile(sql, read="duckdb", write="spark")[0]
    try:
        return f"{[tuple(r) for r in spark.sql(spark_sql).collect()]}   <- {spark_sql[:110]}"
    except Exception as error:
        return f"ERROR {str(error).splitlines()[0][:160]}   <- {spark_sql[:110]}"


def main() -> None:
    spark = spark_session()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, (before, after) in CASES.items():
        print(f"== {name}")
        for label, sql in (("as is", before), ("rewritten", after)):
            if sql is None:
                continue
            try:
                duck = con.execute(sql).fetchall()
            except Exception as error:
                duck = f"ERROR {error}"
            print(f"  {label:9} duckdb {duck}")
            print(f"  {'':9} spark  {run_spark(spark, sql)}")
    spark.stop()


if __name__ == "__main__":
    main()
