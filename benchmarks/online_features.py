"""Benchmark: the online feature assembly of one learner (``serving.infra.learners.day_features``).

In process, concurrency 1, on a simulated event store: the event index build (first open) and
reuse (second open), then per request the features of one learner by id on a day that is no
snapshot day (the day after the log ends: "today" for a live system), and with inline events
(up to 200: the learner's latest stored ones sent again plus new ones, merged and deduplicated).
The HTTP hop and ``assess`` are not in these figures (``benchmarks/serve_latency.py`` times the
whole ``/score``).

    .venv/bin/python benchmarks/online_features.py [--customers 5000] [--requests 500]
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
