"""Overrides on the data's clock: ``lstep override`` (start, hold, clear) and ``lstep overrides``.

Days are DATA days (the event log's), never the machine's: an override takes effect by default
on the day after the latest completed batch day, the next day the batch decides.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

import typer

from serving.cli.common import (
    RulesDirOpt,
    UserError,
    console,
    friendly_errors,
    open_store,
    parse_date,
    settings,
)
from serving.settings import utc_now

_DURATION = re.compile(r"^\s*(\d+)\s*([dw]?)\s*$")


def register(app: typer.Typer) -> None:
    """Add ``override`` and ``overrides`` to ``app``."""
    app.command()(override)
    app.command()(overrides)


def parse_days(value: str) -> int:
    """``28``, ``28d`` or ``4w`` as a number of days."""
    match = _DURATION.match(value)
    if match is None:
        raise UserError(f"--for {value!r}: give days as 28, 28d or 4w")
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


@friendly_errors
def override(
    customer_id: Annotated[str, typer.Argument(help="The learner's customer_id.")],
    actor: Annotated[str, typer.Option("--actor", help="Who decides (recorded).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (quoted in the audit log).")],
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag", help="ST_005 starts a retention campaign; another tag moves and holds."
        ),
    ] = None,
    hold: Annotated[
        bool, typer.Option("--hold", help="Hold the learner at their current tag.")
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="End the learner's open override early.")
    ] = False,
    effective: Annotated[
        str | None,
        typer.Option("--effective", help="First data day it applies (default: next batch day)."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="First data day it no longer applies.")
    ] = None,
    for_days: Annotated[
        str | None, typer.Option("--for", help="Its length: 28d, 4w (campaign default: 28d).")
    ] = None,
    rules_dir: RulesDirOpt = None,
) -> None:
    """Start a retention campaign (--tag ST_005), hold a learner, move them, or --clear."""
    from serving.app.status import clear_override, set_override

    store = open_store(settings())
    start = parse_date(effective) if effective else None
    if clear:
        if tag or hold or expires or for_days:
            raise UserError("--clear ends an override: give no --tag, --hold, --expires or --for")
        found = clear_override(
            store, customer_id, words=(actor, reason), now=utc_now(), effective=start
        )
        console.print(f"[green]{customer_id}: override cleared[/] by {actor}: {reason}")
        console.print(f"now {found.tag} since {found.since}")
        return
    if hold == (tag is not None):
        raise UserError("give --tag TAG (campaign or move) or --hold (keep the current tag)")
    request = _request(customer_id, actor, reason, tag, start, expires, for_days)
    found = set_override(store, request, policy=_policy(rules_dir), now=utc_now())
    console.print(_started(found.override, actor, reason))


@friendly_errors
def overrides(
    active: Annotated[
        bool, typer.Option("--active", help="Only those applying from the next batch day on.")
    ] = False,
    learner: Annotated[str | None, typer.Option("--learner", help="One learner's only.")] = None,
) -> None:
    """List overrides, newest first: data days beside the wall-clock time they were recorded."""
    from rich.table import Table

    from serving.app.status import list_overrides

    frame = list_overrides(
        open_store(settings()), now=utc_now(), customer_id=learner, active=active
    )
    table = Table(title=f"{len(frame)} overrides (from/until/ended: data days)")
    for name in ("learner", "tag", "kind", "from", "until"):
        table.add_column(name, no_wrap=True)  # an id or a day cut to "C00…" says nothing
    table.add_column("who: why (recorded, UTC); ended", overflow="fold", min_width=12, ratio=1)
    for row in frame.itertuples(index=False):
        said = f"{row.actor}: {row.reason} ({str(row.created_at)[:16]})"
        if _day(row.cleared_as_of):
            said += f"; ended {_day(row.cleared_as_of)} by {row.cleared_by or 'rule'}: "
            said += str(row.clear_reason)
        table.add_row(
            row.customer_id, row.tag, row.kind, _day(row.effective_as_of),
            _day(row.expires) or "until cleared", said,
        )  # fmt: skip
    console.print(table)


def _request(
    customer_id: str,
    actor: str,
    reason: str,
    tag: str | None,
    start: date | None,
    expires: str | None,
    for_days: str | None,
) -> Any:
    from serving.core.overrides import OverrideRequest

    return OverrideRequest(
        customer_id=customer_id, actor=actor, reason=reason, tag=tag, effective=start,
        expires=parse_date(expires) if expires else None,
        days=parse_days(for_days) if for_days else None,
    )  # fmt: skip


def _policy(rules_dir: Any) -> Any:
    from serving.core.overrides import OverridePolicy
    from serving.infra.rulesets import load_rules

    return OverridePolicy.of(load_rules(rules_dir))


def _started(held: dict[str, Any] | None, actor: str, reason: str) -> str:
    if held is None:
        return f"[green]recorded[/] by {actor}: {reason}"
    until = f"until {held['expires']}" if held["expires"] else "until cleared"
    return (
        f"[green]{held['tag']} ({held['kind']})[/] from data day {held['effective_as_of']} "
        f"{until}, by {actor}: {reason}"
    )


def _day(value: Any) -> str:
    if value is None or str(value) in ("NaT", "None", "nan"):
        return ""
    return str(value)[:10]
