"""Spike: one representative window feature written once in Ibis, run by DuckDB and PySpark.

    .venv/bin/python benchmarks/spark_spike_ibis.py   (needs ibis-framework[duckdb,pyspark])

Features at as_of t from the events in [t-30d, t): sessions_7d (a count with a filter) and
active_days_7d (distinct UTC days with an event in the last 7 days), compared with
features.windows.build_features.
"""

from __future__ import annotations

import datetime as dt
import os
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import ibis

from benchmarks.spikes.spark_spike import spark_session
from features import windows

LOG = "/tmp/spark_spike/log-500x150"
AS_OF = dt.datetime(2026, 4, 15)


def window_features(events: ibis.Table, as_of: dt.datetime) -> ibis.Table:
    """The one definition, for every backend."""
    t = ibis.literal(as_of, type="timestamp")
    w = events.filter(events.ts >= t - ibis.interval(days=30), events.ts < t)
    w = w.mutate(day=w.ts.date())
    w = w.mutate(lag=t.date().delta(w.day, unit="day"))
    recent = w.lag <= 7
    return w.group_by("customer_id").aggregate(
        sessions_7d=w.count(where=(w.event_type == "session") & recent),
        active_days_7d=w.day.nunique(where=recent),
    )


def main() -> None:
    spark = spark_session()
    results, timings = {}, {}
    duck = ibis.duckdb.connect()
    duck.raw_sql("SET TimeZone = 'UTC'")
    backends = {"duckdb": duck, "pyspark": ibis.pyspark.connect(spark)}
    for name, con in backends.items():
        events = con.read_parquet(f"{LOG}/events.parquet")
        expr = window_features(events, AS_OF)
        if name == "pyspark":
            print("pyspark SQL:\n", ibis.to_sql(expr, dialect="pyspark"))
        else:
            print("duckdb SQL:\n", ibis.to_sql(expr, dialect="duckdb"))
        t0 = time.perf_counter()
        results[name] = expr.to_pandas().sort_values("customer_id", ignore_index=True)
        timings[name] = time.perf_counter() - t0
    ref = windows.build_features(
        f"{LOG}/events.parquet", f"{LOG}/customers.parquet", as_of=[AS_OF.date()]
    )
    ref = ref.loc[ref["events_30d"] > 0, ["customer_id", "sessions_7d", "active_days_7d"]]
    ref = ref.sort_values("customer_id", ignore_index=True)
    for name, frame in results.items():
        merged = ref.merge(frame, on="customer_id", how="outer", suffixes=("_sql", "_ibis"))
        bad = sum(
            int((merged[f"{c}_sql"].astype("float") != merged[f"{c}_ibis"].astype("float")).sum())
            for c in ("sessions_7d", "active_days_7d")
        )
        print(
            f"{name}: {len(frame)} learners, {timings[name]:.2f} s, cells differing from "
            f"build_features: {bad} (of {2 * len(merged)})"
        )
    spark.stop()


if __name__ == "__main__":
    main()
