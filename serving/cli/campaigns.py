"""``lstep campaigns``: the measured effect of each campaign and A/B variant against its control.

The outbox and the feedback are read from the state store through ``store_records`` (the
``CampaignRecords`` contract of ``serving.app.campaign_effect``); conversions come from the event
log (``serving.app.campaign_inputs.measured_effect``: the event store's parquet file once DuckDB
proves it clean, else the validated log). The numbers are ``serving.app.campaign_effect``'s.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any

import typer
from rich.table import Table

from serving.cli.common import (
    OptionalCustomersOpt,
    OptionalEventsOpt,
    UserError,
    console,
    err_console,
    friendly_errors,
    open_store,
    parse_date,
    settings,
)

OUTBOX_TABLE = "outbox"


def register(app: typer.Typer) -> None:
    """Add ``campaigns`` to ``app``."""
    app.command()(campaigns)


@friendly_errors
def campaigns(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Day (default: the latest batch day).")
    ] = None,
    events: OptionalEventsOpt = None,
    customers: OptionalCustomersOpt = None,
    window_days: Annotated[
        int, typer.Option("--window-days", help="Conversion window after a message.", min=1)
    ] = 14,
    min_effect: Annotated[
        float,
        typer.Option("--min-effect", help="Smallest uplift worth knowing (0.05 = 5 points)."),
    ] = 0.05,
) -> None:
    """Per campaign and variant: sent, opened, clicked, converted, the control's rate, the
    uplift with a 95% interval and p-value, and whether the sample is large enough to tell."""
    from serving.app.batch_inputs import BatchInputs
    from serving.app.campaign_effect import EffectSettings, effect_summary
    from serving.app.campaign_inputs import measured_effect
    from serving.settings import utc_now

    effect_settings = _effect_settings(EffectSettings, window_days, min_effect)
    current = settings()
    store = open_store(current)
    records = store_records(store)
    day = parse_date(as_of) if as_of else store.latest_batch_day()
    if day is None:
        raise UserError("no completed batch run yet: run `lstep score --as-of DAY` or give --as-of")
    events = events or current.events_path
    customers = customers or current.customers_path
    if not events.exists():
        raise UserError(f"no event log at {events}: conversions are read from it (--events)")
    with err_console.status("checking the event log"):
        # proved clean by DuckDB: read as a file (only the re-engagement events the measure
        # needs); otherwise validated whole, as lstep score does
        log = BatchInputs(events=events, customers=customers).checked(utc_now()).events
    effect = measured_effect(records, log, day, effect_settings)
    console.print(effect_table(effect_summary(effect), day, effect_settings))


def _effect_settings(kind: type, window_days: int, min_effect: float) -> Any:
    """The thresholds of the options; a bad value is a ValueError naming the option."""
    from pydantic import ValidationError

    try:
        return kind(conversion_days=window_days, min_effect=min_effect)
    except ValidationError as error:
        fields = {"conversion_days": "--window-days", "min_effect": "--min-effect"}
        bad = ", ".join(
            f"{fields.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in error.errors()
        )
        raise UserError(bad) from None


def store_records(store: Any) -> Any:
    """The store as ``CampaignRecords``, or one clear error when it has no outbox yet.

    Raises:
        UserError: the store's database has no outbox table, or the store cannot read it.
    """
    from sqlalchemy import inspect

    from serving.infra.sql import open_engine, safe_url

    engine = open_engine(store.url)
    try:
        present = inspect(engine).has_table(OUTBOX_TABLE)
    finally:
        engine.dispose()
    readable = all(hasattr(store, name) for name in ("measured_outbox", "feedback_frame"))
    if not (present and readable):
        raise UserError(
            f"state store {safe_url(store.url)} has no campaign outbox yet: campaigns are "
            "recorded by the batch once the outbox is in place (run `lstep score` for a day)"
        )
    return store


def effect_table(summary: Any, day: date, effect_settings: Any) -> Table:
    """The rich table of ``effect_summary`` rows, with what the numbers mean underneath."""
    table = Table(title=f"campaign effect on {day}", title_justify="left")
    for column in summary.columns:
        table.add_column(column, justify="left" if column in ("Campaign", "Variant") else "right")
    for row in summary.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    table.caption = (
        f"per learner, first message of a campaign; converted = a session or lesson within "
        f"{effect_settings.conversion_days} days of it (treated: or feedback). Rates and uplift "
        "compare log conversions of all treated (sent or not) with the control (suppressed); "
        "Newcombe 95% interval, pooled z-test; p (BH): adjusted for the table's many campaigns "
        f"(Benjamini-Hochberg), read it first; enough = detectable effect at 80% power <= "
        f"{effect_settings.min_effect * 100:g} points. Pending: window not complete yet."
    )
    if summary.empty:
        table.caption = f"no campaign messages planned by {day}"
    return table


def _cell(value: object) -> str:
    if isinstance(value, float):  # NaN: no rate without learners; inf: no MDE without both arms
        return f"{value:g}" if math.isfinite(value) else "-"
    return str(value)


__all__ = ["campaigns", "effect_table", "register", "store_records"]
