"""Server time of each dashboard page on a synthetic store of N learners (issue 17: <= 1 s at 1M).

A store is synthesised fast (no simulation, no model): N customers over three tiers and twelve
enrolment months, D daily batch runs, an audit log of ~1.4 transitions per learner (onboarding
into ST_001, then a move for ~30% and a second for ~10%), and each day's scores file. The pages
are built in-process (what the route handler runs): the first call reads the store's frames
(cold), the later ones aggregate over the cached frames (warm).

    .venv/bin/python benchmarks/dashboard_pages.py --learners 100000
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from dashboard_value_bench import time_value_and_model

from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_pages import Links, calls_page, learner_page, overview_page
from serving.infra.rulesets import load_rules
from serving.infra.score_files import write_scores
from serving.infra.store import StateStore

FIRST = date(2026, 5, 1)
NOW = datetime(2026, 7, 1, tzinfo=UTC)
TAGS = np.array(["ST_001", "ST_002", "ST_003", "ST_004", "ST_006"])


def build(root: Path, learners: int, days: int) -> DashboardSource:
    rng = np.random.default_rng(7)
    ids = np.array([f"S{i:09d}" for i in range(learners)])
    enrolled = pd.Timestamp("2025-06-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 330, learners), unit="D"
    )
    tiers = rng.choice(["PT_001", "PT_002", "PT_003"], learners)
    customers = {"customer_id": ids, "product_tag": tiers, "enrolled_at": enrolled}
    customers["mrr"] = rng.uniform(0, 200, learners)
    pd.DataFrame(customers).to_parquet(root / "customers.parquet")
    store = StateStore(f"sqlite:///{root / 'state.db'}", scores_dir=root / "scores")
    store.close()
    moved = rng.random(learners) < 0.3
    again = moved & (rng.random(learners) < 0.33)
    day1 = rng.integers(1, days, learners)
    day2 = np.minimum(day1 + rng.integers(1, 5, learners), days - 1)
    parts = [
        pd.DataFrame({"c": ids, "d": 0, "f": None, "t": "ST_001"}),
        pd.DataFrame(
            {
                "c": ids[moved],
                "d": day1[moved],
                "f": "ST_001",
                "t": rng.choice(TAGS[1:], moved.sum()),
            }
        ),
        pd.DataFrame(
            {"c": ids[again], "d": day2[again], "f": None, "t": rng.choice(TAGS, again.sum())}
        ),
    ]
    log = pd.concat(parts).sort_values(["d", "c"], kind="stable")
    log["as_of"] = [(FIRST + timedelta(days=int(d))).isoformat() for d in log["d"]]
    with sqlite3.connect(root / "state.db") as conn:
        conn.executemany(
            "INSERT INTO transitions (customer_id, as_of, from_tag, to_tag, rule_id, actor, "
            "reason, created_at) VALUES (?, ?, ?, ?, 'R01', NULL, 'synthetic', ?)",
            zip(
                log["c"],
                log["as_of"],
                log["f"],
                log["t"],
                [NOW.isoformat()] * len(log),
                strict=True,
            ),
        )
        last = log.drop_duplicates("c", keep="last")
        conn.executemany(
            "INSERT INTO status (customer_id, tag, since, updated_at) VALUES (?, ?, ?, ?)",
            zip(last["c"], last["t"], last["as_of"], [NOW.isoformat()] * len(last), strict=True),
        )
        for index in range(days):
            day = FIRST + timedelta(days=index)
            conn.execute(
                "INSERT INTO batch_runs (run_id, as_of, status, started_at, finished_at, "
                "rules_only, summary) VALUES (?, ?, 'completed', ?, ?, 1, '{\"scores\": 1}')",
                (f"run-{day}", day.isoformat(), NOW.isoformat(), NOW.isoformat()),
            )
            write_scores(root / "scores", day, f"run-{day}", _scores(rng, ids, day))
    return DashboardSource(
        StateStore(f"sqlite:///{root / 'state.db'}", scores_dir=root / "scores"),
        root / "customers.parquet", root / "events.parquet", root, load_rules(None),
    )  # fmt: skip


def _scores(rng: np.random.Generator, ids: np.ndarray, day: date) -> pd.DataFrame:
    n = len(ids)
    p = rng.random(n)
    return pd.DataFrame({
        "customer_id": ids, "as_of": pd.Timestamp(day), "p_churn": p, "p_low": p * 0.9,
        "p_high": np.minimum(p * 1.1, 1), "confidence": rng.random(n),
        "priority": rng.choice(["P1", "P2", "P3", "P4"], n), "action": "call",
        "control": rng.random(n) < 0.1, "value_at_risk": p * 100, "model_version": "1",
        "run_id": f"run-{day}", "campaign_id": None, "channel": None, "behaviour_tags": None,
        "expected_months": 12 * (1 - p), "projected_value": 1000 * (1 - p),
    })  # fmt: skip


def timed(label: str, call) -> float:
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.3f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lstep-dash-") as scratch:
        start = time.perf_counter()
        source = build(Path(scratch), args.learners, args.days)
        print(f"built {args.learners:,} learners x {args.days} days in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        cache, links = DashboardCache(source, lambda: NOW), Links("/dashboard")
        filtered = DashboardFilters(tier="PT_001", tag="ST_001", cohort="2026-01")
        timed(
            "overview, cold (reads the store)",
            lambda: overview_page(cache, DashboardFilters(), links),
        )
        timed("overview, warm", lambda: overview_page(cache, DashboardFilters(), links))
        timed(
            "overview, 3 filters, first (KPI trend)", lambda: overview_page(cache, filtered, links)
        )
        timed("overview, 3 filters, again", lambda: overview_page(cache, filtered, links))
        timed("calls, sort priority", lambda: calls_page(cache, links))
        timed(
            "calls, search + sort p_churn",
            lambda: calls_page(cache, links, search="0042", sort="p_churn"),
        )
        timed("learner", lambda: learner_page(source.store, "S000000042", links))
        time_value_and_model(source, Path(scratch), timed, NOW)
        source.store.close()


if __name__ == "__main__":
    main()
