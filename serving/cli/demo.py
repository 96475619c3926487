"""``lstep demo``: the main job end to end on the embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.cli.common import (
    console,
    err_console,
    friendly_errors,
    load_inputs,
    open_store,
    runtime,
    settings,
)
from serving.settings import Settings, utc_now


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command()(demo)


@friendly_errors
def demo(
    customers: Annotated[int, typer.Option(help="Learners to simulate.", min=100)] = 5000,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=120)] = 180,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 0,
    trials: Annotated[int, typer.Option(help="Optuna trials (short tuning).", min=1)] = 8,
    backfill_days: Annotated[
        int,
        typer.Option(
            help="Batch days to backfill up to the log's end (61 gives every KPI a value: "
            "mastery needs 60 days of history, labels a complete 30-day window).",
            min=1,
        ),
    ] = 61,
) -> None:
    """The main job end to end: simulate, validate, train, backfill the batch, report."""
    current = settings()
    console.rule("[bold]lstep demo")
    data = _population(current, customers, days, seed)
    events_frame, customers_frame = load_inputs(
        current.events_path, current.customers_path, None, False
    )
    console.print(f"validated {len(events_frame):,} events of {len(customers_frame):,} learners")
    _features(events_frame, customers_frame)
    _champion(current, data, trials)
    last_day = _backfill(data, events_frame, customers_frame, backfill_days)
    _campaigns(current, last_day)
    console.rule("next")
    console.print(
        f"explain a learner:  .venv/bin/lstep explain <customer_id> --as-of {last_day}\n"
        f"MLflow UI:          .venv/bin/mlflow ui --backend-store-uri {current.tracking_uri}\n"
        "start the service:  .venv/bin/lstep serve   (then POST /score on http://127.0.0.1:3000)\n"
        "campaign effect:    .venv/bin/lstep campaigns   (treated vs control, with intervals)"
    )


def _population(current: Settings, customers: int, days: int, seed: int) -> Path:
    """Simulate the demo population into the event store once; later runs reuse it."""
    from features.simulator import SimulationConfig
    from features.simulator import simulate as run_simulation
    from serving.cli.render import counting_progress

    out = current.data_path
    if (out / "meta.json").exists():
        console.print(f"[dim]reusing the simulated population in {out}[/]")
        return out
    config = SimulationConfig(customers=customers, days=days, seed=seed)
    with counting_progress(err_console) as progress:
        task = progress.add_task("simulating learners", total=customers)
        summary = run_simulation(config, out, progress=lambda n: progress.advance(task, n))
    console.print(f"simulated {summary.customers:,} learners, {summary.events:,} events -> {out}")
    return out


def _features(events: Any, customers: Any) -> None:
    """Weekly features and labels over the log, summarised."""
    from features.labels import compute_labels
    from features.summary import distribution_table, label_summary
    from features.windows import build_features
    from serving.cli.data import observation_spine

    dates, _ = observation_spine(events, None, 7, None)
    with err_console.status("building weekly window features and labels"):
        frame = build_features(events, customers, as_of=dates)
        churn = compute_labels(events, frame)
    stats = label_summary(churn)
    console.print(
        f"features: {len(frame):,} rows x {frame.shape[1] - 2} features at {len(dates)} weekly "
        f"dates; labelled rows {stats['rows']:,} ({stats['learners']:,} learners), "
        f"30-day churn rate {stats['churn_rate']:.1%}"
    )
    console.print(distribution_table(frame))


def _champion(current: Settings, data: Path, trials: int) -> None:
    """Train and register a champion unless one exists already."""
    from serving.infra.champion import load_champion
    from training.jobs import TrainJob

    existing = load_champion(current.tracking_uri, current.model_name)
    if existing is not None:
        console.print(f"[dim]reusing the champion {existing.uri} (v{existing.version})[/]")
        return
    console.rule("training the churn model")
    job = TrainJob(
        events=current.events_path, customers=current.customers_path,
        truth=data / "truth.parquet", trials=trials, timeout=120,
    )  # fmt: skip
    job.run(
        tracking_uri=current.tracking_uri, model_name=current.model_name, now=utc_now(),
        console=console,
    )  # fmt: skip


def _backfill(data: Path, events: Any, customers: Any, days: int) -> date:
    """Run the daily batch over the log's last ``days`` days (completed days are skipped)."""
    from serving.app.batch import BatchInputs, run_range
    from serving.app.jobs import batch_context
    from serving.app.kpi_files import EventStore, day_kpis
    from serving.cli.render import RichBatchProgress, batch_summary, kpi_table

    end = date.fromisoformat(json.loads((data / "meta.json").read_text())["data_end"])
    start = end - timedelta(days=days - 1)
    console.rule(f"daily batch job, backfilled {start} .. {end}")
    progress = RichBatchProgress(console)
    context = batch_context(runtime(progress), rules_only=False)
    inputs = BatchInputs(events=events, customers=customers, validated=True)
    with progress.running():
        results = run_range(start, end, inputs, context)
    if context.champion is not None:  # the first `lstep explain` then skips MLflow too
        from serving.cli.explain_inputs import cache_version

        cache_version(settings(), context.champion.version, context.champion.model)
    console.print(batch_summary(results[-1]))
    # Stored for the first `lstep kpis`, as a `lstep score` stores its last day's.
    current = settings()
    sources = EventStore(data, events=current.events_path, customers=current.customers_path)
    version = None if context.champion is None else str(context.champion.version)
    found = day_kpis(
        context.store, end, sources, lambda _: (context.ruleset, version), now=utc_now()
    )
    console.print(kpi_table(found, end))
    return end


DEMO_CAP_LIFTED = 10_000
"""The demo's per-learner cap of one dispatch run: in effect none."""


def _campaigns(current: Settings, last_day: date) -> None:
    """Dispatch the due campaign messages to a JSONL file and show the last day's campaigns.

    Every channel goes to the file sink (a marketing tool's import), without quiet hours: the
    demo must not need a mail server or a webhook receiver, nor depend on the hour it runs. The
    per-learner cap is a wall-clock one (messages per 24 h): the backfill's days are dispatched
    in one run here, where a daily dispatcher would have sent them day by day, so it is lifted.
    """
    from serving.app.dispatch import DispatchOptions, dispatch
    from serving.cli.outbox import campaign_day_table, dispatcher, summary_line
    from serving.core.messages import CHANNELS

    path = current.home / "outbox" / "demo-messages.jsonl"
    config = current.dispatch.model_copy(
        update={
            "sinks": dict.fromkeys(CHANNELS, "file"),
            "quiet_end": current.dispatch.quiet_start,
            "max_per_learner": DEMO_CAP_LIFTED,
        }
    )
    store = open_store(current)
    console.rule(f"campaigns: the due messages dispatched to {path}")
    summary, due = dispatch(dispatcher(store, config, path), DispatchOptions(), progress=None)
    console.print(summary_line(summary, due))
    console.print(campaign_day_table(store.outbox_frame(since=last_day, until=last_day), last_day))
