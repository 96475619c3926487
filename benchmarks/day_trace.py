"""Benchmark tool: where a kept store's measured day spends its time, call by call and thread by
thread (issue 14).

    .venv/bin/python benchmarks/day_trace.py --keep-store DIR [--function MODULE.NAME ...]

``batch_scale.py --keep-store DIR`` keeps the store as it stood before its measured day; this
runs that day once more, in this process, on a copy of the store, with each chosen function
wrapped: every call's thread, start and end are printed in the order they began, beside the
day's stages. A call that takes longer here than alone is waiting for a core or the GIL, and
the thread beside it says for what (how the scores file's id conversion was found holding the
GIL through the day's commit: its stored-tag read 0.82 s here against 0.2 s alone).

A function is named where the day looks it up: ``serving.infra.outbox_store.checked_decisions``
(imported by name there), not ``serving.core.planning.checked_decisions``; a method as
``module.Class.name``. Without ``--function`` the day's main calls (``DAY_FUNCTIONS``) are traced.
Run it with ``PYTHONPATH`` set to another checkout to trace that checkout's code.

``--first-load`` traces the kept population's first load instead: the day the kept store's
history began on (its measured day - ``history``), run into an empty store (the first batch
ever: every learner new and tagged, every tag campaign started).

The process's resident memory is sampled every ``RSS_EVERY_S`` meanwhile: each stage line
ends with its highest sample, and the day's peak is printed with the traced calls running at
that moment (what held the memory: the 5M first load peaks at 12.7-14.1 GiB).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_scale

DAY_FUNCTIONS = (
    "features.windows.day_window",
    "features.windows.FeatureDay.eligible",
    "features.windows.FeatureDay.features",
    "serving.app.batch.spine_of",
    "serving.core.assess.score_features",
    "serving.app.batch.cut_day",
    "serving.app.batch_write.write_feature_snapshot",
    "serving.app.batch_write._plan",
    "serving.app.batch_write.state_after_moves",
    "serving.app.batch_write.answers_table",
    "serving.app.batch_write.stage_answers",
    "serving.infra.outbox_store.checked_decisions",
    "serving.infra.outbox_store.score_rows",
    "serving.infra.store.write_scores",
    "serving.infra.store.read_tags_of",
    "serving.infra.store.StateStore._write_batch",
    "serving.infra.outbox_store.insert_messages",
    "serving.infra.outbox_store.cancel_pairs",
    "serving.app.batch.summarise",
)
"""The day's main calls, each where the day looks it up."""

RSS_EVERY_S = 0.05
"""How often the resident memory is sampled (``/proc/self/statm``)."""

Span = tuple[str, str, float, float]
"""A call's thread, function, start and end (seconds from the day's start)."""


def traced(path: str, spans: list[Span], origin: list[float]) -> None:
    """Wrap the function at ``path`` so that each call appends its span to ``spans``.

    Raises:
        SystemExit: no such module or attribute (naming the path).
    """
    owner, name = _owner(path)
    function = getattr(owner, name, None)
    if function is None:
        raise SystemExit(f"--function {path}: {name} is not an attribute of {owner!r}")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            ended = time.monotonic()
            thread = threading.current_thread().name
            spans.append((thread, name, began - origin[0], ended - origin[0]))

    setattr(owner, name, wrapper)


class RssSampler(threading.Thread):
    """Samples the process's resident memory (GiB) every ``RSS_EVERY_S`` until stopped, as
    (seconds from ``origin[0]``, GiB) pairs in ``samples``."""

    def __init__(self, origin: list[float]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.origin = origin
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.page_gib = os.sysconf("SC_PAGE_SIZE") / 2**30

    def run(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self.stopped.wait(RSS_EVERY_S):
                statm.seek(0)
                pages = int(statm.read().split()[1])
                self.samples.append((time.monotonic() - self.origin[0], pages * self.page_gib))

    def highest(self, began: float, ended: float) -> float:
        """The highest sample from ``began`` to ``ended`` (0.0: none taken then)."""
        return max((gib for at, gib in self.samples if began <= at <= ended), default=0.0)


def _owner(path: str) -> tuple[Any, str]:
    """The module or class holding the last part of ``path``, and that part."""
    holder, _, name = path.rpartition(".")
    try:
        return importlib.import_module(holder), name
    except ModuleNotFoundError:
        module, _, cls = holder.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls), name
        except (ModuleNotFoundError, AttributeError, ValueError):
            raise SystemExit(f"--function {path}: no module or class {holder}") from None


def _kept_population(store: Path) -> tuple[Path, date, int]:
    """The kept store's population (its log in the order it was run with), its measured day and
    the days of history before it."""
    kept = store / "kept-population.json"
    if not kept.exists():
        raise SystemExit(
            f"{store}: not a store kept by batch_scale.py --keep-store (no {kept.name})"
        )
    population_of = json.loads(kept.read_text())
    population, _ = batch_scale._population(
        population_of["customers"], population_of["days"], population_of["seed"]
    )
    log_order = population_of.get("log_order", "learner")  # kept before the option: learner
    measured = batch_scale.last_day(population_of["days"])
    return batch_scale.ordered_log(population, log_order), measured, population_of["history"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-store", type=Path, required=True)
    parser.add_argument("--function", action="append", help="MODULE.NAME to trace (repeatable)")
    parser.add_argument(
        "--first-load", action="store_true", help="trace the population's first load instead"
    )
    args = parser.parse_args()
    population, measured, history = _kept_population(args.keep_store)
    if args.first_load:
        measured -= timedelta(days=history)
    spans: list[Span] = []
    origin = [time.monotonic()]
    for path in args.function or DAY_FUNCTIONS:
        traced(path, spans, origin)
    tracking_uri = batch_scale._champion_store()
    with tempfile.TemporaryDirectory(prefix="lstep-day-trace-") as scratch:
        run = Path(scratch) / "store"
        if args.first_load:
            run.mkdir()
        else:
            batch_scale._copied(args.keep_store, run)
        origin[0] = time.monotonic()
        sampler = RssSampler(origin)
        sampler.start()
        try:
            day = batch_scale._batch_day(
                str(population), f"sqlite:///{run / 'state.db'}", tracking_uri, measured,
                "trace", "duckdb",
            )  # fmt: skip
        finally:
            sampler.stopped.set()
            sampler.join()
    _print_trace(day, spans, sampler, measured, origin[0])


def _print_trace(
    day: dict, spans: list[Span], sampler: RssSampler, measured: date, origin: float
) -> None:
    """The day's stages (each with its highest resident memory), its memory peak and the calls
    running then, and every traced call in the order they began."""
    print(f"day {measured}: {day['seconds']:.2f} s")
    for name, began, ended in day["spans"]:
        began, ended = began - origin, ended - origin
        highest = sampler.highest(began, ended)
        print(f"  stage {name:<10} {began:7.2f} {ended:7.2f}  rss <= {highest:5.2f} GiB")
    if sampler.samples:
        at, gib = max(sampler.samples, key=lambda sample: sample[1])
        running = [name for _, name, began, ended in spans if began <= at <= ended]
        print(
            f"  peak {gib:.2f} GiB at {at:.2f} s, during {', '.join(running) or 'no traced call'}"
        )
    for thread, name, began, ended in sorted(spans, key=lambda span: span[2]):
        print(f"  {thread[:16]:<16} {name:<28} {began:7.2f} {ended:7.2f} {ended - began:6.2f}")


if __name__ == "__main__":
    main()
