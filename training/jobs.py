"""``TrainJob``: ``lstep train`` as a frozen, typed job (built by the CLI or read from YAML).

The job holds what to train on and how; where MLflow lives (``tracking_uri``), the model's name
and the time come from the caller when it runs, as for the serving jobs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from training.pipeline import TrainResult, train


class TrainJob(BaseModel):
    """Tune, train, calibrate, evaluate and register a churn model; promote it if it wins.

    Attributes:
        events, customers: the event log (parquet or CSV).
        labels: bring-your-own labels (its (customer_id, as_of) rows are the rows).
        mapping: a mapping YAML for a foreign log.
        truth: the simulator's truth.parquet, for the oracle row.
        horizon_days: the churn window W.
        every_days: days between observation dates.
        trials: Optuna trials; ``timeout``: seconds after which no new trial starts.
        experiment: MLflow experiment name.
        seed: seeds tuning, LightGBM and the plots.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: Path
    customers: Path
    labels: Path | None = None
    mapping: Path | None = None
    truth: Path | None = None
    horizon_days: int = Field(default=30, ge=1)
    every_days: int = Field(default=7, ge=1)
    trials: int = Field(default=30, ge=1)
    timeout: float | None = None
    experiment: str = "lstep-churn"
    seed: int = 0

    def run(
        self, *, tracking_uri: str, model_name: str, now: datetime, console: Console | None = None
    ) -> TrainResult:
        """Train and register (see ``training.pipeline.train``)."""
        options: dict[str, Any] = self.model_dump(exclude={"events", "customers"})
        return train(
            self.events,
            self.customers,
            tracking_uri=tracking_uri,
            model_name=model_name,
            now=now,
            console=console,
            **options,
        )


__all__ = ["TrainJob"]
