"""``TrainJob``: ``lstep train`` as a frozen, typed job (built by the CLI or read from YAML).

The job holds what to train on and how; where MLflow lives (``tracking_uri``), the model's name
and the time come from the caller when it runs, as for the serving jobs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from features.mapping import EventMapping

if TYPE_CHECKING:
    from training.pipeline import TrainResult

Table = Path | pd.DataFrame
"""A table of the contracts: a parquet/CSV file (what YAML and the CLI give) or a frame."""


class TrainJob(BaseModel):
    """Tune, train, calibrate, evaluate and register a churn model; promote it if it wins.

    Attributes:
        events, customers: the event log (parquet or CSV files, or frames).
        labels: bring-your-own labels (its (customer_id, as_of) rows are the rows).
        mapping: a mapping YAML for a foreign log.
        truth: the simulator's truth.parquet, for the oracle row.
        horizon_days: the churn window W.
        every_days: days between observation dates.
        trials: Optuna trials; ``timeout``: seconds after which no new trial starts.
        experiment: MLflow experiment name.
        seed: seeds tuning, LightGBM and the plots.
        threads: LightGBM threads.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    events: Table
    customers: Table
    labels: Table | None = None
    mapping: Path | EventMapping | None = None
    truth: Table | None = None
    horizon_days: int = Field(default=30, ge=1)
    every_days: int = Field(default=7, ge=1)
    trials: int = Field(default=30, ge=1)
    timeout: float | None = None
    experiment: str = "lstep-churn"
    seed: int = 0
    threads: int = Field(default=2, ge=1)

    def run(
        self, *, tracking_uri: str, model_name: str, now: datetime, console: Console | None = None
    ) -> TrainResult:
        """Train and register (``training.pipeline.train``)."""
        from training.pipeline import train

        return train(
            self, tracking_uri=tracking_uri, model_name=model_name, now=now, console=console
        )


__all__ = ["TrainJob"]
