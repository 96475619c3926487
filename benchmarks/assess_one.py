"""Benchmark: one learner on a day that is not the batch day, step by step (issue 13).

The service's on-demand ``/score`` path without HTTP: the learner's features from the stored
events (``serving.infra.learners.day_features``), their state on the day (``state_frame``, with
its pandera pass, and ``state_of``, the rows of the compiled query), then ``assess`` (score,
decide, explain) and the record, with the rules engine's input checks on (every other caller)
and off (the online scorer, ``check_inputs=False``). Prints the median and p99 of each step over
``--repeats`` asks, cycling through learners, the steps taking turns on each ask, and the
median CPU time (less sensitive than wall time to other work on shared cores); prints, asserts
nothing.

The workspace is ``serve_latency``'s (simulated learners, a champion trained with two Optuna
trials, one batch day), built under ``benchmarks/.cache`` when absent; ``--home`` reads another
one instead. Its state database is copied to a temporary directory first: the benchmark never
writes into a workspace it reads.

    .venv/bin/python benchmarks/assess_one.py [--home PATH] [--repeats 300]

Budget (issue 13): state + assess + record of one learner <= ~8 ms, so that the whole request
(HTTP, features, state, assess) reaches p50 <= 15 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from serving.core.asks import LearnerAsk
from serving.core.assess import AssessOptions, assess
from serving.infra.champion import load_champion
from serving.infra.learners import LearnerData, day_features
from serving.infra.rulesets import load_rules
from serving.infra.store import StateStore
from serving.settings import Settings

LEARNERS = 50
"""Learners the asks cycle through (each step is timed on the same learner in turn)."""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a served workspace to read (not written)")
    parser.add_argument("--repeats", type=int, default=300, help="asks per step")
    return parser.parse_args()


def _home(arguments: argparse.Namespace, console: Console) -> Path:
    """The workspace to read: ``--home``, or serve_latency's cached one (built when absent)."""
    if arguments.home is not None:
        return arguments.home
    from serve_latency import _workspace  # the same cache: one workspace for both benchmarks

    return _workspace(1000, 150, 0, console).settings.home


def _timed(
    steps: dict[str, Callable[[str], object]], ids: list[str], repeats: int
) -> dict[str, np.ndarray]:
    """Wall and CPU milliseconds of each step per ask, as (repeats x 2) arrays.

    The steps take turns on each ask, so that load from other processes on shared cores falls
    on all of them alike; one warm-up ask per learner first.
    """
    for step in steps.values():
        for customer_id in ids:
            step(customer_id)
    times = {name: np.empty((repeats, 2)) for name in steps}
    for index in range(repeats):
        customer_id = ids[index % len(ids)]
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step(customer_id)
            times[name][index] = (time.perf_counter() - wall, time.process_time() - cpu)
    return {name: values * 1000 for name, values in times.items()}


def main() -> None:
    arguments, console = _arguments(), Console()
    home = _home(arguments, console)
    settings = Settings(home=home)
    with tempfile.TemporaryDirectory(prefix="assess-one-") as scratch:
        shutil.copy(settings.home / "state.db", Path(scratch) / "state.db")
        store = StateStore(f"sqlite:///{Path(scratch) / 'state.db'}", auto_migrate=False)
        try:
            figures = _measure(settings, store, arguments.repeats)
        finally:
            store.close()
    _report(console, figures, home)


def _measure(settings: Settings, store: StateStore, repeats: int) -> dict[str, np.ndarray]:
    """Each step's times for one learner of the day after the batch day."""
    data = LearnerData.open(settings.data_path)
    champion = load_champion(settings.tracking_uri)
    ruleset = load_rules(champion=champion)
    as_of = store.latest_batch_day() + timedelta(days=1)
    now = datetime.now(UTC)
    features = {}
    for customer_id in (key.decode("utf-8") for key in data.customers.ids):
        frame = day_features([LearnerAsk(customer_id, as_of, now)], data).frame
        if not frame.empty:
            features[customer_id] = frame
        if len(features) == LEARNERS:
            break
    ids = list(features)
    states = {customer_id: store.state_of([customer_id], as_of) for customer_id in ids}

    def assessed(customer_id: str, check_inputs: bool) -> None:
        options = AssessOptions(explain=True, check_inputs=check_inputs)
        assessment = assess(
            features[customer_id], champion=champion, ruleset=ruleset,
            state=states[customer_id], as_of=as_of, options=options,
        )  # fmt: skip
        assessment.records([customer_id])

    def online(customer_id: str) -> None:
        states[customer_id] = store.state_of([customer_id], as_of)
        assessed(customer_id, False)

    steps = {
        "features (day_features)": lambda c: day_features([LearnerAsk(c, as_of, now)], data),
        "state: state_frame": lambda c: store.state_frame(as_of, customer_ids=[c]),
        "state: state_of": lambda c: store.state_of([c], as_of),
        "assess + record, checks on": lambda c: assessed(c, True),
        "assess + record, checks off": lambda c: assessed(c, False),
        "state_of + assess + record (online)": online,
    }
    return _timed(steps, ids, repeats)


def _report(console: Console, figures: dict[str, np.ndarray], home: Path) -> None:
    table = Table(title=f"one learner, the day after the batch day ({home.name})")
    for column in ("step", "p50 ms", "p99 ms", "CPU p50 ms"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name, times in figures.items():
        wall, cpu = times[:, 0], times[:, 1]
        figures_ms = (np.median(wall), np.percentile(wall, 99), np.median(cpu))
        table.add_row(name, *(f"{value:.2f}" for value in figures_ms))
    console.print(table)
    on = np.median(figures["assess + record, checks on"][:, 0])
    off = np.median(figures["assess + record, checks off"][:, 0])
    console.print(f"assess + record p50: checks on {on:.2f} ms, off {off:.2f} ms ({on / off:.1f}x)")


if __name__ == "__main__":
    main()
