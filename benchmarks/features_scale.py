"""Benchmark: window features for a large population at one as_of.

Simulates N learners x D days (cached under benchmarks/.cache, truth off, keyed by the simulator's
code version so that a cached simulation time is that of the current code), then builds the
features at as_of = the end of the log over the 30-day window with DuckDB, and, for comparison,
computes the first ten catalog features with a plain pandas groupby. Each stage runs in its own
process so that its peak RSS is its own. Prints events, rows, seconds per stage and peak RSS.

    python benchmarks/features_scale.py --customers 1000000 --days 60 [--engine duckdb|spark|both]

``--engine spark`` builds the same frame on Spark ``local[N]`` (N = the cores) through
``features.spark.SparkEngine``, twice: DuckDB's temporary tables as Spark cached tables, then as
lazy views, after a first call that warms the JVM; the session's start-up is timed apart.

Targets on a 2-core machine: simulation of 1M x 60 days <= 5 min; features for 1M learners
<= 20 s and <= 6 GiB peak. A run at another size prints its figures, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from datetime import date, timedelta
from pathlib import Path

from targets import simulation_dir, verdict

TARGET_CUSTOMERS, TARGET_DAYS = 1_000_000, 60
SIMULATE_TARGET_S, FEATURES_TARGET_S, FEATURES_TARGET_GIB = 300.0, 20.0, 6.0


def _peak_rss_gib() -> float:
    """Peak resident set size of this process, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _simulate(customers: int, days: int, seed: int, out: str) -> dict:
    from features.simulator import SimulationConfig, simulate

    started = time.perf_counter()
    config = SimulationConfig(customers=customers, days=days, seed=seed, truth_share=0.0)
    summary = simulate(config, Path(out))
    return {
        "seconds": time.perf_counter() - started,
        "events": summary.events,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _features(out: str, as_of: date) -> dict:
    from features.windows import build_features

    started = time.perf_counter()
    frame = build_features(f"{out}/events.parquet", f"{out}/customers.parquet", as_of=[as_of])
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(frame),
        "columns": frame.shape[1],
        "peak_rss_gib": _peak_rss_gib(),
    }


def _spark_features(out: str, as_of: date) -> dict:
    from features.spark import SparkEngine, spark_session
    from features.windows import build_features

    started = time.perf_counter()
    spark = spark_session(f"local[{os.cpu_count()}]", app_name="lstep-features-scale")
    figures = {"startup_seconds": time.perf_counter() - started}
    # the first call also warms the JVM (class loading, JIT): it is timed apart, not compared
    for name, cache_tables in (("warm-up", False), ("cached", True), ("views", False)):
        started = time.perf_counter()
        frame = build_features(
            f"{out}/events.parquet",
            f"{out}/customers.parquet",
            as_of=[as_of],
            con=SparkEngine(spark, cache_tables=cache_tables),
        )
        figures[f"{name}_seconds"] = time.perf_counter() - started
    spark.stop()
    return {**figures, "rows": len(frame), "peak_rss_gib": _peak_rss_gib()}


def _print_spark(spark: dict, duck: dict | None) -> None:
    ratio = (
        f"; cached tables {spark['cached_seconds'] / duck['seconds']:.1f}x DuckDB" if duck else ""
    )
    print(
        f"spark      {spark['cached_seconds']:8.1f} s   cached tables, "
        f"{spark['views_seconds']:.1f} s lazy views; start-up {spark['startup_seconds']:.1f} s, "
        f"first call {spark['warm-up_seconds']:.1f} s; rows {spark['rows']:,}; "
        f"peak driver {spark['peak_rss_gib']:.2f} GiB (the JVM's apart){ratio}"
    )


def _pandas_first_ten(out: str, as_of: date) -> dict:
    """The same first ten catalog features with a plain pandas groupby, for comparison."""
    import pandas as pd

    started = time.perf_counter()
    t = pd.Timestamp(as_of, tz="UTC")
    events = pd.read_parquet(
        f"{out}/events.parquet",
        columns=["customer_id", "ts", "event_type"],
        filters=[("ts", ">=", t - pd.Timedelta(days=30)), ("ts", "<", t)],
    )
    age_days = (t - events["ts"]) / pd.Timedelta(days=1)
    events = events.assign(
        day=events["ts"].dt.floor("D"),
        age=age_days,
        is_session=events["event_type"].eq("session"),
    )
    grouped = events.groupby("customer_id", sort=False)
    last7 = events[events["age"] <= 7].groupby("customer_id", sort=False)
    last14 = events[events["age"] <= 14].groupby("customer_id", sort=False)
    features = pd.DataFrame(
        {
            "days_since_last_event": grouped["age"].min(),
            "active_days_7d": last7["day"].nunique(),
            "active_days_14d": last14["day"].nunique(),
            "active_days_30d": grouped["day"].nunique(),
            "events_7d": last7.size(),
            "events_30d": grouped.size(),
            "sessions_7d": last7["is_session"].sum(),
            "sessions_14d": last14["is_session"].sum(),
            "sessions_30d": grouped["is_session"].sum(),
        }
    ).fillna(0)
    features["active_day_share_30d"] = features["active_days_30d"] / 30
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(features),
        "peak_rss_gib": _peak_rss_gib(),
    }


def _in_child(function, *args) -> dict:
    """Run one stage in a fresh process so its peak RSS is measured alone."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=TARGET_CUSTOMERS)
    parser.add_argument("--days", type=int, default=TARGET_DAYS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engine", choices=["duckdb", "spark", "both"], default="duckdb")
    args = parser.parse_args()
    out = simulation_dir(f"sim-{args.customers}x{args.days}-s{args.seed}")
    as_of = date(2026, 1, 1) + timedelta(days=args.days)
    print(f"machine: {os.cpu_count()} cores; population {args.customers:,} x {args.days} days")

    if (out / "meta.json").exists() and (out / "bench.json").exists():
        sim = json.loads((out / "bench.json").read_text())
        print(f"simulate   cached at {out} (took {sim['seconds']:.1f} s, this simulator code)")
    else:
        sim = _in_child(_simulate, args.customers, args.days, args.seed, str(out))
        (out / "bench.json").write_text(json.dumps(sim))
        print(f"simulate   {sim['seconds']:8.1f} s   peak {sim['peak_rss_gib']:.2f} GiB")
    print(f"events     {sim['events']:,}")

    if args.engine == "spark":
        _print_spark(_in_child(_spark_features, str(out), as_of), None)
        return
    feats = _in_child(_features, str(out), as_of)
    print(
        f"features   {feats['seconds']:8.1f} s   peak {feats['peak_rss_gib']:.2f} GiB   "
        f"rows {feats['rows']:,} x {feats['columns']} columns (DuckDB, all catalog features)"
    )
    if args.engine == "both":
        _print_spark(_in_child(_spark_features, str(out), as_of), feats)
    base = _in_child(_pandas_first_ten, str(out), as_of)
    print(
        f"pandas     {base['seconds']:8.1f} s   peak {base['peak_rss_gib']:.2f} GiB   "
        f"rows {base['rows']:,} (plain groupby, first ten features only)"
    )
    _print_verdicts(args.customers, args.days, sim, feats)


def _print_verdicts(customers: int, days: int, sim: dict, feats: dict) -> None:
    """The two targets, each judged only at the size it is stated for."""
    size = f"{customers:,} learners x {days} days"
    target_size = f"{TARGET_CUSTOMERS:,} learners x {TARGET_DAYS} days"
    print(
        verdict(
            "simulate",
            f"{sim['seconds']:.0f} s (<= {SIMULATE_TARGET_S:.0f})",
            met=sim["seconds"] <= SIMULATE_TARGET_S,
            size=size,
            target_size=target_size,
        )
    )
    print(
        verdict(
            "features",
            f"{feats['seconds']:.1f} s (<= {FEATURES_TARGET_S:.0f}), "
            f"{feats['peak_rss_gib']:.2f} GiB (<= {FEATURES_TARGET_GIB:.0f})",
            met=feats["seconds"] <= FEATURES_TARGET_S
            and feats["peak_rss_gib"] <= FEATURES_TARGET_GIB,
            size=size,
            target_size=target_size,
        )
    )


if __name__ == "__main__":
    main()
