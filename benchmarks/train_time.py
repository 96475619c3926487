"""Benchmark: seconds per stage of ``lstep train`` on 20k learners x 240 days with 30 Optuna trials.

Target (issue 3): the whole training <= 10 minutes on 2 cores. The simulated population is cached
under ``benchmarks/.cache`` (git-ignored) so that reruns time training only; the MLflow store is a
fresh SQLite file in a temporary directory, so every run registers version 1 from scratch.

    .venv/bin/python benchmarks/train_time.py [--customers 20000] [--days 240] [--trials 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from features.simulator import SimulationConfig, simulate
from training.pipeline import train

CACHE = Path(__file__).resolve().parent / ".cache"
TARGET_SECONDS = 600.0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--truth-share", type=float, default=0.25)
    return parser.parse_args()


def _simulated(config: SimulationConfig, console: Console) -> tuple[Path, float]:
    """The cached population directory for ``config`` (simulated if absent), and seconds spent."""
    name = f"sim-{config.customers}x{config.days}-seed{config.seed}-truth{config.truth_share}"
    directory = CACHE / name
    if (directory / "meta.json").is_file():
        console.print(f"simulated population: cached in {directory}")
        return directory, 0.0
    started = time.perf_counter()
    summary = simulate(config, directory)
    console.print(f"simulated {summary.customers} learners, {summary.events:,} events")
    return directory, time.perf_counter() - started


def _report(console: Console, stage_seconds: dict[str, float], wall: float) -> None:
    table = Table(title="train_time benchmark: seconds per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in stage_seconds.items():
        table.add_row(stage, f"{seconds:.1f}")
    table.add_row("[bold]train() wall clock[/]", f"[bold]{wall:.1f}[/]")
    verdict = "within" if wall <= TARGET_SECONDS else "OVER"
    table.caption = f"{verdict} the {TARGET_SECONDS:.0f} s target"
    console.print(table)


def main() -> None:
    """Simulate (or reuse) the population, train once, print seconds per stage."""
    arguments = _arguments()
    console = Console()
    config = SimulationConfig(
        customers=arguments.customers,
        days=arguments.days,
        seed=arguments.seed,
        truth_share=arguments.truth_share,
    )
    directory, simulate_seconds = _simulated(config, console)
    with tempfile.TemporaryDirectory(prefix="lstep-bench-") as scratch:
        started = time.perf_counter()
        result = train(
            directory / "events.parquet",
            directory / "customers.parquet",
            truth=directory / "truth.parquet",
            trials=arguments.trials,
            tracking_uri=f"sqlite:///{Path(scratch) / 'mlflow.db'}",
            now=datetime.now(UTC),
            seed=arguments.seed,
            threads=arguments.threads,
            console=console,
        )
        wall = time.perf_counter() - started
    stages = {"simulate (not in train)": simulate_seconds, **result.stage_seconds}
    console.print(f"rows: {result.data['data.rows']:,}; split: {result.split}")
    _report(console, stages, wall)


if __name__ == "__main__":
    main()
