"""A small seeded simulated population for the end-to-end training tests, and a foreign copy of it.

The population (2000 learners x 240 days, full truth) is big enough for three purged time slices
with weekly observation dates and small enough to simulate in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from features.simulator import SimulationConfig, simulate

POPULATION = SimulationConfig(customers=2000, days=240, seed=11, truth_paths=64)
FOREIGN_TYPES = {
    "login": "session",
    "lesson_done": "lesson_completed",
    "quit": "subscription_cancelled",
}


@dataclass(frozen=True)
class SimulatedLog:
    events: Path
    customers: Path
    truth: Path


def simulate_population(out_dir: Path, config: SimulationConfig = POPULATION) -> SimulatedLog:
    """Simulate ``config`` into ``out_dir`` and return the three file paths."""
    simulate(config, out_dir)
    return SimulatedLog(
        out_dir / "events.parquet", out_dir / "customers.parquet", out_dir / "truth.parquet"
    )


@dataclass(frozen=True)
class ForeignLog:
    events: Path
    customers: Path
    labels: Path
    mapping: Path
    label_rows: int


def foreign_copy(log: SimulatedLog, out_dir: Path) -> ForeignLog:
    """The simulated log as another company would export it, plus a mapping and labels file.

    Only sessions, lessons and cancellations, under foreign names and column names, with no
    duration, channel or item columns; labels are the simulator's realised labels at its truth
    dates (the rows to learn from).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    canonical_to_foreign = {canonical: foreign for foreign, canonical in FOREIGN_TYPES.items()}
    events = pd.read_parquet(log.events, columns=["customer_id", "ts", "event_type"])
    events = events[events["event_type"].isin(canonical_to_foreign)]
    events = events.assign(event_type=events["event_type"].map(canonical_to_foreign))
    events = events.rename(columns={"customer_id": "user_id", "ts": "timestamp"})
    events.to_parquet(out_dir / "export.parquet", index=False)
    truth = pd.read_parquet(log.truth, columns=["customer_id", "as_of", "y"]).dropna()
    labels = truth.rename(columns={"y": "churned"}).astype({"churned": "int8"})
    labels.to_csv(out_dir / "labels.csv", index=False)
    mapping = {
        "columns": {"user_id": "customer_id", "timestamp": "ts"},
        "event_types": FOREIGN_TYPES,
    }
    (out_dir / "mapping.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return ForeignLog(
        out_dir / "export.parquet",
        log.customers,
        out_dir / "labels.csv",
        out_dir / "mapping.yaml",
        len(labels),
    )
