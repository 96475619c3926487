"""Daily operation: ``rules check``, ``score``, ``explain``, ``status``, ``kpis``, ``report``
(overrides: ``serving.cli.overrides``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from serving.cli.common import (
    AllowUnknownOpt,
    ConfigOpt,
    MappingOpt,
    OptionalCustomersOpt,
    OptionalEventsOpt,
    RulesDirOpt,
    UserError,
    build_job,
    console,
    err_console,
    friendly_errors,
    open_store,
    parse_date,
    runtime,
    settings,
)
from serving.settings import utc_now

if TYPE_CHECKING:
    from rules import RuleSet
    from serving.app.summary import BatchResult

DayOpt = Annotated[str | None, typer.Option("--as-of", help="Day (default: the latest batch day).")]


def register(app: typer.Typer, rules_app: typer.Typer) -> None:
    """Add the daily commands to ``app`` (and ``rules check`` to ``rules_app``)."""
    rules_app.command("check")(rules_check)
    for command in (init, score, explain, status, kpis, report):
        app.command()(command)


@friendly_errors
def rules_check(rules_dir: RulesDirOpt = None) -> None:
    """Validate the rules, campaigns and templates; print the transition graph and campaigns.

    Rules naming the model's operating points (``@early_warning``) get the champion's values
    printed; a champion that lacks one is an error (exit 1), no champion is a note.

    Every template is rendered with a sample context: a missing variable fails the check
    (exit 1, naming the file, campaign and variable). Campaign triggers that no rule, manual
    move or priority can produce are flagged.
    """
    from rules import mermaid
    from rules.campaign_rendering import render_problems
    from rules.graph import unreachable_triggers
    from serving.cli.render import campaigns_table
    from serving.infra.rulesets import load_rules

    ruleset = load_rules(rules_dir)
    problems = render_problems(ruleset.campaigns)
    if problems:
        raise UserError("templates do not render:\n" + "\n".join(problems))
    console.print(
        f"[green]rules OK[/]: {len(ruleset.rules)} rules, {len(ruleset.tags)} tags, "
        f"{len(ruleset.campaigns.campaigns)} campaigns, {len(ruleset.behaviours)} behaviour tags"
    )
    print(mermaid(ruleset))
    if ruleset.campaigns.campaigns:
        console.print(campaigns_table(ruleset))
    for problem in unreachable_triggers(ruleset):
        console.print(f"[yellow]unreachable trigger[/]: {escape(problem)}")
    _print_operating_points(ruleset)


def _print_operating_points(ruleset: RuleSet) -> None:
    """Each rule leaf naming an operating point, with the champion's value for it.

    Raises:
        rules.RulesError: the champion does not record a point a rule names.
    """
    from serving.infra.champion import load_champion

    if not ruleset.references:
        return
    current = settings()
    champion = load_champion(current.tracking_uri, current.model_name)
    if champion is None:
        console.print(
            "[yellow]no champion[/]: operating points unresolved; rules-only runs decide without "
            "them (a model condition never fires without a score)"
        )
    points = {} if champion is None else champion.model.operating_points
    if champion is not None:
        ruleset.with_operating_points(points, f"{champion.uri} (v{champion.version})")
        console.print(f"operating points of {champion.uri} (v{champion.version}):")
    for rule_id, path, leaf in ruleset.references:
        value = points.get(leaf.reference)
        shown = "unresolved" if value is None else f"{value:.4f}"
        console.print(
            f"  {rule_id} {path}: {leaf.feature} {leaf.op} @{leaf.reference} = {shown}",
            markup=False,
        )
    window = None if champion is None else getattr(champion.model, "horizon_days", None)
    lifetime = ruleset.interventions.lifetime
    origin = "the champion's label window" if window else "interventions.yaml"
    console.print(
        f"lifetime projection: p_churn over {window or lifetime.score_horizon_days} days "
        f"({origin}), capped at {lifetime.horizon_months} months",
        markup=False,
    )


@friendly_errors
def init(
    force: Annotated[
        bool, typer.Option("--force", help="Start a new, empty history where one was lost.")
    ] = False,
) -> None:
    """Create the state store of this workspace (the first batch run does it too)."""
    from serving.infra.sql import safe_url

    store = open_store(settings(), init=force)
    console.print(f"[green]state store ready[/]: {safe_url(store.url)}")


class Engine(StrEnum):
    """``--engine``: where a batch day's features and scores run."""

    DUCKDB = "duckdb"
    SPARK = "spark"


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
    config: ConfigOpt = None,
    engine: Annotated[
        Engine, typer.Option("--engine", help="Where features and scores run.")
    ] = Engine.DUCKDB,
    master: Annotated[
        str, typer.Option("--master", help="Spark master URL (with --engine spark).")
    ] = "local[2]",
) -> None:
    """The daily batch job: features, champion scores, rules, and the audit trail (idempotent)."""
    from serving.app.jobs import BackfillJob, BatchJob
    from serving.cli.render import RichBatchProgress, batch_summary

    options = {
        "events": events, "customers": customers, "mapping": mapping,
        "allow_unknown": allow_unknown, "dry_run": dry_run, "rules_only": rules_only,
        "rules_dir": rules_dir, "report": with_report, "engine": engine.value,
        "spark_master": master,
    }  # fmt: skip
    if as_of is not None and from_day is None and to_day is None:
        job = build_job(
            BatchJob, config, {**options, "as_of": parse_date(as_of), "replace": replace}
        )
    elif as_of is None and from_day is not None and to_day is not None:
        days = {"start": parse_date(from_day), "end": parse_date(to_day)}
        job = build_job(BackfillJob, config, {**options, **days})
    elif config is not None and as_of is None and from_day is None and to_day is None:
        job = _job_of_file(config, options)
    else:
        raise UserError("give --as-of DAY, or --from DAY --to DAY for a backfill")
    progress = RichBatchProgress(console)
    with progress.running():
        outcome = job.run(runtime(progress))
    _cache_scoring_version(outcome.results[-1])
    console.print(batch_summary(outcome.results[-1]))
    if outcome.report is not None:
        console.print(f"[green]report[/] {outcome.report}")


def _cache_scoring_version(result: BatchResult) -> None:
    """Cache the files of the version that scored the batch, for fast ``lstep explain``."""
    version = result.model_version
    if version is not None and not result.dry_run:
        from serving.cli.explain_inputs import cache_version

        cache_version(settings(), str(version), warn=_note)


def _job_of_file(config: Path, options: dict) -> object:
    """A batch job (``as_of``) or a backfill (``start``/``end``), as the file says."""
    import yaml

    from serving.app.jobs import BackfillJob, BatchJob

    fields = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    kind = BackfillJob if isinstance(fields, dict) and "start" in fields else BatchJob
    return build_job(kind, config, options)


@friendly_errors
def explain(
    customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")],
    as_of: DayOpt = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a waterfall PNG here.")
    ] = None,
    top: Annotated[int, typer.Option(help="How many reasons to print.", min=1)] = 8,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
) -> None:
    """Why a learner's churn risk is what it is: reason codes in probability points.

    On a batch day the learner's row of the day's snapshot is explained with the version that
    scored it (``serving.cli.explain_inputs``); on other days, or with --events/--customers, the
    features are built from the events and the current champion explains them.
    """
    from serving.cli.explain_inputs import assess_options, import_lightgbm_alone, stored_day_inputs

    import_lightgbm_alone()  # before anything imports it: models.churn, serving.core.assess
    from serving.cli.render import decision_lines, reasons_table
    from serving.core.assess import assess
    from serving.infra.rulesets import load_rules

    current = settings()
    store = open_store(current)
    day = parse_date(as_of) if as_of else store.latest_batch_day() or utc_now().date()
    stored = None
    if events is None and customers is None:
        stored = stored_day_inputs(current, store, customer_id, day, warn=_note)
    row, champion = stored or _built_inputs(current, customer_id, day, events, customers)
    state = store.state_frame(day, customer_ids=[customer_id])  # point-in-time: as on that day
    ruleset = load_rules(champion=champion)
    assessment = assess(
        row, champion=champion, ruleset=ruleset, state=state, as_of=day, options=assess_options()
    )
    explanation = assessment.explanation(0)
    scores = assessment.scores.iloc[0]
    title = (
        f"{customer_id} on {day}: p_churn {scores['p_churn']:.1%} [{scores['p_low']:.1%}, "
        f"{scores['p_high']:.1%}], confidence {scores['confidence']:.0%} (v{champion.version})"
    )
    console.print(reasons_table(title, explanation.top(top)))
    console.print(
        f"[dim]base rate {explanation.p_base:.1%} + reasons = raw model probability "
        f"{explanation.p_raw:.1%}; p_churn is that probability after calibration[/]"
    )
    console.print(decision_lines(assessment.record(0)))
    if plot is not None:
        from models.explain import waterfall_plot

        waterfall_plot(
            explanation.top(top), plot, p_base=explanation.p_base, title=f"{customer_id} {day}"
        )
        console.print(f"[green]wrote[/] {plot}")


def _built_inputs(
    current: object, customer_id: str, day: date, events: Path | None, customers: Path | None
) -> tuple[object, object]:
    """The learner's features built from the event store at ``day``, and the current champion."""
    import pandas as pd

    from features.windows import build_features
    from serving.app.jobs import event_store_paths
    from serving.infra.champion import load_champion, require_champion

    events_path, customers_path = event_store_paths(current, events, customers)
    loaded = load_champion(current.tracking_uri, current.model_name)
    champion = require_champion(loaded, rules_only=False, model_name=current.model_name)
    spine = pd.DataFrame({"customer_id": [customer_id], "as_of": [pd.Timestamp(day)]})
    return build_features(events_path, customers_path, spine=spine), champion


def _note(message: str) -> None:
    err_console.print(f"[dim]note: {message}[/]", highlight=False)


@friendly_errors
def status(customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")]) -> None:
    """A learner's current tag, open override and full history with reasons."""
    from serving.app.status import learner_status
    from serving.cli.render import learner_status as render_status
    from serving.core.problems import NotFound

    try:
        found = learner_status(open_store(settings()), customer_id)
    except NotFound:
        raise UserError(
            f"learner {customer_id!r} is not in the state store (never scored)"
        ) from None
    console.print(render_status(found))


@friendly_errors
def kpis(
    as_of: DayOpt = None,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
    rules_dir: RulesDirOpt = None,
) -> None:
    """The six lifecycle KPIs against their targets, in data days, each with its definition.

    A batch day's KPIs are read from ``<data_dir>/kpis/`` while nothing they depend on changed
    (``serving.app.kpi_files``); otherwise they are computed, and stored for the next call.
    """
    from serving.app.kpi_files import EventStore, day_kpis, ledger_bar
    from serving.cli.render import RichBatchProgress, kpi_table

    current = settings()
    store = open_store(current)
    day = parse_date(as_of) if as_of else store.latest_batch_day()
    if day is None:
        raise UserError("no completed batch run yet: run `lstep score --as-of DAY` first")
    sources = EventStore(
        data_dir=current.data_path, events=events or current.events_path,
        customers=customers or current.customers_path, rules_dir=rules_dir,
    )  # fmt: skip
    progress = RichBatchProgress(err_console)  # draws only a long build of the run ledger
    with progress.running():
        found = day_kpis(
            store, day, sources, rules_of_version(current, rules_dir), now=utc_now(),
            ledger_days=ledger_bar(progress),
        )  # fmt: skip
    console.print(kpi_table(found, day))


def rules_of_version(current: object, rules_dir: Path | None) -> Callable[[str | None], tuple]:
    """The rules resolved against a version's operating points, as the batch resolved them for
    the days that version scored (``serving.app.kpi_files.RulesFor``)."""

    def rules_for(version: str | None) -> tuple[RuleSet, str | None]:
        from serving.cli.explain_inputs import version_points
        from serving.infra.rulesets import load_rules

        points = None if version is None else version_points(current, version, warn=_note)
        if points is None:  # rules only, or a version the registry no longer holds
            return load_rules(rules_dir), None
        return load_rules(rules_dir, champion=points), version

    return rules_for


@friendly_errors
def report(
    as_of: DayOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: reports dir).")
    ] = None,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the self-contained HTML report for CS leads (KPIs, tags, call list, model, drift)."""
    from serving.app.jobs import ReportJob
    from serving.cli.render import RichBatchProgress

    day = parse_date(as_of) if as_of else None
    options = {"as_of": day, "out": out, "events": events, "customers": customers}
    job = build_job(ReportJob, config, options)
    progress = RichBatchProgress(err_console)
    with progress.running():
        written = job.run(runtime(progress))
    console.print(f"[green]wrote[/] {written}")
