"""Builders for the scoring and batch tests: a small simulated log and one champion trained on it.

The champion is made the way production makes one (``training.pipeline.train``, two Optuna
trials) into an MLflow SQLite store under a temporary LSTEP_HOME; tests only ever load it by its
``champion`` alias. The log is short (500 learners x 150 days), so the label horizon is 14 days:
with 30 days, three purged slices of a 150-day log leave no training dates.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from rich.console import Console

from features.catalog import load_catalog
from features.simulator import SimulationConfig, simulate
from features.validation import load_valid_inputs
from rules import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset
from serving.infra.champion import Champion
from serving.infra.rulesets import load_rules
from tests.rules.casebook import with_casebook_points

POPULATION = SimulationConfig(customers=500, days=150, seed=5, truth_share=0.0)
NOW = datetime(2026, 6, 15, 2, tzinfo=UTC)
"""The batch's clock: after the simulated log (2026-01-01 + 150 days = 2026-05-31)."""
FIRST_DAY = date(2026, 5, 10)
"""A batch day with 130 days of history before it."""


@dataclass(frozen=True)
class SimulatedLog:
    """The simulated files and their validated frames."""

    events_path: Path
    customers_path: Path
    events: pd.DataFrame
    customers: pd.DataFrame


def simulate_log(out_dir: Path, config: SimulationConfig = POPULATION) -> SimulatedLog:
    """Simulate ``config`` into ``out_dir`` and validate it once."""
    simulate(config, out_dir)
    events_path, customers_path = out_dir / "events.parquet", out_dir / "customers.parquet"
    events, customers = load_valid_inputs(events_path, customers_path, now=NOW)
    return SimulatedLog(events_path, customers_path, events, customers)


def train_champion(log: SimulatedLog, home: Path) -> str:
    """Train and register a champion under ``home``; return the MLflow tracking URI."""
    from training.jobs import TrainJob  # tests only: serving code never imports training
    from training.pipeline import train

    home.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        job = TrainJob(
            events=log.events_path,
            customers=log.customers_path,
            trials=2,
            every_days=7,
            horizon_days=14,
            threads=1,
        )
        train(
            job,
            tracking_uri=tracking_uri,
            now=NOW,
            console=Console(quiet=True),
            artifact_location=str(home / "mlartifacts"),
        )
    finally:  # train sets the process-wide URIs; leave other tests the defaults they had
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return tracking_uri


def run_batch_day(
    day: date,
    log: SimulatedLog,
    store: Any,
    champion: Any,
    ruleset: RuleSet,
    *,
    run_id: str,
    data_dir: Path | None = None,
    **options: Any,
) -> Any:
    """One batch day on the validated log, as ``lstep score`` runs it (``options``: dry_run,
    replace)."""
    from serving.app.batch import BatchContext, BatchInputs, Models, run_day

    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    context = BatchContext(
        store=store, models=Models(champion, ruleset), run_id=run_id, now=NOW, data_dir=data_dir
    )
    return run_day(day, inputs, context, **options)


def assert_same(actual, expected) -> None:
    """Equal records, numbers to 1e-12: SHAP sums of a batch may differ from a lone row's in the
    last bit (LightGBM adds the trees' contributions in another order)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for item, wanted in zip(actual, expected, strict=True):
            assert_same(item, wanted)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)
    else:
        assert actual == expected


def limited_ruleset(directory: Path, *, personal_outreach_per_day: int) -> RuleSet:
    """The packaged rules with another daily capacity for personal outreach."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tags.yaml", "transitions.yaml", "interventions.yaml"):
        with resources.as_file(resources.files("rules").joinpath(name)) as source:
            shutil.copy(source, directory / name)
    path = directory / "interventions.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["capacity"]["personal_outreach_per_day"] = personal_outreach_per_day
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    known = [*load_catalog().names, *MODEL_SCORE_COLUMNS]
    return with_casebook_points(load_ruleset(directory, known_features=known))


def packaged_ruleset(champion: Champion | None = None) -> RuleSet:
    """The packaged rules, loaded the way the batch job and the service load them.

    With a champion, its operating points resolve the rules (``load_rules(champion=...)``);
    without, the casebook's (``tests.rules.casebook.CASEBOOK_POINTS``: the thresholds the
    hand-made scores of the tests were written around).
    """
    if champion is not None:
        return load_rules(champion=champion)
    loaded = load_ruleset(None, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])
    return with_casebook_points(loaded)
