"""Server time of the dashboard's learner page on a store of N learners (issue 17: <= 1 s).

The store is ``benchmarks/dashboard_pages.py``'s synthetic one (N learners, D batch days, the
audit log, each day's scores file), plus two campaign messages per learner in the outbox and the
latest day's feature snapshot: the rows of a real workspace's snapshot (``--home``, e.g. the demo's
``.lstep`` after ``make demo``) repeated under the synthetic ids, explained by that workspace's
champion version. The page is built in-process (what the route handler runs): the first view of a
learner reads the snapshot row and runs TreeSHAP (cold), a second view reuses the explanation.

    .venv/bin/python benchmarks/dashboard_learner.py --learners 100000 --home .lstep
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from serving.app.dashboard_learner import learner_page
from serving.app.dashboard_pages import Links
from serving.app.dashboard_why import ReasonSource
from serving.infra.snapshots import batch_snapshots, write_feature_snapshot
from serving.infra.store import StateStore
from serving.settings import Settings

PAGES = Path(__file__).with_name("dashboard_pages.py")
VIEWED = 20


def _pages_module():
    spec = importlib.util.spec_from_file_location("dashboard_pages_bench", PAGES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _snapshot(home: Path, ids: np.ndarray, day) -> tuple[pd.DataFrame, str]:
    """The home's latest snapshot rows repeated under ``ids``, and its champion's version."""
    settings = Settings(home=home)
    snapshots = batch_snapshots(settings.data_path)
    if not snapshots:
        sys.exit(f"no feature snapshot under {settings.data_path}: run `make demo` first")
    source = pd.read_parquet(snapshots[-1][1])
    store = StateStore.from_settings(settings)
    version = store.scores_frame(snapshots[-1][0])["model_version"].dropna()
    store.close()
    if version.empty:
        sys.exit(f"{home}: its latest batch day was scored on the rules alone: no model")
    rows = source.iloc[np.arange(len(ids)) % len(source)].reset_index(drop=True)
    rows["customer_id"] = ids
    rows["as_of"] = pd.Timestamp(day).as_unit("us")
    return rows, str(version.iloc[0])


def _outbox(path: Path, ids: np.ndarray, day) -> None:
    """Two messages per learner: a sent first step and a planned second one."""
    now = "2026-07-01T00:00:00+00:00"
    rows = [
        (f"{c}-{s}", day.isoformat(), (day + timedelta(days=2 * s)).isoformat(), c, "CP_20",
         s, "email" if s == 0 else "in_app", "t", "", 0, "{}", "sent" if s == 0 else "pending",
         0, now if s == 0 else None, "bench", now)
        for c in ids for s in (0, 1)
    ]  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO outbox (message_id, planned_on, due_on, customer_id, campaign_id, step, "
            "channel, template_id, variant, control, context, state, tries, sent_at, run_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--home", type=Path, default=Path(".lstep"), help="a scored workspace")
    args = parser.parse_args()
    from serving.cli.explain_inputs import version_model
    from serving.infra.rulesets import load_rules

    with tempfile.TemporaryDirectory(prefix="lstep-learner-") as scratch:
        root, started = Path(scratch), time.perf_counter()
        source = _pages_module().build(root, args.learners, args.days)
        ids = np.array([f"S{i:09d}" for i in range(args.learners)])
        last = source.store.latest_batch_day()
        rows, version = _snapshot(args.home, ids, last)
        write_feature_snapshot(rows, root, last)
        _outbox(root / "state.db", ids, last)
        print(f"built {args.learners:,} learners in {time.perf_counter() - started:.1f} s")
        model = version_model(Settings(home=args.home), version)
        # The synthetic scores name version "1"; every version is this one model here.
        reasons = ReasonSource(root, lambda _version: model, deadline_s=None)
        catalogue, links = load_rules(None).campaigns, Links("/dashboard")
        viewed = [str(c) for c in np.random.default_rng(3).choice(ids, VIEWED, replace=False)]

        def view(customer_id: str) -> float:
            start = time.perf_counter()
            page = learner_page(
                source.store, customer_id, links, catalogue=catalogue, reasons=reasons,
                override_url="/override",
            )  # fmt: skip
            assert 'id="reasons"' in page and "CP_20" in page, customer_id
            return time.perf_counter() - start

        for label in ("first view (snapshot row + TreeSHAP)", "second view (kept)"):
            times = [view(customer_id) for customer_id in viewed]
            print(f"{label:<40} median {statistics.median(times):.3f} s, max {max(times):.3f} s")
        source.store.close()


if __name__ == "__main__":
    main()
