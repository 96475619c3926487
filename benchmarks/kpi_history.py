"""Benchmark: the six KPIs over an audit log that grows with the stored days.

The KPIs after a batch day are computed from the whole audit log (``serving.app.kpi_days``:
every learner's moves, episodes and reverts since the first day), so their cost grows with the
transitions stored, not with the learners: `batch_scale.py` measures a store of three days and
cannot show it. This builds a seeded audit log of N learners over each number of days asked
(everyone tagged on the first day, a share of them moving on each day after, as a steady batch
moves them), with the scores of the moved learner-days and the customers, and times
``compute_kpis`` on its last day. Beside it, in the same run, the floor: DuckDB's one pass over
the same log (each learner's last tag, the least any KPI over the history reads).

    python benchmarks/kpi_history.py --customers 1000000 --days 30 120 365

Prints, for each history, the transitions, the KPIs' seconds, the floor and their ratio, and
the KPIs' seconds per million transitions: flat means the cost is the log's size, linear in the
days stored. The store's read of the log (``StateStore.transitions_frame``, ~1 s per million
rows on SQLite) comes on top and is not timed here.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from serving.app.kpis import compute_kpis
from serving.core.tags import STATUS_TAGS

FIRST_DAY = date(2026, 1, 1)
TAGS = np.array(sorted(STATUS_TAGS))
FIRST_TAGS = np.array(["ST_001", "ST_002", "ST_004"])
"""The tags a first day gives: learners start active, progressing or at risk."""
RULES = np.array(["R01", "R02", "R05", "R09"])


def synthetic_log(
    customers: int, days: int, moving: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """An audit log (``TRANSITION_COLUMNS``), the scores of its learner-days and the customers.

    Day one tags every learner; on each later day a ``moving`` share of them moves to another
    tag, 5% of the moves made by a person (an actor, no rule); ``id`` is the append order.
    """
    rng = np.random.default_rng(seed)
    tag_now = np.searchsorted(TAGS, rng.choice(FIRST_TAGS, customers))  # positions in TAGS
    learners, day_of = [np.arange(customers)], [np.zeros(customers, int)]
    from_tag, to_tag = [np.full(customers, -1)], [tag_now.copy()]
    for day in range(1, days):
        moved = rng.choice(customers, int(customers * moving), replace=False)
        before = tag_now[moved]
        after = (before + rng.integers(1, len(TAGS), len(moved))) % len(TAGS)  # another tag
        tag_now[moved] = after
        learners.append(moved)
        day_of.append(np.full(len(moved), day))
        from_tag.append(before)
        to_tag.append(after)
    columns = (np.concatenate(part) for part in (learners, day_of, from_tag, to_tag))
    return _frames(customers, *columns, rng)


def _frames(
    customers: int,
    learner: np.ndarray,
    day: np.ndarray,
    from_tag: np.ndarray,
    to_tag: np.ndarray,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The log, scores and customers frames of the rows' positions (Arrow text, as read)."""
    ids = pa.array(np.char.add("C", np.char.zfill(np.arange(customers).astype(str), 8)))
    rows = len(learner)
    by_person = rng.random(rows) < 0.05
    tags = pa.array(TAGS)
    as_of = pd.Timestamp(FIRST_DAY) + pd.to_timedelta(day, "D")
    log = pa.table(
        {
            "id": np.arange(1, rows + 1),
            "customer_id": ids.take(learner),
            "as_of": as_of.to_numpy(),
            "from_tag": tags.take(pa.array(from_tag, mask=from_tag < 0)),
            "to_tag": tags.take(pa.array(to_tag)),
            "rule_id": pa.array(rng.choice(RULES, rows), mask=by_person),
            "actor": pa.array(np.full(rows, "lead@school.example"), mask=~by_person),
        }
    ).to_pandas(date_as_object=False)
    scores = pd.DataFrame(
        {
            "customer_id": log["customer_id"],
            "as_of": log["as_of"],
            "control": rng.random(rows) < 0.1,
        }
    )
    enrolled = datetime(2025, 6, 1, tzinfo=UTC) + pd.to_timedelta(
        rng.integers(0, 300, customers), "D"
    )
    people = pd.DataFrame(
        {
            "customer_id": ids.to_pandas(),
            "product_tag": rng.choice(["PT_001", "PT_002", "PT_003"], customers),
            "enrolled_at": enrolled,
            "mrr": rng.gamma(2.0, 30.0, customers),
        }
    )
    return log, scores, people


def floor_seconds(log: pd.DataFrame) -> float:
    """DuckDB's one pass over the log: each learner's last tag (the least a KPI over it reads)."""
    import duckdb

    started = time.perf_counter()
    with duckdb.connect() as con:
        con.register("log", log[["id", "customer_id", "to_tag"]])
        con.execute(
            "SELECT count(*) FROM (SELECT customer_id, arg_max(to_tag, id) FROM log "
            "GROUP BY customer_id)"
        ).fetchall()
    return time.perf_counter() - started


def measure(customers: int, days: int, moving: float, seed: int) -> dict:
    """One history: its log built, then the KPIs of its last day and the floor timed."""
    built = time.perf_counter()
    log, scores, people = synthetic_log(customers, days, moving, seed)
    built = time.perf_counter() - built
    last_day = FIRST_DAY + timedelta(days=days - 1)
    started = time.perf_counter()
    kpis = compute_kpis(log, scores, people, as_of=last_day)
    seconds = time.perf_counter() - started
    return {
        "days": days, "transitions": len(log), "built": built, "kpis": seconds,
        "floor": floor_seconds(log), "values": {kpi.id: kpi.value for kpi in kpis},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, nargs="+", default=[30, 120, 365])
    parser.add_argument(
        "--moving", type=float, default=0.025,
        help="share of the learners moved on each day after the first (a steady 1M day "
        "moves 23-57k)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.customers < 1 or not 0 < args.moving < 1 or min(args.days) < 1:
        parser.error("--customers and --days must be at least 1, --moving within (0, 1)")
    print(
        f"machine: {os.cpu_count()} cores; {args.customers:,} learners, "
        f"{args.moving:.1%} moved a day"
    )
    for days in sorted(args.days):
        run = measure(args.customers, days, args.moving, args.seed)
        per_million = run["kpis"] / run["transitions"] * 1e6
        print(
            f"{days:4d} days  {run['transitions']:>11,} transitions  KPIs {run['kpis']:6.2f} s "
            f"({per_million:.2f} s per million)  floor {run['floor']:5.2f} s  "
            f"{run['kpis'] / run['floor']:5.1f}x  (log built in {run['built']:.1f} s)"
        )
        print(f"           {run['values']}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory {peak:.2f} GiB")


if __name__ == "__main__":
    main()
