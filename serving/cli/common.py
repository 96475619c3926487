"""What every command group shares: consoles, friendly errors, option types, settings, runtime."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from serving.core.problems import Problem
from serving.settings import Settings, disable_telemetry, utc_now

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
        except (UserError, Problem, ValueError, FileNotFoundError, KeyError) as error:
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


def settings() -> Settings:
    """Settings from the environment (``LSTEP_*``), read at the edge."""
    return Settings()


def runtime(progress: Any = None) -> Any:
    """The runtime a job runs with: the settings, the time now, and where progress goes."""
    from serving.app.jobs import Runtime

    return Runtime(settings=settings(), now=utc_now(), progress=progress)


def build_job(kind: type, config: Path | None, options: dict[str, Any]) -> Any:
    """The job of the command's options, or of the ``--config`` file with given options winning.

    An option counts as given when its value differs from the job field's default.
    """
    if config is None:
        return kind(**options)
    from serving.app.jobs import load_job

    defaults = {name: field.default for name, field in kind.model_fields.items()}
    given = {name: value for name, value in options.items() if value != defaults.get(name)}
    return load_job(kind, config, given)


def open_store(current: Settings, *, init: bool = False) -> Any:
    """The state store of ``current`` settings (created on an empty workspace, never again)."""
    from serving.infra.workspace import open_workspace_store

    return open_workspace_store(current, utc_now(), init=init)


def load_inputs(events: Path, customers: Path, mapping: Path | None, allow_unknown: bool) -> Any:
    """Validated (events, customers) frames, or an InputError whose message is the report."""
    from features.validation import load_valid_inputs

    with err_console.status("validating inputs"):
        return load_valid_inputs(
            events, customers, mapping=mapping, allow_unknown=allow_unknown, now=utc_now()
        )


EventsOpt = Annotated[Path, typer.Option("--events", help="Events file (parquet or CSV).")]
CustomersOpt = Annotated[Path, typer.Option("--customers", help="Customers file (parquet or CSV).")]
OptionalEventsOpt = Annotated[
    Path | None, typer.Option("--events", help="Events file (default: the event store).")
]
OptionalCustomersOpt = Annotated[
    Path | None, typer.Option("--customers", help="Customers file (default: the event store).")
]
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
RulesDirOpt = Annotated[
    Path | None, typer.Option("--rules", help="Directory of rules YAML (default: packaged).")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Job YAML: the same fields as the options (options win)."),
]

__all__ = [
    "AllowUnknownOpt",
    "AsOfOpt",
    "ConfigOpt",
    "CustomersOpt",
    "EventsOpt",
    "EveryDaysOpt",
    "MappingOpt",
    "OptionalCustomersOpt",
    "OptionalEventsOpt",
    "RulesDirOpt",
    "SpineOpt",
    "UserError",
    "build_job",
    "console",
    "err_console",
    "friendly_errors",
    "load_inputs",
    "open_store",
    "parse_date",
    "quiet_libraries",
    "runtime",
    "settings",
]
