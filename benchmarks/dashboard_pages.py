"""Server time of each dashboard page on a synthetic store of N learners (issue 17: <= 1 s at 1M).

A store is synthesised fast (no simulation, no model): N customers over three tiers and twelve
enrolment months, D daily batch runs, an audit log of ~1.4 transitions per learner (onboarding
into ST_001, then a move for ~30% and a second for ~10%), and each day's scores file. The pages
are built in-process (what the route handler runs): the first call reads the store's frames
(cold), the later ones aggregate over the cached frames (warm).

Two floors are timed in the same run, and each page is printed as a multiple of one: the store
read alone (the audit log's rows out of SQL, what any cold page must at least do) for the cold
page, and DuckDB's one pass over the cached audit log and last day's scores (a group-by of each,
what any page aggregating them must at least do) for the others.

Then the service's two background cases (``DashboardCache(background=True,
warm=warm_pages(...))``, the value and model pages' data added by ``dashboard_value_bench``):
a batch day lands (the request is served the previous frames while a thread reads the new ones
and warms every page), and the first request after a start (``start()`` reads and warms on a
thread; a page asked meanwhile answers "preparing" at once): the time to that answer, the time
until every page is ready (beside the store read's floor), and each page right after.

    .venv/bin/python benchmarks/dashboard_pages.py --learners 100000

``--only start`` builds the store with what the value and model pages read and times only the
start: first where its time goes, each stage run alone in order on one thread (the store read,
the KPIs' inputs, the KPIs' history, each page's warm; ``--profile FILE`` keeps a CPU-time
cProfile of those stages and prints its top), then the service's threaded start, then each page
after it.
``--store DIR`` keeps the built store in DIR and reuses it on the next run of the same size (a
1M store takes minutes to build); the start case never writes to it.

    .venv/bin/python benchmarks/dashboard_pages.py --only start --learners 1000000 \\
        --store benchmarks/.cache/dash-1m --profile benchmarks/.cache/start.prof
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sqlite3
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from dashboard_value_bench import add_value_inputs, stand_in, time_value_and_model

from serving.api.dashboard import page_response
from serving.app.dashboard import DashboardCache, DashboardSource, read_frames
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_flow_pages import cohorts_page, flows_page
from serving.app.dashboard_model_page import model_page
from serving.app.dashboard_pages import Links, calls_page, learner_page, overview_page
from serving.app.dashboard_value_page import value_page
from serving.app.dashboard_warm import page_parts, warm_pages
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
        "run_id": f"run-{day}", "campaign_id": None, "channel": None,
        "behaviour_tags": rng.choice(["", "BT_001", "BT_002,BT_006", "BT_001,BT_004,BT_008"], n),
        "expected_months": 12 * (1 - p), "projected_value": 1000 * (1 - p),
    })  # fmt: skip


def timed(label: str, call, floor: tuple[str, float] | None = None) -> float:
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    ratio = f"   {seconds / floor[1]:6.1f} x {floor[0]}" if floor else ""
    print(f"{label:<44} {seconds:8.3f} s{ratio}")
    return seconds


def scan_floor(cache: DashboardCache) -> None:
    """DuckDB's one pass over the cached audit log and the last day's scores."""
    frames = cache.frames()
    con = duckdb.connect()
    con.register("log", frames.transitions[["customer_id", "as_of", "to_tag"]])
    con.register("scores", frames.latest_scores[["priority", "value_at_risk"]])
    con.execute("SELECT to_tag, count(*), count(DISTINCT customer_id) FROM log GROUP BY ALL").df()
    con.execute("SELECT priority, sum(value_at_risk) FROM scores GROUP BY ALL").df()


def background_day(source: DashboardSource, cache: DashboardCache, links: Links) -> None:
    """A batch day lands (a transition is appended): with a background cache, the request
    that finds it is served the previous frames while a thread reads the new ones and warms
    every page."""
    served = DashboardCache(source, lambda: NOW, background=True, warm=_warm())
    served._frames = cache.frames()  # the service had read the history before the day
    with sqlite3.connect(source.store.url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "INSERT INTO transitions (customer_id, as_of, from_tag, to_tag, rule_id, actor, "
            "reason, created_at) VALUES ('S000000001', ?, 'ST_001', 'ST_002', 'R01', NULL, "
            "'synthetic', ?)",
            (cache.frames().latest_day.isoformat(), NOW.isoformat()),
        )
    timed("overview, history moved (background cache)",
          lambda: overview_page(served, DashboardFilters(), links))  # fmt: skip
    start = time.perf_counter()
    served._refresh.join()
    print(
        f"{'  (the refresh + warm behind it took)':<44} {time.perf_counter() - start:8.3f} s more"
    )
    every_page(served, links, "after the refresh")


def first_start(source: DashboardSource, links: Links, read: tuple[str, float]) -> None:
    """The service starts: its cache reads the history and warms every page on a thread, and a
    page asked meanwhile is answered "preparing" (503) at once."""
    served = DashboardCache(source, lambda: NOW, background=True, warm=_warm())
    start = time.perf_counter()
    served.start()
    answer = page_response(lambda: overview_page(served, DashboardFilters(), links))
    waited = time.perf_counter() - start
    print(f"{f'start: first request answered {answer.status_code}':<44} {waited:8.3f} s")
    served._refresh.join()
    ready = time.perf_counter() - start
    print(
        f"{'start: every page ready after':<44} {ready:8.3f} s   {ready / read[1]:6.1f} x {read[0]}"
    )
    every_page(served, links, "after the start")


def every_page(cache: DashboardCache, links: Links, when: str) -> None:
    everyone = DashboardFilters()
    pages = {
        "overview": lambda: overview_page(cache, everyone, links),
        "cohorts": lambda: cohorts_page(cache, everyone, links),
        "flows": lambda: flows_page(cache, everyone, links),
        "value": lambda: value_page(cache, everyone, links),
        "model": lambda: model_page(cache, stand_in(FIRST), links),  # type: ignore[arg-type]
    }
    for page, render in pages.items():
        timed(f"{page}, {when}", render)


def _warm():
    champions = stand_in(FIRST)
    return warm_pages(lambda: champions)  # type: ignore[arg-type,return-value]


def source_at(root: Path) -> DashboardSource:
    """The source of a store ``build`` wrote at ``root``."""
    return DashboardSource(
        StateStore(f"sqlite:///{root / 'state.db'}", scores_dir=root / "scores"),
        root / "customers.parquet", root / "events.parquet", root, load_rules(None),
    )  # fmt: skip


def kept_store(root: Path, learners: int, days: int) -> DashboardSource:
    """The store at ``root`` with the value and model pages' inputs, built when ``root`` holds
    none of this size (a stamp file says what was built)."""
    stamp = root / "built.json"
    size = {"learners": learners, "days": days}
    if stamp.exists() and json.loads(stamp.read_text()) == size:
        print(f"reusing the store at {root}")
        return source_at(root)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} holds something else than a store of {size}: remove it first")
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    source = build(root, learners, days)
    add_value_inputs(source, root)
    source.store.close()
    stamp.write_text(json.dumps(size))
    print(f"built {learners:,} learners x {days} days in {time.perf_counter() - start:.1f} s")
    return source_at(root)


def start_stages(source: DashboardSource, profile: Path | None) -> dict[str, float]:
    """What a start does (``DashboardCache._read_ahead`` then ``warm_pages``), each stage alone
    in order on this thread: wall and CPU seconds of each, a cProfile of all when asked."""
    cache = DashboardCache(source, lambda: NOW)
    champions = stand_in(FIRST)
    # CPU time, not wall: on a shared machine a wall profile charts waits for a core as cost.
    profiler = cProfile.Profile(time.process_time) if profile else None
    seconds: dict[str, float] = {}

    def stage(name: str, call) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        result = call()
        if profiler:
            profiler.disable()
        seconds[name] = time.perf_counter() - wall
        print(f"{'  stage: ' + name:<44} {seconds[name]:8.3f} s  "
              f"{time.process_time() - cpu:7.3f} s CPU")  # fmt: skip
        return result

    frames = stage("store read", lambda: read_frames(source, source.store.audit_head()))
    stage("KPI inputs", lambda: cache._load_inputs(frames))
    stage("KPI history", lambda: cache._load_history(frames))
    with frames.keeping():
        for page, compute in page_parts(cache, frames, lambda: champions).items():  # type: ignore[arg-type,return-value]
            stage(f"warm {page}", compute)
    print(f"{'  stages in all':<44} {sum(seconds.values()):8.3f} s")
    if profiler and profile:
        profiler.dump_stats(profile)
        pstats.Stats(str(profile)).sort_stats("cumulative").print_stats(40)
    return seconds


def only_start(args: argparse.Namespace) -> None:
    """The start case alone, on a kept store (``--store``) or a scratch one."""
    with tempfile.TemporaryDirectory(prefix="lstep-dash-") as scratch:
        root = args.store or Path(scratch) / "store"
        source = kept_store(root, args.learners, args.days)
        links = Links("/dashboard")
        read = (
            "store read",
            timed("floor: the audit log's store read", source.store.transitions_frame),
        )
        print("where a start's time goes (each stage alone, in order):")
        start_stages(source, args.profile)
        first_start(source, links, read)
        source.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--only", choices=["start"], help="time only this case")
    parser.add_argument("--store", type=Path, help="keep (and reuse) the built store here")
    parser.add_argument("--profile", type=Path, help="cProfile the start's stages to this file")
    args = parser.parse_args()
    if args.only == "start":
        only_start(args)
        return
    with tempfile.TemporaryDirectory(prefix="lstep-dash-") as scratch:
        start = time.perf_counter()
        source = build(Path(scratch), args.learners, args.days)
        print(f"built {args.learners:,} learners x {args.days} days in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        cache, links = DashboardCache(source, lambda: NOW), Links("/dashboard")
        filtered = DashboardFilters(tier="PT_001", tag="ST_001", cohort="2026-01")
        read = (
            "store read",
            timed("floor: the audit log's store read", source.store.transitions_frame),
        )
        timed(
            "overview, cold (reads the store)",
            lambda: overview_page(cache, DashboardFilters(), links),
            read,
        )
        scan = (
            "DuckDB scan",
            timed("floor: DuckDB scan of log + scores", lambda: scan_floor(cache)),
        )
        timed("overview, warm", lambda: overview_page(cache, DashboardFilters(), links), scan)
        timed(
            "overview, 3 filters, first (KPI trend)",
            lambda: overview_page(cache, filtered, links),
            scan,
        )
        timed("overview, 3 filters, again", lambda: overview_page(cache, filtered, links), scan)
        tier = DashboardFilters(tier="PT_002")
        timed(
            "overview, 1 filter (a third), first", lambda: overview_page(cache, tier, links), scan
        )
        timed("calls, sort priority", lambda: calls_page(cache, links), scan)
        timed(
            "calls, search + sort p_churn",
            lambda: calls_page(cache, links, search="0042", sort="p_churn"),
            scan,
        )
        timed("learner", lambda: learner_page(source.store, "S000000042", links), scan)
        flow_pages(source, links)
        time_value_and_model(source, Path(scratch), timed, NOW)
        background_day(source, cache, links)
        first_start(source, links, read)
        source.store.close()


def flow_pages(source: DashboardSource, links: Links) -> None:
    """The cohorts and flows pages on a cache of their own: cold reads the store's frames."""
    cache = DashboardCache(source, lambda: NOW)
    filtered = DashboardFilters(tier="PT_001", behaviour="BT_002")
    everyone = DashboardFilters()
    timed("cohorts, cold (reads the store)", lambda: cohorts_page(cache, everyone, links))
    timed("cohorts, warm", lambda: cohorts_page(cache, everyone, links))
    timed("cohorts, tier + behaviour, first", lambda: cohorts_page(cache, filtered, links))
    timed("cohorts, tier + behaviour, again", lambda: cohorts_page(cache, filtered, links))
    cold = DashboardCache(source, lambda: NOW)
    timed("flows, cold (reads the store)", lambda: flows_page(cold, everyone, links))
    timed("flows, warm", lambda: flows_page(cold, everyone, links))
    timed("flows, rule R01 + tier + behaviour, first",
          lambda: flows_page(cold, filtered, links, rule="R01"))  # fmt: skip
    timed("flows, rule R01 + tier + behaviour, again",
          lambda: flows_page(cold, filtered, links, rule="R01"))  # fmt: skip


if __name__ == "__main__":
    main()
