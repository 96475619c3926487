"""Every terminal rendering of the CLI: tables, summaries and progress bars (rich).

Library code returns data (``BatchResult``, ``Kpi``, ``Reason``, ``LearnerStatus``,
``ValidationReport``); this module is the one place that draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from serving.core.calllist import value_texts
from serving.core.tags import STATUS_TAGS

if TYPE_CHECKING:  # for annotations only: importing these at run time would cost every command
    # the whole batch path (LightGBM, MLflow, DuckDB, pandera) just to draw one table
    from features.validation_report import ValidationReport
    from serving.app.kpis import Kpi
    from serving.app.status import LearnerStatus
    from serving.app.summary import BatchResult

BEHAVIOUR_NAMES: dict[str, str] = {
    "BT_001": "Engagement:High-Frequency",
    "BT_002": "Usage:Mobile-Primary",
    "BT_003": "Social:Community-Active",
    "BT_004": "Learning:Fast-Track",
    "BT_005": "Usage:Feature-Explorer",
    "BT_006": "Content:Video-Preferred",
    "BT_007": "Social:Collaboration-Focused",
    "BT_008": "Goal:Certification-Driven",
}
"""The brief's behaviour tag names, for display (``rules/behaviours.yaml`` is the source; a
test keeps the two equal)."""


def counting_progress(console: Console) -> Progress:
    """A bar with a count and elapsed time, for the long-running data commands."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class RichBatchProgress:
    """A batch run's progress on a terminal: a bar per stage of a day, one bar for a backfill."""

    def __init__(self, console: Console) -> None:
        columns = (TextColumn("{task.description:<40}"), BarColumn(), TimeElapsedColumn())
        self.bars = Progress(*columns, console=console, transient=False)

    @contextmanager
    def running(self) -> Iterator[RichBatchProgress]:
        with self.bars:
            yield self

    @contextmanager
    def stage(self, as_of: date, name: str) -> Iterator[None]:
        from serving.app.batch import JOB_STAGES, STAGES  # a batch runs: its modules are loaded

        label = STAGES.get(name) or JOB_STAGES.get(name, name)
        task = self.bars.add_task(f"{as_of} {label}", total=1)
        yield
        self.bars.update(task, completed=1)

    def days(self, total: int, what: str = "backfill days") -> Callable[[date], None]:
        task = self.bars.add_task(what, total=total)

        def done(day: date) -> None:
            self.bars.update(task, advance=1, description=f"{what} (done {day})")

        return done


def validation_report(report: ValidationReport) -> RenderableType:
    """The summary and a table of problems of an input validation."""
    style = "green" if report.ok else "bold red"
    table = Table("", "source", "column", "rows", "problem", show_lines=False)
    for problem in (*report.errors, *report.notes):
        shown = f"; e.g. {', '.join(problem.examples)}" if problem.examples else ""
        table.add_row(
            Text(problem.severity, style="red" if problem.severity == "error" else "yellow"),
            problem.source,
            problem.column or "",
            f"{problem.rows:,}",
            problem.message + shown,
        )
    summary = [
        Text(line, style=style if i == 0 else "") for i, line in enumerate(report.summary_lines())
    ]
    return Group(*summary, table) if report.problems else Group(*summary)


def batch_summary(result: BatchResult) -> RenderableType:
    """The end-of-run summary: tags, transitions by rule, the call list."""
    if result.already_done:
        run_id = result.run.run_id if result.run is not None else "?"
        return Group(
            f"[yellow]{result.as_of}: already completed by run {run_id}; nothing was written[/]",
            _tags_table(result),
        )
    mode = "rules only (no model score)" if result.rules_only else f"model v{result.model_version}"
    written = "DRY RUN: nothing written" if result.dry_run else f"run {result.run.run_id}"
    header = (
        f"[bold]{result.as_of}[/]: {result.learners:,} learners ({result.eligible:,} eligible, "
        f"{result.live_inactive:,} live but inactive), {result.transitions:,} transitions; "
        f"{mode}; {written}; {sum(result.stage_seconds.values()):.1f} s"
    )
    parts: list[RenderableType] = [header, _tags_table(result), _rules_table(result)]
    if any(result.skipped.values()):
        parts.append(f"[yellow]moves the store skipped: {result.skipped}[/]")
    parts.append(_top_table(result))
    if result.inputs:  # tells a scheduler whether the log is checked since the day before
        parts.append(f"[dim]inputs: {result.inputs}[/]")
    if result.window:  # tells a scheduler whether the log's order lets the window be carried
        parts.append(f"[dim]window: {result.window}[/]")
    if result.over_capacity:
        parts.append(f"[yellow]{capacity_line(result)}[/]")
    return Group(*parts)


def capacity_line(result: BatchResult) -> str:
    """How many urgent learners the day's capacity for personal outreach moved, and to what."""
    return (
        f"{result.over_capacity:,} P1/P2 learners over capacity moved to automated outreach "
        f"({result.overflow_priority}); {result.to_call:,} left to contact personally"
    )


def _tags_table(result: BatchResult) -> Table:
    table = Table(title="status tags", title_justify="left")
    for column in ("tag", "name", "before", "after", "change"):
        table.add_column(column, justify="left" if column in ("tag", "name") else "right")
    for tag, name in STATUS_TAGS.items():
        before, after = result.tags_before.get(tag, 0), result.tags_after.get(tag, 0)
        table.add_row(tag, name, f"{before:,}", f"{after:,}", f"{after - before:+,}")
    return table


def _rules_table(result: BatchResult) -> Table:
    table = Table(title="transitions by rule", title_justify="left")
    table.add_column("rule")
    table.add_column("moves", justify="right")
    for rule, count in sorted(result.transitions_by_rule.items(), key=lambda item: -item[1]):
        table.add_row(rule, f"{count:,}")
    if result.held:
        table.caption = "held: " + ", ".join(f"{k} {v:,}" for k, v in result.held.items())
    return table


def _top_table(result: BatchResult) -> Table:
    title = f"top {len(result.top_learners)} P1/P2 learners to contact"
    if result.control_excluded:
        title += f" ({result.control_excluded:,} in the control group left out)"
    table = Table(title=title, title_justify="left")
    for column in ("learner", "priority", "tag", "p_churn", "value at risk", "why", "rule: why"):
        table.add_column(column, overflow="fold")
    for learner in result.top_learners:
        p_churn = "-" if learner.p_churn is None else f"{learner.p_churn:.2f}"
        moved = f"{learner.rule_id or 'held'}: {learner.why}" if learner.why else ""
        table.add_row(
            learner.customer_id,
            learner.priority,
            learner.to_tag,
            p_churn,
            f"{learner.value_at_risk:,.2f}",
            escape("\n".join(learner.reasons)),
            escape(moved),
        )
    return table


def kpi_table(results: Sequence[Kpi], day: date) -> Table:
    """The KPIs at ``day`` against their targets (each with its definition under its name)."""
    table = Table(title=f"KPIs on {day}", title_justify="left")
    for column in ("KPI", "value", "target", "met", "treated", "control", "detail"):
        table.add_column(column)
    for kpi in results:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[kpi.meets_target]
        table.add_row(
            Text.assemble((kpi.name, "bold"), "\n", (kpi.definition, "dim")),
            kpi_value(kpi.value, kpi.unit),
            f"{kpi.comparison} {kpi_value(kpi.target, kpi.unit)}",
            met,
            kpi_value(kpi.treated, kpi.unit),
            kpi_value(kpi.control, kpi.unit),
            kpi.detail,
        )
    return table


def kpi_value(value: float | None, unit: str) -> str:
    """A KPI value in its unit; '-' when there is no data."""
    if value is None:
        return "-"
    return f"{value:.1f}%" if unit == "%" else f"{value:,.1f} {unit}"


def reasons_table(title: str, reasons: Sequence[Any]) -> Table:
    """Reason codes as a two-column table: signed points, plain words."""
    table = Table(title=title, title_justify="left")
    table.add_column("points", justify="right")
    table.add_column("reason")
    for reason in reasons:
        table.add_row(f"{reason.points:+.1f}", reason.text)
    return table


def learner_status(status: LearnerStatus) -> RenderableType:
    """A learner's tag, latest score and intervention, open override, and history with reasons.

    Each history row quotes the rule's description and, under it, why the rule fired (the
    facts it fired on), so that "why is this learner at risk?" is answered where it is asked.
    """
    lines: list[RenderableType] = [
        f"[bold]{status.customer_id}[/]: {status.tag} ({status.tag_name}) "
        f"since {status.since} (data day)",
        _latest_score(status),
    ]
    if status.override:
        held = status.override
        until = f"until {held['expires']}" if held["expires"] else "until cleared"
        lines.append(
            f"open override ({held['kind']}): {held['tag']} by {escape(held['actor'])} "
            f"({escape(held['reason'])}), data days from {held['effective_as_of']} {until}"
        )
    else:
        lines.append("open override: none")
    table = Table(title="history (as_of: data day)")
    for name in ("as_of", "move", "by"):
        table.add_column(name, no_wrap=True)  # a day or a tag cut to "2026-05…" says nothing
    table.add_column("reason and why", ratio=1)
    table.add_column("p_churn", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for row in status.history.itertuples(index=False):
        p_churn = "" if _missing(row.p_churn) else f"{row.p_churn:.0%}"
        manual = _missing(row.rule_id)
        # Rule texts may hold brackets ("[no model score: ...]"): text, not rich markup.
        reason = escape(_text(row.reason))
        if not _missing(row.why):
            reason += f"\n[dim]why:[/] {escape(row.why)}"
        if manual:  # the two clocks: the data day it took effect, the instant it was recorded
            reason += f"\n[dim]recorded {str(row.created_at)[:16]} UTC[/]"
        table.add_row(
            str(row.as_of)[:10],
            f"{_text(row.from_tag, 'new')} → {row.to_tag}",
            escape(_text(row.actor if manual else row.rule_id)),
            reason,
            p_churn,
            _text(row.model_version),
        )
    return Group(*lines, table)


def _latest_score(status: LearnerStatus) -> str:
    """Priority, action, p_churn, confidence and signal of the learner's last scored day."""
    score = status.score
    signal = f"signal {status.signal or '-'}"
    if score is None:
        return f"not scored yet; {signal}"
    p_churn = "-" if _missing(score["p_churn"]) else f"{score['p_churn']:.0%}"
    confidence = "-" if _missing(score["confidence"]) else f"{score['confidence']:.0%}"
    control = " (control group: no intervention)" if score["control"] else ""
    campaign = ""
    if not _missing(score.get("campaign_id")):
        campaign = f"; campaign {score['campaign_id']} via {_text(score.get('channel'), '-')}"
    values = value_texts(score, missing="-")
    return (
        f"priority {_text(score['priority'], '-')}, action {_text(score['action'], '-')}{control}"
        f"{campaign}; p_churn {p_churn}, confidence {confidence}; {signal} "
        f"(scored {score['as_of']})\nvalue at risk {values['value_at_risk']}; expected months "
        f"{values['expected_months']}, projected value {values['projected_value']}\n"
        f"{behaviour_line(score)}"
    )


def behaviour_line(score: dict[str, Any]) -> str:
    """The behaviour tags of a stored score row, with their names (the scores table keeps them
    once the store has the column; older stores say so)."""
    if "behaviour_tags" not in score:
        return "behaviour tags: not stored"
    ids = [part for part in _text(score["behaviour_tags"]).split(",") if part]
    if not ids:
        return "behaviour tags: none"
    named = [f"{tag} {BEHAVIOUR_NAMES.get(tag, '')}".strip() for tag in ids]
    return "behaviour tags: " + ", ".join(named)


def decision_lines(record: dict[str, Any]) -> RenderableType:
    """What the rules decided for a learner and why (``lstep explain``, under the reasons)."""
    tags = f"{_text(record['current_tag'], 'new')} -> {_text(record['proposed_tag'], '-')}"
    lines = [f"[bold]rules:[/] {tags}: {escape(_text(record['rule_description']))}"]
    if record["why"] is not None:
        lines.append(f"[bold]why:[/] {escape(record['why'])}")
    indicators = ", ".join(indicator["text"] for indicator in record["risk_indicators"])
    lines.append(f"[bold]risk indicators on:[/] {escape(indicators or 'none')}")
    if record.get("campaign_id") is not None:
        lines.append(f"[bold]campaign:[/] {record['campaign_id']} via {record.get('channel')}")
    if "behaviour_tags" in record:
        lines.append(behaviour_line({"behaviour_tags": ",".join(record["behaviour_tags"])}))
    return Group(*lines)


def campaigns_table(ruleset: Any) -> Table:
    """The campaign catalogue (``lstep rules check``): trigger, cadence, cap, exit, variants."""
    from rules.campaigns import TransitionTrigger

    days = ruleset.campaigns.arrival_days
    arrivals = (
        "a first tag fires a move's campaign for every learner (arrival_days: null)"
        if days is None
        else f"a first tag fires a move's campaign only for a learner enrolled in the last "
        f"{days} days (arrival_days); anyone else is onboarded onto their tag's campaigns"
    )
    table = Table(title="campaigns (first matching trigger wins, top to bottom)", caption=arrivals)
    for name in ("id", "name", "trigger", "cadence", "cap", "exit", "A/B"):
        table.add_column(name, overflow="fold")
    for campaign in ruleset.campaigns.campaigns:
        trigger = campaign.trigger
        if isinstance(trigger, TransitionTrigger):
            sources = ",".join(trigger.sources) or "any"
            when = f"{sources} -> {trigger.into}"
        else:
            parts = [trigger.tag, trigger.product_tag, trigger.priority]
            when = " x ".join(part for part in parts if part)
        if trigger.behaviour:
            when += f" + {trigger.behaviour}"
        steps = ", ".join(
            f"d{step.delay_days} {step.channel}"
            + "".join(f" ({tag}: {channel})" for tag, channel in step.prefer.items())
            for step in campaign.steps
        )
        cap = campaign.frequency_cap
        leaves = campaign.exit
        exit_text = (
            ""
            if leaves is None
            else (
                f"tag in {', '.join(leaves.tag_in)}"
                if leaves.tag_in is not None
                else f"tag not in {', '.join(leaves.tag_not_in)}"
            )
        )
        table.add_row(
            campaign.id,
            escape(campaign.name),
            when,
            steps,
            f"{cap.max_messages}/{cap.per_days}d" + (" spread" if campaign.spread else ""),
            exit_text,
            " ".join(f"{v.id}:{v.weight:g}" for v in campaign.variants),
        )
    return table


def _missing(value: Any) -> bool:
    """True for None and NaN/NA, the shapes a null takes in a frame row."""
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _text(value: Any, default: str = "") -> str:
    """A table cell: the value as text, or ``default`` when it is null."""
    return default if _missing(value) else str(value)


__all__ = [
    "RichBatchProgress",
    "batch_summary",
    "behaviour_line",
    "campaigns_table",
    "counting_progress",
    "decision_lines",
    "kpi_table",
    "kpi_value",
    "learner_status",
    "reasons_table",
    "validation_report",
]
