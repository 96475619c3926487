"""``lstep dashboard --out DIR``: the live dashboard's pages as static HTML files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from serving.cli.common import (
    RulesDirOpt,
    console,
    err_console,
    friendly_errors,
    open_store,
    settings,
)

if TYPE_CHECKING:
    from models.churn import ChurnModel
    from serving.app.dashboard_why import ModelFor
    from serving.settings import Settings


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
    """Write the dashboard (overview, cohorts, flows, call list, learner pages, value, model
    health, plotly.js) as static files.

    A learner page's reasons are explained with the version that scored the day (the model
    cache ``lstep explain`` uses); the override form is left out (a file cannot post).
    """
    from serving.app.dashboard import DashboardCache, DashboardSource
    from serving.app.dashboard_model_page import ChampionSource
    from serving.app.dashboard_pages import write_dashboard
    from serving.app.dashboard_value_export import write_value_and_model
    from serving.app.dashboard_why import ReasonSource
    from serving.infra.rulesets import load_rules
    from serving.settings import utc_now

    current = settings()
    source = DashboardSource(
        store=open_store(current), customers_path=current.customers_path,
        events_path=current.events_path, data_dir=current.data_path,
        ruleset=load_rules(rules_dir),
    )  # fmt: skip
    reasons = ReasonSource(current.data_path, _version_model(current), deadline_s=None)
    cache = DashboardCache(source, utc_now)
    written = write_dashboard(cache, out, learners=learners, reasons=reasons)
    written += write_value_and_model(cache, ChampionSource(current), out)
    console.print(f"[green]wrote[/] {len(written)} files to {out} (open {out / 'index.html'})")


def _version_model(current: Settings) -> ModelFor:
    """A registered version's ``ChurnModel`` from the model cache (MLflow on first use)."""
    from serving.app.dashboard_why import NoReasons
    from serving.cli.explain_inputs import version_model

    def model_for(version: str) -> ChurnModel:
        model = version_model(current, version, warn=_note)
        if model is None:
            raise NoReasons(f"no reasons: version {version} is no longer in the registry")
        return model

    return model_for


def _note(message: str) -> None:
    err_console.print(f"[dim]note: {message}[/]", highlight=False)
