"""Benchmark: the online feature assembly of one learner (``serving.infra.learners.day_features``).

In process, concurrency 1, on a simulated event store: the event index build (first open) and
reuse (second open), then per request the features of one learner by id on a day that is no
snapshot day (the day after the log ends: "today" for a live system), and with inline events
(up to 200: the learner's latest stored ones sent again plus new ones, merged and deduplicated).
The HTTP hop and ``assess`` are not in these figures.

``--http`` times the whole ``POST /score`` instead, at concurrency 1, against ``bentoml serve``
on ``benchmarks/serve_latency.py``'s cached workspace (its helpers, unchanged): by id on the day
after the snapshot day, and with up to 200 inline events on that day.

    .venv/bin/python benchmarks/online_features.py [--customers 5000] [--requests 500] [--http]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.simulator import SimulationConfig, simulate
from serving.core.asks import LearnerAsk
from serving.infra.learners import LearnerData, day_features

CACHE = Path(__file__).resolve().parent / ".cache"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--inline-events", type=int, default=200)
    parser.add_argument("--http", action="store_true", help="time POST /score end to end")
    return parser.parse_args()


def _percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (
        f"p50 {np.percentile(ms, 50):6.2f} ms  p99 {np.percentile(ms, 99):6.2f} ms  "
        f"mean {statistics.fmean(ms):6.2f} ms  (n={len(ms)})"
    )


def _timed(asks: list[LearnerAsk], data: LearnerData) -> list[float]:
    spent = []
    for ask in asks:
        started = time.perf_counter()
        features = day_features([ask], data)
        spent.append(time.perf_counter() - started)
        assert not features.problems, features.problems
    return spent


def main() -> None:
    args = _arguments()
    if args.http:
        _http(args)
        return
    config = SimulationConfig(customers=args.customers, days=args.days, seed=3, truth_share=0.0)
    out = CACHE / f"online-{args.customers}x{args.days}"
    if not (out / "events.parquet").exists():
        simulate(config, out)
    events = pd.read_parquet(out / "events.parquet")
    print(f"log: {len(events):,} events of {args.customers:,} learners")
    for attempt in ("first open (index built unless cached)", "second open (index reused)"):
        started = time.perf_counter()
        data = LearnerData.open(out)
        print(f"{attempt}: {time.perf_counter() - started:.2f} s")
    day = config.end + timedelta(days=1)
    now = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    rng = random.Random(0)
    settled = data.customers["enrolled_at"] < pd.Timestamp(day - timedelta(days=2), tz="UTC")
    ids = rng.choices(list(data.customers.index[settled]), k=args.requests)
    by_id = [LearnerAsk(c, day, now) for c in ids]
    _timed(by_id[:20], data)  # warm caches and imports
    print("by id, day after the log: " + _percentiles(_timed(by_id, data)))
    grouped = dict(tuple(events.groupby("customer_id")))
    inline = [
        LearnerAsk(c, day, now, events=_inline(grouped.get(c), args.inline_events, day))
        for c in ids
    ]
    sizes = [len(ask.events or ()) for ask in inline]
    print(
        f"inline ({min(sizes)}-{max(sizes)} events, merged with the stored): "
        + _percentiles(_timed(inline, data))
    )


def _inline(mine: pd.DataFrame | None, count: int, day) -> tuple[dict, ...]:
    """The learner's latest stored events sent again, topped up with new sessions, ``count``."""
    rows = []
    if mine is not None:
        for row in mine.sort_values("ts").tail(count - 10).itertuples():
            rows.append(
                {
                    "ts": row.ts.to_pydatetime(),
                    "event_type": row.event_type,
                    "duration_s": None if pd.isna(row.duration_s) else float(row.duration_s),
                    "channel": None if pd.isna(row.channel) else row.channel,
                    "item": None if pd.isna(row.item) else row.item,
                }
            )
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    while len(rows) < count:
        rows.append(
            {
                "ts": midnight - timedelta(minutes=7 * (len(rows) + 1)),
                "event_type": "session",
                "duration_s": 300.0,
                "channel": "web",
                "item": None,
            }
        )
    return tuple(rows)


def _http(args: argparse.Namespace) -> None:
    """``POST /score`` at concurrency 1: by id on a day that is no snapshot day, and inline."""
    import asyncio

    import serve_latency as bench  # beside this file: its workspace and server helpers
    from rich.console import Console

    console = Console()
    workspace = bench._workspace(1000, 150, 0, console)
    day = workspace.as_of + timedelta(days=1)
    data = workspace.settings.data_path
    events = pd.read_parquet(data / "events.parquet")
    before = events[events["ts"] < pd.Timestamp(day, tz="UTC")]
    grouped = dict(tuple(before.groupby("customer_id")))
    snapshot = pd.read_parquet(data / "features" / f"as_of={workspace.as_of}.parquet")
    ids = [c for c in snapshot["customer_id"] if c in grouped][: args.requests]
    by_id = [{"learners": [{"customer_id": c}], "as_of": day.isoformat()} for c in ids]
    inline = []
    for customer_id in ids:
        rows = (
            grouped[customer_id]
            .sort_values("ts")
            .tail(args.inline_events)
            .drop(columns="customer_id")
        )
        rows = rows.assign(ts=rows["ts"].map(pd.Timestamp.isoformat))
        body = json.loads(rows.to_json(orient="records"))
        learner = {"customer_id": customer_id, "events": body}
        inline.append({"learners": [learner], "as_of": day.isoformat()})
    log_path = workspace.settings.home / "serve-online.log"
    process, url = bench._start(workspace.settings, log_path, {"LSTEP_WARM_REASONS": "0"})
    try:
        snapshot_day = [{**body, "as_of": workspace.as_of.isoformat()} for body in by_id]
        modes = (
            ("by id, snapshot day (the day's answers)", snapshot_day),
            ("by id, day after the snapshot", by_id),
            ("inline", inline),
        )
        for mode, bodies in modes:
            asyncio.run(bench._level(url, bodies, 1, 16))  # connections, caches
            figures = asyncio.run(bench._level(url, bodies, 1, len(bodies)))
            sizes = [len(b["learners"][0].get("events") or ()) for b in bodies]
            console.print(
                f"{mode} ({max(sizes)} events max): p50 {figures['p50_ms']:.1f} ms, "
                f"p99 {figures['p99_ms']:.1f} ms, {figures['requests_per_s']:.0f} req/s "
                f"(n={figures['requests']})"
            )
    finally:
        bench._stop(process)


if __name__ == "__main__":
    main()
