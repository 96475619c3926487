"""The ``lstep`` Typer app: every command group registered on one root."""

from __future__ import annotations

import typer

from serving.cli import campaigns, daily, dashboard, data, demo, model, outbox, overrides, serve

app = typer.Typer(
    name="lstep",
    help="Learner lifecycle and churn: simulate, validate, build features, train, score, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
rules_app = typer.Typer(help="Status-tag rules: validate and show the transition graph.")
app.add_typer(rules_app, name="rules")

data.register(app)
model.register(app)
daily.register(app, rules_app)
dashboard.register(app)
overrides.register(app)
outbox.register(app)
serve.register(app)
demo.register(app)
campaigns.register(app)

__all__ = ["app"]
