"""Model commands: ``train`` and ``promote`` (the only commands that reach ``training``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.common import (
    ConfigOpt,
    MappingOpt,
    build_job,
    console,
    friendly_errors,
    settings,
)
from serving.settings import utc_now


def register(app: typer.Typer) -> None:
    """Add the model commands to ``app``."""
    for command in (train, promote):
        app.command()(command)


@friendly_errors
def train(
    events: Annotated[
        Path | None, typer.Option("--events", help="Events file (parquet or CSV).")
    ] = None,
    customers: Annotated[
        Path | None, typer.Option("--customers", help="Customers file (parquet or CSV).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Bring-your-own labels: its (customer_id, as_of) rows."),
    ] = None,
    mapping: MappingOpt = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="Simulator truth.parquet, for the oracle row.")
    ] = None,
    horizon_days: Annotated[int, typer.Option(help="Churn window W in days.", min=1)] = 30,
    every_days: Annotated[int, typer.Option(help="Days between observation dates.", min=1)] = 7,
    trials: Annotated[int, typer.Option(help="Optuna trials.", min=1)] = 30,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which no new trial starts.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "lstep-churn",
    seed: Annotated[int, typer.Option(help="Seed for tuning, LightGBM and plots.")] = 0,
    config: ConfigOpt = None,
) -> None:
    """Tune, train, calibrate, evaluate and register a churn model; promote it if it wins."""
    from training.jobs import TrainJob

    options = {
        "events": events, "customers": customers, "labels": labels, "mapping": mapping,
        "truth": truth, "horizon_days": horizon_days, "every_days": every_days,
        "trials": trials, "timeout": timeout, "experiment": experiment, "seed": seed,
    }  # fmt: skip
    job = build_job(TrainJob, config, options)
    current = settings()
    current.home.mkdir(parents=True, exist_ok=True)
    job.run(
        tracking_uri=current.tracking_uri, model_name=current.model_name, now=utc_now(),
        console=console,
    )  # fmt: skip


@friendly_errors
def promote(
    version: Annotated[int, typer.Option("--version", help="Registered model version.", min=1)],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded on the version).")],
    actor: Annotated[
        str, typer.Option("--actor", envvar="USER", help="Who (default: $USER).")
    ] = "unknown",
) -> None:
    """Make a model version the champion by hand (forced promotion or rollback)."""
    from training.registry import promote as promote_version

    current = settings()
    promotion = promote_version(
        current.tracking_uri,
        version,
        reason=reason,
        actor=actor,
        at=utc_now(),
        name=current.model_name,
    )
    previous = promotion.previous_version or "none"
    console.print(
        f"[green]{current.model_name} v{promotion.version} is champion[/] "
        f"(was v{previous}); recorded actor {promotion.actor!r}, reason {promotion.reason!r}"
    )
