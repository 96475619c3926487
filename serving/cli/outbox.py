"""Campaign delivery: ``lstep dispatch`` sends the outbox's due messages; ``lstep outbox`` counts.

Sinks, retries, quiet hours and caps come from the settings (``LSTEP_DISPATCH__*``, see
``serving.settings.DispatchSettings``); templates from ``rules.campaigns.render_message``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from rich.table import Table

from serving.cli.common import console, err_console, friendly_errors, open_store, settings
from serving.cli.render import counting_progress
from serving.settings import utc_now


def register(app: typer.Typer) -> None:
    """Add ``dispatch`` and ``outbox`` to ``app``."""
    app.command()(dispatch)
    app.command()(outbox)


@friendly_errors
def dispatch(
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="Only this channel (repeatable).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many messages.", min=1)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and count; send and write nothing.")
    ] = False,
) -> None:
    """Deliver the due campaign messages through their sinks (webhook, email, file)."""
    from serving.app.dispatch import Dispatcher, DispatchOptions
    from serving.app.dispatch import dispatch as run_dispatch
    from serving.infra.sinks import build_sinks

    current = settings()
    config = current.dispatch
    options = DispatchOptions(
        channels=tuple(channel) if channel else None, limit=limit, dry_run=dry_run,
        token=f"dispatch-{uuid.uuid4().hex[:16]}",
    )  # fmt: skip
    parts = Dispatcher(
        store=open_store(current), settings=config, render=renderer(), clock=utc_now,
        open_sinks=lambda channels: build_sinks(config, current.outbox_file, channels),
    )  # fmt: skip
    with counting_progress(err_console) as bars:
        task = bars.add_task("dry run" if dry_run else "dispatch", total=None)

        def advance(done: int, total: int) -> None:
            bars.update(task, advance=done, total=total)

        summary, due = run_dispatch(parts, options, progress=advance)
    console.print(summary_line(summary, due))


def summary_line(summary: Any, due: int) -> str:
    """One line: what the run did, per channel, and how fast."""
    if summary.data_day is None:
        return "nothing to dispatch: no batch day is completed yet"
    channels = ", ".join(f"{name} {count}" for name, count in sorted(summary.by_channel.items()))
    speed = f"{summary.per_second:,.0f} messages/s"
    if summary.dry_run:
        broken = (
            f", {summary.render_errors} could not be rendered (first: {summary.first_error})"
            if summary.render_errors
            else ""
        )
        return (
            f"[bold]dry run[/] (data day {summary.data_day}): {summary.rendered} would be sent "
            f"({channels or 'none'}), {summary.deferred} deferred{broken}; {speed}; "
            "nothing written"
        )
    return (
        f"[bold]dispatched[/] (data day {summary.data_day}, {due} due): sent {summary.sent} "
        f"({channels or 'none'}), failed {summary.failed}, dead {summary.dead}, deferred "
        f"{summary.deferred}; {speed}"
    )


def renderer() -> Any:
    """The campaign templates' renderer (``rules.campaigns.render_message``)."""
    from rules.campaigns import render_message

    return render_message


@friendly_errors
def outbox(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Messages planned on or before this day.")
    ] = None,
) -> None:
    """Campaign messages by state and channel."""
    from serving.cli.common import parse_date

    day = None if as_of is None else parse_date(as_of)
    counts = open_store(settings()).outbox_counts(until=day)
    console.print(outbox_table(counts, day))


def outbox_table(counts: Any, day: Any) -> Table:
    """A state x channel table of message counts, with totals."""
    title = "outbox" + ("" if day is None else f" (planned on or before {day})")
    pivot = counts.pivot_table(
        index="state", columns="channel", values="messages", aggfunc="sum", fill_value=0
    )
    table = Table(title=title)
    table.add_column("state")
    for name in pivot.columns:
        table.add_column(str(name), justify="right")
    table.add_column("total", justify="right")
    for state, row in pivot.iterrows():
        table.add_row(str(state), *(str(int(value)) for value in row), str(int(row.sum())))
    if pivot.empty:
        table.add_row("(no messages)")
    return table


__all__ = ["dispatch", "outbox", "outbox_table", "register", "renderer", "summary_line"]
