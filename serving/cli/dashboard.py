"""``lstep dashboard --out DIR``: the live dashboard's pages as static HTML files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from serving.cli.common import RulesDirOpt, console, friendly_errors, open_store, settings


def register(app: typer.Typer) -> None:
    """Add ``dashboard`` to ``app``."""
    app.command()(dashboard)


@friendly_errors
def dashboard(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the pages into.")],
    learners: Annotated[
        int, typer.Option("--learners", min=0, help="Learner pages: the call list's first N.")
    ] = 100,
    rules_dir: RulesDirOpt = None,
) -> None:
    """Write the dashboard (overview, call list, learner pages, value, model health, plotly.js)
    as static files."""
    from serving.app.dashboard import DashboardCache, DashboardSource
    from serving.app.dashboard_model_page import ChampionSource
    from serving.app.dashboard_pages import write_dashboard
    from serving.app.dashboard_value_export import write_value_and_model
    from serving.infra.rulesets import load_rules
    from serving.settings import utc_now

    current = settings()
    source = DashboardSource(
        store=open_store(current), customers_path=current.customers_path,
        events_path=current.events_path, data_dir=current.data_path,
        ruleset=load_rules(rules_dir),
    )  # fmt: skip
    cache = DashboardCache(source, utc_now)
    written = write_dashboard(cache, out, learners=learners)
    written += write_value_and_model(cache, ChampionSource(current), out)
    console.print(f"[green]wrote[/] {len(written)} files to {out} (open {out / 'index.html'})")
