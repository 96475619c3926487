"""Campaign delivery: ``lstep dispatch`` sends the outbox's due messages; ``lstep outbox`` counts.

Sinks, retries, quiet hours and caps come from the settings (``LSTEP_DISPATCH__*``, see
``serving.settings.DispatchSettings``); templates from ``rules.campaign_rendering.render_message``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
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
    from serving.app.dispatch import DispatchOptions
    from serving.app.dispatch import dispatch as run_dispatch

    current = settings()
    config = current.dispatch
    options = DispatchOptions(
        channels=tuple(channel) if channel else None, limit=limit, dry_run=dry_run,
        token=f"dispatch-{uuid.uuid4().hex[:16]}",
    )  # fmt: skip
    parts = dispatcher(open_store(current), config, current.outbox_file)
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


def dispatcher(store: Any, config: Any, file_path: Path) -> Any:
    """The parts of a dispatch run: the store, sinks by ``config`` (the file sink writing to
    ``file_path``), the campaign templates' renderer and the wall clock."""
    from rules.campaign_rendering import render_message
    from serving.app.dispatch import Dispatcher
    from serving.infra.sinks import build_sinks

    return Dispatcher(
        store=store, settings=config, render=render_message, clock=utc_now,
        open_sinks=lambda channels: build_sinks(config, file_path, channels),
    )  # fmt: skip


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


def campaign_day_table(messages: Any, day: Any) -> Table:
    """The campaigns a day triggered: learners, and their messages by state and channel.

    ``sent``: delivered; ``control``: the control group's, recorded and never sent; ``later``:
    steps due on later days (or waiting for a retry); ``channels``: all the day's messages.

    Args:
        messages: the outbox rows planned on ``day`` (``StateStore.outbox_frame``).
        day: the batch day.
    """
    table = Table(title=f"campaigns triggered on {day}")
    for name in ("campaign", "learners", "sent", "control", "later", "channels"):
        table.add_column(name, justify="left" if name in ("campaign", "channels") else "right")
    if messages.empty:
        table.add_row("(none)")
        return table
    for campaign_id, rows in messages.groupby("campaign_id", sort=True):
        states = rows["state"].value_counts()
        channels = rows["channel"].value_counts().sort_index()
        table.add_row(
            str(campaign_id),
            f"{rows['customer_id'].nunique():,}",
            f"{states.get('sent', 0):,}",
            f"{states.get('suppressed', 0):,}",
            f"{states.get('pending', 0) + states.get('failed', 0):,}",
            " ".join(f"{name}:{count:,}" for name, count in channels.items()),
        )
    return table


__all__ = [
    "campaign_day_table",
    "dispatch",
    "dispatcher",
    "outbox",
    "outbox_table",
    "register",
    "summary_line",
]
