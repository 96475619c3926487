"""The ``lstep`` command: the one composition root that knows every package.

Heavy libraries (MLflow, LightGBM, BentoML) are imported inside the commands that need them, so
``lstep --help`` and the data commands start fast.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from serving.settings import Settings, disable_telemetry, utc_now

app = typer.Typer(
    name="lstep",
    help="Learner lifecycle and churn: simulate, validate, build features, train, score, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
rules_app = typer.Typer(help="Status-tag rules: validate and show the transition graph.")
app.add_typer(rules_app, name="rules")

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix (bad input, missing model): printed without a stack trace."""


def quiet_libraries() -> None:
    """Keep MLflow's per-artifact progress bars and INFO chatter out of the command's output."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The model carries its pinned pip requirements; copying the repo's uv.lock adds nothing.
    os.environ.setdefault("MLFLOW_LOG_UV_FILES", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The uv-made venv has no pip: MLflow's "cannot resolve pip version" warning is noise here.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a red message and exit code 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        disable_telemetry()
        quiet_libraries()
        try:
            return command(*args, **kwargs)
        except (UserError, ValueError, FileNotFoundError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            err_console.print("[bold red]error:[/] ", end="")
            err_console.print(str(message), markup=False, highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def parse_date(value: str) -> date:
    """Parse an ISO date given on the command line, naming the bad value when it is not one."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)") from None


EventsOpt = Annotated[Path, typer.Option("--events", help="Events file (parquet or CSV).")]
CustomersOpt = Annotated[Path, typer.Option("--customers", help="Customers file (parquet or CSV).")]
MappingOpt = Annotated[
    Path | None,
    typer.Option("--mapping", help="YAML mapping a foreign event log onto the contract."),
]
AllowUnknownOpt = Annotated[
    bool,
    typer.Option("--allow-unknown", help="Map unknown event types to 'other' instead of failing."),
]
AsOfOpt = Annotated[
    list[str] | None,
    typer.Option("--as-of", help="Date YYYY-MM-DD (repeatable): eligible learners at each."),
]
EveryDaysOpt = Annotated[
    int | None,
    typer.Option("--every-days", help="Observation dates every N days across the log.", min=1),
]
SpineOpt = Annotated[
    Path | None,
    typer.Option("--spine", help="Parquet/CSV of exact (customer_id, as_of) pairs."),
]


def _progress() -> Any:
    """A rich progress bar with elapsed time, used by the long-running commands."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


@app.command()
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

    config = SimulationConfig(
        customers=customers,
        days=days,
        seed=seed,
        start=parse_date(start),
        horizon_days=horizon_days,
        truth_share=truth_share,
        truth_paths=truth_paths,
    )
    with _progress() as progress:
        task = progress.add_task("simulating learners", total=customers)
        summary = run_simulation(config, out, progress=lambda n: progress.advance(task, n))
    console.print(
        f"[green]wrote[/] {summary.customers:,} learners, {summary.events:,} events, "
        f"{summary.truth_rows:,} truth rows ({summary.start} to {summary.end}) "
        f"to {out} in {summary.seconds:.1f} s"
    )


@app.command()
@friendly_errors
def validate(
    events: EventsOpt,
    customers: CustomersOpt,
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
) -> None:
    """Check events and customers against the contracts; exit 1 on any problem."""
    from features.validation import validate_inputs

    validated = validate_inputs(
        events, customers, mapping=mapping, allow_unknown=allow_unknown, now=utc_now()
    )
    console.print(validated.report)
    if not validated.report.ok:
        raise typer.Exit(1)


def _load_inputs(
    events: Path, customers: Path, mapping: Path | None, allow_unknown: bool
) -> tuple[Any, Any]:
    """Validated (events, customers) frames, or an InputError whose message is the report."""
    from features.validation import load_valid_inputs

    with err_console.status("validating inputs"):
        return load_valid_inputs(
            events, customers, mapping=mapping, allow_unknown=allow_unknown, now=utc_now()
        )


def _observation_spine(
    events: Any,
    as_of: list[str] | None,
    every_days: int | None,
    spine: Path | None,
) -> tuple[list[date] | None, Any]:
    """Resolve the three mutually exclusive ways of saying where to compute: dates or a spine."""
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

        first = events["ts"].min().date() + timedelta(days=30)
        last = events["ts"].max().date() + timedelta(days=1)
        return observation_dates(first, last, every_days), None
    from features.validation import read_table

    return None, read_table(spine)


@app.command()
@friendly_errors
def features(
    events: EventsOpt,
    customers: CustomersOpt,
    out: Annotated[Path, typer.Option("--out", help="Output parquet file.")],
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
    as_of: AsOfOpt = None,
    every_days: EveryDaysOpt = None,
    spine: SpineOpt = None,
) -> None:
    """Build the 30-day window features at dates (eligible learners) or for a spine of pairs."""
    from features.windows import build_features, write_features

    events_frame, customers_frame = _load_inputs(events, customers, mapping, allow_unknown)
    dates, pairs = _observation_spine(events_frame, as_of, every_days, spine)
    with err_console.status("building window features"):
        frame = build_features(events_frame, customers_frame, as_of=dates, spine=pairs)
    write_features(frame, out)
    console.print(f"[green]wrote[/] {len(frame):,} rows x {frame.shape[1] - 2} features to {out}")


def _settings() -> Settings:
    """Settings from the environment (``LSTEP_*``), read at the edge."""
    return Settings()


@app.command()
@friendly_errors
def train(
    events: EventsOpt,
    customers: CustomersOpt,
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
) -> None:
    """Tune, train, calibrate, evaluate and register a churn model; promote it if it wins."""
    from training.pipeline import train as run_training

    settings = _settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    run_training(
        events,
        customers,
        labels=labels,
        mapping=mapping,
        truth=truth,
        horizon_days=horizon_days,
        every_days=every_days,
        trials=trials,
        timeout=timeout,
        experiment=experiment,
        tracking_uri=settings.tracking_uri,
        now=utc_now(),
        seed=seed,
        console=console,
        model_name=settings.model_name,
    )


@app.command()
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

    settings = _settings()
    promotion = promote_version(
        settings.tracking_uri,
        version,
        reason=reason,
        actor=actor,
        at=utc_now(),
        name=settings.model_name,
    )
    previous = promotion.previous_version or "none"
    console.print(
        f"[green]{settings.model_name} v{promotion.version} is champion[/] "
        f"(was v{previous}); recorded actor {promotion.actor!r}, reason {promotion.reason!r}"
    )


@app.command()
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

    events_frame, customers_frame = _load_inputs(events, customers, mapping, allow_unknown)
    dates, pairs = _observation_spine(events_frame, as_of, every_days, spine)
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


def _demo_population(settings: Settings, customers: int, days: int, seed: int) -> Path:
    """Simulate the demo population into the event store once; later runs reuse it."""
    from features.simulator import SimulationConfig
    from features.simulator import simulate as run_simulation

    out = settings.data_path
    if (out / "meta.json").exists():
        console.print(f"[dim]reusing the simulated population in {out}[/]")
        return out
    config = SimulationConfig(customers=customers, days=days, seed=seed)
    with _progress() as progress:
        task = progress.add_task("simulating learners", total=customers)
        summary = run_simulation(config, out, progress=lambda n: progress.advance(task, n))
    console.print(f"simulated {summary.customers:,} learners, {summary.events:,} events -> {out}")
    return out


def _demo_features(events: Any, customers: Any) -> None:
    """Weekly features and labels over the log, summarised."""
    from features.labels import compute_labels
    from features.summary import distribution_table, label_summary
    from features.windows import build_features

    dates, _ = _observation_spine(events, None, 7, None)
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


def _demo_champion(
    settings: Settings, data: Path, events: Any, customers: Any, trials: int
) -> None:
    """Train and register a champion unless one exists already."""
    from serving.scoring import load_champion
    from training.pipeline import train as run_training

    existing = load_champion(settings.tracking_uri, settings.model_name)
    if existing is not None:
        console.print(f"[dim]reusing the champion {existing.uri} (v{existing.version})[/]")
        return
    console.rule("training the churn model")
    run_training(events, customers, truth=data / "truth.parquet", trials=trials, timeout=120,
                 tracking_uri=settings.tracking_uri, now=utc_now(), console=console,
                 model_name=settings.model_name)  # fmt: skip


def _demo_backfill(settings: Settings, data: Path, events: Any, customers: Any) -> date:
    """Run the daily batch over the log's last 30 days (completed days are skipped)."""
    import json

    from serving.batch import render_summary, run_range

    end = date.fromisoformat(json.loads((data / "meta.json").read_text())["data_end"])
    start = end - timedelta(days=29)
    console.rule(f"daily batch job, backfilled {start} .. {end}")
    context = _batch_context(settings, None, rules_only=False)
    results = run_range(start, end, events=events, customers=customers, now=utc_now(), **context)
    console.print(render_summary(results[-1]))
    console.print(_kpi_table(context["store"], settings, None, end))
    return end


@app.command()
@friendly_errors
def demo(
    customers: Annotated[int, typer.Option(help="Learners to simulate.", min=100)] = 5000,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=120)] = 180,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 0,
    trials: Annotated[int, typer.Option(help="Optuna trials (short tuning).", min=1)] = 8,
) -> None:
    """The main job end to end: simulate, validate, train, backfill the batch, report."""
    settings = _settings()
    console.rule("[bold]lstep demo")
    data = _demo_population(settings, customers, days, seed)
    events_frame, customers_frame = _load_inputs(
        data / "events.parquet", data / "customers.parquet", None, False
    )
    console.print(f"validated {len(events_frame):,} events of {len(customers_frame):,} learners")
    _demo_features(events_frame, customers_frame)
    _demo_champion(settings, data, events_frame, customers_frame, trials)
    last_day = _demo_backfill(settings, data, events_frame, customers_frame)
    console.rule("next")
    console.print(
        f"explain a learner:  .venv/bin/lstep explain <customer_id> --as-of {last_day}\n"
        f"MLflow UI:          .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri}\n"
        "start the service:  .venv/bin/lstep serve   (then POST /score on http://127.0.0.1:3000)"
    )


@app.command()
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


# --- daily operation: rules, score, explain, status, overrides, KPIs --------------------------

RulesDirOpt = Annotated[
    Path | None, typer.Option("--rules", help="Directory of rules YAML (default: packaged).")
]
OptionalEventsOpt = Annotated[
    Path | None, typer.Option("--events", help="Events file (default: the event store).")
]
OptionalCustomersOpt = Annotated[
    Path | None, typer.Option("--customers", help="Customers file (default: the event store).")
]


def _ruleset(rules_dir: Path | None) -> Any:
    """The validated rules, checked against the catalog's feature names and the model scores."""
    from features.catalog import load_catalog
    from rules import MODEL_SCORE_COLUMNS, load_ruleset

    return load_ruleset(rules_dir, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])


def _event_store(
    settings: Settings, events: Path | None, customers: Path | None
) -> tuple[Path, Path]:
    """Explicit files, or the event store under LSTEP_DATA_DIR (what `lstep demo` fills)."""
    events = events or settings.data_path / "events.parquet"
    customers = customers or settings.data_path / "customers.parquet"
    for path in (events, customers):
        if not path.exists():
            raise UserError(
                f"{path} does not exist: pass --events/--customers, or run `lstep demo` (or "
                "`lstep simulate --out $LSTEP_HOME/data`) to fill the event store"
            )
    return events, customers


def _store(settings: Settings) -> Any:
    from serving.store import StateStore

    return StateStore(settings.state_database_url)


@rules_app.command("check")
@friendly_errors
def rules_check(rules_dir: RulesDirOpt = None) -> None:
    """Validate the rules and print the transition graph (Mermaid)."""
    from rules import mermaid

    ruleset = _ruleset(rules_dir)
    console.print(f"[green]rules OK[/]: {len(ruleset.rules)} rules, {len(ruleset.tags)} tags")
    print(mermaid(ruleset))


@app.command()
@friendly_errors
def score(
    as_of: Annotated[str | None, typer.Option("--as-of", help="The batch day.")] = None,
    from_day: Annotated[str | None, typer.Option("--from", help="Backfill: first day.")] = None,
    to_day: Annotated[str | None, typer.Option("--to", help="Backfill: last day.")] = None,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
    mapping: MappingOpt = None,
    allow_unknown: AllowUnknownOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute, write nothing.")] = False,
    rules_only: Annotated[
        bool, typer.Option("--rules-only", help="Run the rules without the model.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Redo the latest completed day.")
    ] = False,
    rules_dir: RulesDirOpt = None,
    with_report: Annotated[
        bool, typer.Option("--report", help="Write the HTML report of the last day.")
    ] = False,
) -> None:
    """The daily batch job: features, champion scores, rules, and the audit trail (idempotent)."""
    from serving.batch import render_summary, run_day, run_range

    settings = _settings()
    if (as_of is None) == (from_day is None or to_day is None):
        raise UserError("give --as-of DAY, or --from DAY --to DAY for a backfill")
    events_path, customers_path = _event_store(settings, events, customers)
    common = _batch_context(settings, rules_dir, rules_only)
    common.update(events=events_path, customers=customers_path, mapping=mapping,
                  allow_unknown=allow_unknown, dry_run=dry_run, now=utc_now())  # fmt: skip
    if as_of is not None:
        results = [run_day(parse_date(as_of), replace=replace, **common)]
    else:
        results = run_range(parse_date(from_day), parse_date(to_day), **common)
    console.print(render_summary(results[-1]))
    if with_report and not dry_run:
        written = _write_report(
            settings, common["store"], results[-1].as_of, events_path, customers_path, None
        )
        console.print(f"[green]report[/] {written}")


def _batch_context(settings: Settings, rules_dir: Path | None, rules_only: bool) -> dict[str, Any]:
    """What every batch day needs: store, champion (unless rules-only), rules, run id, paths."""
    import uuid

    from serving.scoring import load_champion, no_champion_message

    champion = None if rules_only else load_champion(settings.tracking_uri, settings.model_name)
    if champion is None and not rules_only:
        raise UserError(no_champion_message(settings.model_name))
    return {
        "store": _store(settings),
        "champion": champion,
        "ruleset": _ruleset(rules_dir),
        "rules_only": rules_only,
        "run_id": f"run-{uuid.uuid4().hex[:12]}",
        "data_dir": settings.data_path,
        "console": console,
    }


def _latest_batch_day(store: Any) -> date | None:
    """The as_of of the latest completed batch run, if any."""
    runs = store.runs()
    done = runs[runs["status"] == "completed"]
    if done.empty:
        return None
    import pandas as pd

    return pd.Timestamp(done["as_of"].max()).date()


@app.command()
@friendly_errors
def explain(
    customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the latest batch day).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a waterfall PNG here.")
    ] = None,
    top: Annotated[int, typer.Option(help="How many reasons to print.", min=1)] = 8,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
) -> None:
    """Why a learner's churn risk is what it is: reason codes in probability points."""
    import pandas as pd

    from features.windows import build_features
    from models.explain import explain as explain_row
    from models.explain import probability_points, waterfall_plot
    from serving.scoring import load_champion, no_champion_message, score_features

    settings = _settings()
    events_path, customers_path = _event_store(settings, events, customers)
    day = parse_date(as_of) if as_of else _latest_batch_day(_store(settings)) or utc_now().date()
    champion = load_champion(settings.tracking_uri, settings.model_name)
    if champion is None:
        raise UserError(no_champion_message(settings.model_name))
    spine = pd.DataFrame({"customer_id": [customer_id], "as_of": [pd.Timestamp(day)]})
    row = build_features(events_path, customers_path, spine=spine)
    scores = score_features(row, champion).iloc[0]
    reasons = explain_row(champion.model, row, top=None)[:top]
    _, p_base, p_raw = probability_points(champion.model.contributions(row))
    title = (
        f"{customer_id} on {day}: p_churn {scores['p_churn']:.1%} [{scores['p_low']:.1%}, "
        f"{scores['p_high']:.1%}], confidence {scores['confidence']:.0%} (v{champion.version})"
    )
    console.print(_reasons_table(title, reasons))
    console.print(
        f"[dim]base rate {float(p_base[0]):.1%} + reasons = raw model probability "
        f"{float(p_raw[0]):.1%}; p_churn is that probability after calibration[/]"
    )
    if plot is not None:
        waterfall_plot(reasons, plot, p_base=float(p_base[0]), title=f"{customer_id} {day}")
        console.print(f"[green]wrote[/] {plot}")


def _reasons_table(title: str, reasons: list[Any]) -> Any:
    """Reason codes as a two-column table: signed points, plain words."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("points", justify="right")
    table.add_column("reason")
    for reason in reasons:
        table.add_row(f"{reason.points:+.1f}", reason.text)
    return table


@app.command()
@friendly_errors
def status(customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")]) -> None:
    """A learner's current tag, open override and full history with reasons."""
    from rich.table import Table

    store = _store(_settings())
    current = store.current(customer_id)
    if current is None:
        raise UserError(f"learner {customer_id!r} is not in the state store (never scored)")
    console.print(f"[bold]{customer_id}[/]: {current['tag']} since {current['since']}")
    if current["override"]:
        held = current["override"]
        until = held["expires"] or "no expiry"
        console.print(f"override to {held['tag']} by {held['actor']} ({held['reason']}), {until}")
    table = Table("as_of", "from", "to", "rule / actor", "reason", "p_churn", "model", "run")
    for row in store.history(customer_id).itertuples(index=False):
        p_churn = "" if _missing(row.p_churn) else f"{row.p_churn:.0%}"
        who = row.actor if _missing(row.rule_id) else row.rule_id
        table.add_row(
            str(row.as_of)[:10],
            _text(row.from_tag, "new"),
            row.to_tag,
            _text(who),
            _text(row.reason),
            p_churn,
            _text(row.model_version),
            _text(row.run_id),
        )
    console.print(table)


def _missing(value: Any) -> bool:
    """True for None and NaN/NA, the shapes a null takes in a frame row."""
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _text(value: Any, default: str = "") -> str:
    """A table cell: the value as text, or ``default`` when it is null."""
    return default if _missing(value) else str(value)


@app.command()
@friendly_errors
def override(
    customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")],
    tag: Annotated[str, typer.Option("--tag", help="ST_001..ST_006 (ST_005 only by hand).")],
    actor: Annotated[str, typer.Option("--actor", help="Who decides.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (quoted in the audit log).")],
    expires: Annotated[
        str | None, typer.Option("--expires", help="Day the override ends (default: never).")
    ] = None,
) -> None:
    """Set a learner's tag by hand; automatic rules hold it until it expires (except ST_006)."""
    store = _store(_settings())
    until = parse_date(expires) if expires else None
    store.set_override(customer_id, tag, actor=actor, reason=reason, expires=until, now=utc_now())
    console.print(
        f"[green]{customer_id} -> {tag}[/] by {actor}: {reason}"
        + (f" (until {until})" if until else " (no expiry)")
    )


@app.command()
@friendly_errors
def kpis(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the latest batch day).")
    ] = None,
    customers: OptionalCustomersOpt = None,
) -> None:
    """The six lifecycle KPIs against their targets, from the audit log."""
    settings = _settings()
    store = _store(settings)
    day = parse_date(as_of) if as_of else _latest_batch_day(store)
    if day is None:
        raise UserError("no completed batch run yet: run `lstep score --as-of DAY` first")
    console.print(_kpi_table(store, settings, customers, day))


def _kpi_table(store: Any, settings: Settings, customers: Path | None, day: date) -> Any:
    """Compute the KPIs at ``day`` and lay them out against their targets."""
    import pandas as pd
    from rich.table import Table

    from features.validation import load_customers
    from serving.kpis import compute_kpis

    customers_path = customers or settings.data_path / "customers.parquet"
    customer_frame = load_customers(customers_path)[0] if customers_path.exists() else None
    if customer_frame is None:
        customer_frame = pd.DataFrame(columns=["customer_id", "product_tag", "enrolled_at", "mrr"])
    results = compute_kpis(
        store.transitions_frame(until=day), store.scores_frame(), customer_frame, as_of=day
    )
    table = Table(title=f"KPIs on {day}", title_justify="left")
    for column in ("KPI", "value", "target", "met", "treated", "control", "detail"):
        table.add_column(column)
    for kpi in results:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[kpi.meets_target]
        table.add_row(kpi.name, _fmt(kpi.value, kpi.unit), f"{kpi.comparison} "
                      f"{_fmt(kpi.target, kpi.unit)}", met, _fmt(kpi.treated, kpi.unit),
                      _fmt(kpi.control, kpi.unit), kpi.detail)  # fmt: skip
    return table


def _fmt(value: float | None, unit: str) -> str:
    """A KPI value in its unit; '-' when there is no data."""
    if value is None:
        return "-"
    return f"{value:.1f}%" if unit == "%" else f"{value:,.1f} {unit}"


@app.command()
@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 3000,
) -> None:
    """Import the champion into the BentoML store and start the HTTP service (/score, /explain...).

    Set LSTEP_API_TOKEN to enable /override and `apply: true`; LSTEP_RULES_ONLY=true serves the
    rules without a model.
    """
    from serving.bento import ServiceSettings
    from serving.bento import serve as start_service
    from serving.scoring import NoChampionError

    settings = _settings()
    if (warning := ServiceSettings().token_warning()) is not None:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"starting the lstep service on http://{host}:{port} (Ctrl-C stops it)")
    try:
        start_service(settings, host=host, port=port)
    except NoChampionError as error:
        raise UserError(str(error)) from None


@app.command()
@friendly_errors
def report(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the latest batch day).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: reports dir).")
    ] = None,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
) -> None:
    """Write the self-contained HTML report for CS leads (KPIs, tags, call list, model, drift)."""
    settings = _settings()
    store = _store(settings)
    day = parse_date(as_of) if as_of else _latest_batch_day(store)
    if day is None:
        raise UserError("no completed batch run yet: run `lstep score --as-of DAY` first")
    events_path, customers_path = _event_store(settings, events, customers)
    written = _write_report(settings, store, day, events_path, customers_path, out)
    console.print(f"[green]wrote[/] {written}")


def _write_report(
    settings: Settings, store: Any, day: date, events: Any, customers: Any, out: Path | None
) -> Path:
    """Validate the inputs (paths or frames) and write the report of ``day``."""
    from serving.report import write_report
    from serving.scoring import load_champion

    if isinstance(events, Path):
        events, customers = _load_inputs(events, customers, None, False)
    champion = load_champion(settings.tracking_uri, settings.model_name)
    return write_report(store, settings, as_of=day, champion=champion, events=events,
                        customers=customers, out=out)  # fmt: skip
