"""Benchmark: the batch's plan stage of a captured day, replayed alone (issue 14).

    .venv/bin/python benchmarks/plan_day.py capture --customers 200000 --out DIR
    .venv/bin/python benchmarks/plan_day.py replay --out DIR [--day steady|first]
        [--repeat 3] [--profile FILE] [--dump FILE.pkl]
    .venv/bin/python benchmarks/plan_day.py compare A.pkl B.pkl

``capture`` runs ``batch_scale.py``'s days as ``answers_day.py capture`` does (a first load,
the day after it, the dispatcher's effect, then the steady day) and saves, for the first and
the steady day, the store as it stood before the day (``DIR/<day>/before.db``) and what the
batch handed ``plan_day_campaigns`` (``plan_in.pkl``: the day, its decisions, its features and
the rules). ``replay`` times ``plan_day_campaigns`` on a copy of that store, in CPU seconds
(``time.process_time``) and wall, ``--repeat`` times; run it with ``PYTHONPATH`` set to another
checkout to A/B the code on the same day, and ``compare`` the plans two replays dumped: the
planned messages' frame (every column, dtype and row order) and the cancelled pairs.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import answers_day
import batch_scale


def _capture_day(population: str, out: str, tracking_uri: str, as_of, run_id: str) -> dict:
    """``batch_scale._batch_day`` with the store before the day and the plan's inputs saved."""
    import serving.app.batch_write as write_module

    original = write_module.plan_day_campaigns

    def plan_day_campaigns(assessment, store, planner, **kwargs):
        day = {"as_of": assessment.as_of, "decisions": assessment.decisions,
               "features": assessment.features, "planner": planner}  # fmt: skip
        with open(Path(out) / "plan_in.pkl", "wb") as file:
            pickle.dump(day, file)
        return original(assessment, store, planner, **kwargs)

    write_module.plan_day_campaigns = plan_day_campaigns
    state = Path(out).parent / "state.db"
    if state.exists():
        shutil.copy(state, Path(out) / "before.db")
    result = batch_scale._batch_day(population, f"sqlite:///{state}", tracking_uri, as_of,
                                    run_id, "duckdb")  # fmt: skip
    if not (Path(out) / "before.db").exists():  # the first day: an empty store, migrated
        from serving.infra.store import StateStore

        with StateStore(f"sqlite:///{Path(out) / 'before.db'}"):
            pass
    return result


def capture(args: argparse.Namespace) -> None:
    """``answers_day.py capture``'s days, saving the plan's inputs (``_capture_day``)."""
    answers_day.capture(args, _capture_day)


def replay(args: argparse.Namespace) -> None:
    from serving.app.day_campaigns import plan_day_campaigns
    from serving.infra.store import StateStore

    with open(Path(args.out) / args.day / "plan_in.pkl", "rb") as file:
        day = pickle.load(file)
    assessment = SimpleNamespace(
        as_of=day["as_of"], decisions=day["decisions"], features=day["features"]
    )
    plan = None
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "before.db"
        shutil.copy(Path(args.out) / args.day / "before.db", db)
        with StateStore(f"sqlite:///{db}") as store:
            for _ in range(args.repeat):
                plan, cpu, wall = answers_day.timed(
                    lambda: plan_day_campaigns(assessment, store, day["planner"]), args.profile
                )
                print(f"plan  cpu {cpu:6.2f} s  wall {wall:6.2f} s  messages "
                      f"{len(plan.messages):,}  cancelled {len(plan.cancels):,}",
                      flush=True)  # fmt: skip
    if args.dump and plan is not None:
        with open(args.dump, "wb") as file:
            pickle.dump({"messages": plan.messages, "cancelled": plan.cancels}, file)


def compare(args: argparse.Namespace) -> None:
    """The planned messages (values, dtypes, order, index) and the cancelled pairs of two
    dumped plans."""
    import pandas as pd

    with open(args.out, "rb") as left_file, open(args.other, "rb") as right_file:
        left, right = pickle.load(left_file), pickle.load(right_file)
    same = True
    for name in ("messages", "cancelled"):
        try:
            pd.testing.assert_frame_equal(left[name], right[name], check_exact=True)
            print(f"{name}: {len(left[name]):,} rows, equal (values, dtypes, order)")
        except AssertionError as error:
            same = False
            print(f"{name}: differ: {error}")
    sys.exit(0 if same else 1)


def main() -> None:
    args = answers_day.arguments(__doc__, "plan", "pickle")
    {"capture": capture, "replay": replay, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
