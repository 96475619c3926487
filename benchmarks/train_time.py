"""Benchmark: seconds per stage of ``lstep train`` on 20k learners x 240 days with 30 Optuna trials.

After the timings it prints what the time bought, at that size: the model's test-slice figures,
model/oracle (the simulator's true probabilities) and the brief's claim, "85% precision 14+ days
ahead" (``training.early_warning``), reached or not.

Target (issue 3): the whole training of 20k learners x 240 days with 30 trials <= 10 minutes on 2
cores; a run with other sizes prints its time, not a verdict. The simulated population is cached
under ``benchmarks/.cache`` (git-ignored, keyed by the simulator's code version) so that reruns time
training only; the MLflow store is a fresh SQLite file in a temporary directory, so every run
registers version 1 from scratch.

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
from targets import simulation_dir, verdict

from features.simulator import SimulationConfig, simulate
from training.early_warning import CLAIM_LEAD_DAYS
from training.evaluate import Evaluation
from training.jobs import TrainJob
from training.pipeline import train

TARGET_SECONDS = 600.0
TARGET_SIZE = (20_000, 240, 30)
"""customers, days and Optuna trials the target is stated for."""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=TARGET_SIZE[0])
    parser.add_argument("--days", type=int, default=TARGET_SIZE[1])
    parser.add_argument("--trials", type=int, default=TARGET_SIZE[2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--truth-share", type=float, default=0.25)
    return parser.parse_args()


def _simulated(config: SimulationConfig, console: Console) -> tuple[Path, float | None]:
    """The population directory for ``config`` and the seconds spent simulating it now.

    The seconds are None when the cache of this simulator code already had it.
    """
    name = f"sim-{config.customers}x{config.days}-seed{config.seed}-truth{config.truth_share}"
    directory = simulation_dir(name)
    if (directory / "meta.json").is_file():
        console.print(f"simulated population: cached in {directory}")
        return directory, None
    started = time.perf_counter()
    summary = simulate(config, directory)
    console.print(f"simulated {summary.customers} learners, {summary.events:,} events")
    return directory, time.perf_counter() - started


def _size(customers: int, days: int, trials: int) -> str:
    return f"{customers:,} learners x {days} days, {trials} trials"


def _report(
    console: Console, stage_seconds: dict[str, float | None], wall: float, size: str
) -> None:
    table = Table(title="train_time benchmark: seconds per stage", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in stage_seconds.items():
        table.add_row(stage, "cached" if seconds is None else f"{seconds:.1f}")
    table.add_row("[bold]train() wall clock[/]", f"[bold]{wall:.1f}[/]")
    table.caption = verdict(
        "train()",
        f"{wall:.0f} s (<= {TARGET_SECONDS:.0f})",
        met=wall <= TARGET_SECONDS,
        size=size,
        target_size=_size(*TARGET_SIZE),
    )
    console.print(table)


def _quality(console: Console, evaluation: Evaluation, size: str) -> None:
    """The model's headline figures, model/oracle and the claim's verdict at this size."""
    model = evaluation.table.loc["model"]
    ratios = {name: evaluation.ratios.get(name, float("nan")) for name in ("roc_auc", "pr_auc")}
    console.print(
        f"quality at {size}: ROC-AUC {model['roc_auc']:.3f} (model/oracle "
        f"{ratios['roc_auc']:.3f}), PR-AUC {model['pr_auc']:.3f} (model/oracle "
        f"{ratios['pr_auc']:.3f}), recall @ precision 0.85 "
        f"{model['recall_at_precision_85']:.3f} on {evaluation.rows:,} test rows"
    )
    early = evaluation.early_warning
    if early is None or "model" not in early.points:
        console.print("the early-warning claim was not measured (no calibration slice)")
        return
    row = early.table.loc[("model", CLAIM_LEAD_DAYS)]
    console.print(
        f"early warning {CLAIM_LEAD_DAYS} d: precision {row['precision']:.3f}, "
        f"recall {row['recall']:.3f}; {early.claim('model')}"
    )


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
        job = TrainJob(
            events=directory / "events.parquet",
            customers=directory / "customers.parquet",
            truth=directory / "truth.parquet",
            trials=arguments.trials,
            seed=arguments.seed,
            threads=arguments.threads,
        )
        result = train(
            job,
            tracking_uri=f"sqlite:///{Path(scratch) / 'mlflow.db'}",
            now=datetime.now(UTC),
            console=console,
        )
        wall = time.perf_counter() - started
    stages = {"simulate (not in train)": simulate_seconds, **result.stage_seconds}
    console.print(f"rows: {result.data['data.rows']:,}; split: {result.split}")
    size = _size(arguments.customers, arguments.days, arguments.trials)
    _report(console, stages, wall, size)
    _quality(console, result.evaluation, size)


if __name__ == "__main__":
    main()
