"""Data commands: ``simulate``, ``validate``, ``features``, ``labels``, ``catalog``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.cli.common import (
    AllowUnknownOpt,
    AsOfOpt,
    CustomersOpt,
    EventsOpt,
    EveryDaysOpt,
    MappingOpt,
    SpineOpt,
    UserError,
    console,
    err_console,
    friendly_errors,
    load_inputs,
    parse_date,
)
from serving.settings import utc_now


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""
    for command in (simulate, validate, features, labels, catalog):
        app.command()(command)


@friendly_errors
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    customers: Annotated[int, typer.Option(help="Number of learners.", min=1)] = 5000,
    days: Annotated[int, typer.Option(help="Days simulated from --start.", min=1)] = 180,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.", min=0)] = 0,
    start: Annotated[str, typer.Option(help="First simulated day (YYYY-MM-DD).")] = "2026-01-01",
    horizon_days: Annotated[int, typer.Option(help="Label window W for the truth.", min=1)] = 30,
    truth_share: Annotated[
        float, typer.Option(help="Share of learners with true-probability rows (0 = none).")
    ] = 1.0,
    truth_paths: Annotated[int, typer.Option(help="Monte-Carlo paths per truth row.", min=1)] = 64,
) -> None:
    """Simulate a learner population: events, customers and the true churn probabilities."""
    from features.simulator import SimulationConfig
    from features.simulator import simulate as run_simulation
    from serving.cli.render import counting_progress

    config = SimulationConfig(
        customers=customers,
        days=days,
        seed=seed,
        start=parse_date(start),
        horizon_days=horizon_days,
        truth_share=truth_share,
        truth_paths=truth_paths,
    )
    with counting_progress(err_console) as progress:
        task = progress.add_task("simulating learners", total=customers)
        summary = run_simulation(config, out, progress=lambda n: progress.advance(task, n))
    console.print(
        f"[green]wrote[/] {summary.customers:,} learners, {summary.events:,} events, "
        f"{summary.truth_rows:,} truth rows ({summary.start} to {summary.end}) "
        f"to {out} in {summary.seconds:.1f} s"
    )


@friendly_errors
def validate(
    events: EventsOpt,
    customers: CustomersOpt,
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
) -> None:
    """Check events and customers against the contracts; exit 1 on any problem."""
    from features.validation import validate_inputs
    from serving.cli.render import validation_report

    validated = validate_inputs(
        events, customers, mapping=mapping, allow_unknown=allow_unknown, now=utc_now()
    )
    console.print(validation_report(validated.report))
    if not validated.report.ok:
        raise typer.Exit(1)


def observation_spine(
    events: Any,
    as_of: list[str] | None,
    every_days: int | None,
    spine: Path | None,
    *,
    event_days: Callable[[], tuple[date, date]] | None = None,
) -> tuple[list[date] | None, Any]:
    """Resolve the three mutually exclusive ways of saying where to compute: dates or a spine.

    ``--every-days`` steps from 30 days after the first event's day to the day after the last:
    those days come from the events frame, or from ``event_days`` when the frame is not loaded.
    """
    given = [
        name
        for name, value in (("--as-of", as_of), ("--every-days", every_days), ("--spine", spine))
        if value
    ]
    if len(given) != 1:
        named = ", ".join(given) or "none"
        raise UserError(f"give exactly one of --as-of, --every-days, --spine (got {named})")
    if as_of:
        return [parse_date(value) for value in as_of], None
    if every_days:
        from features.windows import observation_dates

        first_day, last_day = (
            event_days() if event_days else (events["ts"].min().date(), events["ts"].max().date())
        )
        first, last = first_day + timedelta(days=30), last_day + timedelta(days=1)
        return observation_dates(first, last, every_days), None
    from features.validation import read_table

    return None, read_table(spine)


class Engine(StrEnum):
    """Where the features are computed."""

    duckdb = "duckdb"
    spark = "spark"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="duckdb (embedded; inputs validated in full) or spark (inputs read by Spark from "
        "paths or URIs and checked for their columns only; --out becomes a parquet directory).",
    ),
]
# strings, not Paths: a Path would fold the // of a URI (s3a://bucket/...)
SourceEventsOpt = Annotated[
    str,
    typer.Option(
        "--events", help="Events file (parquet or CSV); with --engine spark, parquet path or URI."
    ),
]
SourceCustomersOpt = Annotated[
    str,
    typer.Option(
        "--customers",
        help="Customers file (parquet or CSV); with --engine spark, parquet path or URI.",
    ),
]
OutOpt = Annotated[
    str, typer.Option("--out", help="Output parquet file (a directory with --engine spark).")
]
MasterOpt = Annotated[
    str, typer.Option("--master", help="Spark master: local[N], spark://host:port, yarn, ...")
]


@friendly_errors
def features(
    events: SourceEventsOpt,
    customers: SourceCustomersOpt,
    out: OutOpt,
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
    as_of: AsOfOpt = None,
    every_days: EveryDaysOpt = None,
    spine: SpineOpt = None,
    engine: EngineOpt = Engine.duckdb,
    master: MasterOpt = "local[2]",
) -> None:
    """Build the 30-day window features at dates (eligible learners) or for a spine of pairs."""
    from features.windows import build_features, write_features

    if engine is Engine.spark:
        if mapping or allow_unknown:
            raise UserError("--mapping and --allow-unknown need --engine duckdb")
        spark_feature_files(events, customers, out, (as_of, every_days, spine), master)
        return
    inputs = (Path(events), Path(customers))
    events_frame, customers_frame = load_inputs(*inputs, mapping, allow_unknown)
    dates, pairs = observation_spine(events_frame, as_of, every_days, spine)
    with err_console.status("building window features"):
        frame = build_features(events_frame, customers_frame, as_of=dates, spine=pairs)
    write_features(frame, out)
    console.print(f"[green]wrote[/] {len(frame):,} rows x {frame.shape[1] - 2} features to {out}")


def spark_feature_files(
    events: str, customers: str, out: str, where: tuple[Any, Any, Any], master: str
) -> None:
    """``features --engine spark``: Spark reads the inputs, computes and writes ``out``."""
    from features.spark import event_days, spark_eligible, spark_engine, spark_features

    status = err_console.status(f"building window features on Spark ({master})")
    with status, spark_engine(master) as engine:
        span = lambda: event_days(engine, events)  # noqa: E731 - read only for --every-days
        dates, pairs = observation_spine(None, *where, event_days=span)
        if pairs is None:
            pairs = spark_eligible(engine, events, customers, dates)
        frame = spark_features(engine, events, customers, spine=pairs)
        frame.write.mode("overwrite").parquet(out)
        rows = engine.spark.read.parquet(out).count()
    console.print(f"[green]wrote[/] {rows:,} rows x {len(frame.columns) - 2} features to {out}")


@friendly_errors
def labels(
    events: EventsOpt,
    customers: CustomersOpt,
    out: Annotated[Path, typer.Option("--out", help="Output parquet file.")],
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
    as_of: AsOfOpt = None,
    every_days: EveryDaysOpt = None,
    spine: SpineOpt = None,
    horizon_days: Annotated[int, typer.Option(help="Churn window W in days.", min=1)] = 30,
) -> None:
    """Compute churn labels y(t) for eligible learners at dates, or for a spine of pairs."""
    from features.labels import compute_labels
    from features.windows import eligible_spine

    events_frame, customers_frame = load_inputs(events, customers, mapping, allow_unknown)
    dates, pairs = observation_spine(events_frame, as_of, every_days, spine)
    if pairs is None:
        pairs = eligible_spine(events_frame, customers_frame, dates)
    frame = compute_labels(events_frame, pairs, horizon_days=horizon_days)
    excluded = frame.attrs.get("excluded_incomplete", 0)
    # attrs hold a Timestamp that parquet metadata cannot carry; the count is printed below.
    frame.attrs.clear()
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    console.print(
        f"[green]wrote[/] {len(frame):,} labels (churn rate {frame['churned'].mean():.1%}) to "
        f"{out}; {excluded:,} rows left out because their {horizon_days}-day window is not "
        "complete in the log"
    )


@friendly_errors
def catalog(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print docs/features.md.")] = False,
) -> None:
    """List the features: name, unit, the event types each needs, and what it means."""
    from rich.table import Table

    from features.catalog import catalog_markdown, load_catalog

    if markdown:
        print(catalog_markdown(), end="")
        return
    table = Table("name", "group", "unit", "needs", "description", show_lines=False)
    for spec in load_catalog().features:
        table.add_row(
            spec.name, spec.group, spec.unit, ", ".join(spec.needs) or "any", spec.description
        )
    console.print(table)
