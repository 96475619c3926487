"""Benchmark: the state store's part of a steady batch day, replayed alone (issue 14).

    .venv/bin/python benchmarks/store_day.py capture --customers 200000 --out DIR
    .venv/bin/python benchmarks/store_day.py replay --out DIR [--repeat 3] [--profile FILE]

``capture`` runs ``batch_scale.py``'s days (day 1, one unmeasured day, the dispatcher's effect)
into ``DIR/state.db`` and, on the steady day, saves the store as it stood before the day
(``DIR/before.db``) and what the batch handed the store (``DIR/day.pkl``: the ``BatchDay``,
decisions, scores and campaign plan). ``replay`` copies ``before.db`` and times, in CPU seconds
(``time.process_time``), what the batch asks the store on that day: the state before the day,
the pending pairs, ``apply_day`` and the state after it, ``--repeat`` times on fresh copies.
Run it with ``PYTHONPATH`` set to another checkout to A/B the store's code on the same day.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_scale


def _capture_day(population: str, out: str, tracking_uri: str, as_of, run_id: str) -> dict:
    """``batch_scale._batch_day`` with the store's ``apply_day`` inputs saved on the way."""
    from serving.infra.store import StateStore

    original = StateStore.apply_day

    def apply_day(self, batch, decisions, scores, plan=None):
        import sqlite3

        # The backup API, not a file copy: committed pages may still be in the WAL only.
        with (
            sqlite3.connect(Path(out) / "state.db") as src,
            sqlite3.connect(Path(out) / "before.db") as dst,
        ):
            src.backup(dst)
        with open(Path(out) / "day.pkl", "wb") as file:
            pickle.dump((batch, decisions, scores, plan), file)
        return original(self, batch, decisions, scores, plan)

    StateStore.apply_day = apply_day
    return batch_scale._batch_day(population, f"sqlite:///{out}/state.db", tracking_uri, as_of,
                                  run_id, "duckdb")  # fmt: skip


def capture(args: argparse.Namespace) -> None:
    population, _ = batch_scale._population(args.customers, args.days, args.seed)
    tracking_uri = batch_scale._champion_store()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'state.db'}"
    end = date(2026, 1, 1) + timedelta(days=args.days)  # batch_scale.py's measured day
    first = end - timedelta(days=2)
    inputs = (str(population), url, tracking_uri)
    batch_scale._in_child(batch_scale._batch_day, *inputs, first, "d1", "duckdb")
    batch_scale._mark_due_sent(url, first)
    batch_scale._in_child(batch_scale._batch_day, *inputs, first + timedelta(days=1), "w1",
                          "duckdb")  # fmt: skip
    batch_scale._mark_due_sent(url, end - timedelta(days=1))
    day = batch_scale._in_child(_capture_day, str(population), str(out), tracking_uri, end, "d2")
    print({key: value for key, value in day.items() if key != "stages"}, day["stages"])


def _replay_once(args: argparse.Namespace, day: tuple, scratch: Path) -> dict[str, float]:
    """One replay of the day on a fresh copy of ``before.db``: CPU seconds by call."""
    from serving.infra.store import StateStore

    batch, decisions, scores, plan = day
    db = scratch / "state.db"
    shutil.copy(Path(args.out) / "before.db", db)
    store = StateStore(f"sqlite:///{db}", scores_dir=scratch / "scores")
    marked = hasattr(store, "state_mark")  # the code before state_after read the state again
    results = {}

    def state_after():
        if marked:
            return store.state_after(batch.as_of, results["state before"], results["mark"])
        return store.state_frame(batch.as_of)

    calls = {
        "mark": lambda: store.state_mark() if marked else None,
        "state before": lambda: store.state_frame(batch.as_of),
        "pending pairs": lambda: store.pending_pairs(batch.as_of),
        "apply_day": lambda: store.apply_day(batch, decisions, scores, plan),
        "state after": state_after,
    }
    times = {}
    for name, call in calls.items():
        started = time.process_time()
        results[name] = call()
        times[name] = time.process_time() - started
    store.close()
    if args.dump:
        for name in ("state before", "pending pairs", "state after"):
            results[name].to_pickle(Path(args.dump) / f"{name.replace(' ', '_')}.pkl")
        summary = results["apply_day"].summary
        (Path(args.dump) / "summary.txt").write_text(repr(sorted(summary.items())))
    return times


def replay(args: argparse.Namespace) -> None:
    with open(Path(args.out) / "day.pkl", "rb") as file:
        day = pickle.load(file)
    for _ in range(args.repeat):
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        with tempfile.TemporaryDirectory() as scratch:
            times = _replay_once(args, day, Path(scratch))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        print("  ".join(f"{name} {seconds:5.2f}" for name, seconds in times.items()),
              f" total {sum(times.values()):5.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["capture", "replay"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile")
    parser.add_argument("--dump", help="directory to pickle the frames read into")
    args = parser.parse_args()
    capture(args) if args.mode == "capture" else replay(args)


if __name__ == "__main__":
    main()
