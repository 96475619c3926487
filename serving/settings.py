"""Settings: frozen pydantic-settings, read from the environment (prefix ``LSTEP_``) or a YAML file.

Everything the app writes lives under ``LSTEP_HOME`` (default ``./.lstep``); each location can be
overridden on its own (``LSTEP_STATE_URL=postgresql+psycopg://...``). The MLflow tracking URI also
honours MLflow's own ``MLFLOW_TRACKING_URI`` so that an existing MLflow server is picked up.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.schemas import CUSTOMERS_FILE, EVENTS_FILE

TELEMETRY_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
}
"""Variables that stop MLflow and BentoML from calling home (there is no internet at run time)."""
DEFAULT_MODEL_NAME = "lstep-churn"
FROZEN_CLOCK_ENV = "LSTEP_NOW"
"""Names the instant ``utc_now`` returns instead of the real clock (see ``utc_now``)."""
CHAMPION_ALIAS = "champion"


def utc_now() -> datetime:
    """The current time, read only at the edges (CLI, HTTP, the store's run stamps) and passed
    inward as ``now``: logic never reads the clock.

    ``LSTEP_NOW`` (an ISO 8601 instant; naive means UTC) freezes it: for replaying a past day
    as if it were today, for demos on old logs, and for tests that must not depend on the day
    they run. Unset in production.

    Raises:
        ValueError: ``LSTEP_NOW`` is set but is not an ISO 8601 instant.
    """
    frozen = os.environ.get(FROZEN_CLOCK_ENV, "").strip()
    if not frozen:
        return datetime.now(UTC)
    try:
        instant = datetime.fromisoformat(frozen)
    except ValueError:
        raise ValueError(
            f"{FROZEN_CLOCK_ENV}={frozen!r} is not an ISO 8601 instant (e.g. 2026-06-15T02:00:00Z)"
        ) from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def disable_telemetry() -> None:
    """Set the telemetry opt-outs in this process unless the caller set them already."""
    for name, value in TELEMETRY_ENV.items():
        os.environ.setdefault(name, value)


class Settings(BaseSettings):
    """Where lstep reads and writes, and the knobs shared by the CLI, batch job and service."""

    model_config = SettingsConfigDict(env_prefix="LSTEP_", frozen=True, extra="forbid")

    home: Path = Path(".lstep")
    data_dir: Path | None = None
    state_url: str | None = None
    mlflow_tracking_uri: str | None = None
    bentoml_home: Path | None = None
    reports_dir: Path | None = None
    model_name: str = DEFAULT_MODEL_NAME

    @property
    def data_path(self) -> Path:
        """Parquet data directory (simulated or imported events, customers, features)."""
        return self.data_dir or self.home / "data"

    @property
    def events_path(self) -> Path:
        """The event store's events file."""
        return self.data_path / EVENTS_FILE

    @property
    def customers_path(self) -> Path:
        """The event store's customers file."""
        return self.data_path / CUSTOMERS_FILE

    @property
    def state_database_url(self) -> str:
        """SQLAlchemy URL of the state store; SQLite under ``home`` by default."""
        return self.state_url or f"sqlite:///{(self.home / 'state.db').resolve()}"

    @model_validator(mode="after")
    def _pin_tracking_uri(self) -> Settings:
        # MLflow's own variable is read once, here: mlflow.set_tracking_uri() rewrites it in this
        # process, so reading it later would follow whatever URI a library set last.
        explicit = self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        resolved = explicit or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"
        object.__setattr__(self, "mlflow_tracking_uri", resolved)
        return self

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking/registry URI; the sqlite file under ``home`` by default."""
        return str(self.mlflow_tracking_uri)

    @property
    def artifacts_path(self) -> Path:
        """Where MLflow stores artifacts when the tracking store is the local sqlite file."""
        return self.home / "mlartifacts"

    @property
    def bentoml_path(self) -> Path:
        """BENTOML_HOME for the model store and built bentos."""
        return self.bentoml_home or self.home / "bentoml"

    @property
    def reports_path(self) -> Path:
        """Where HTML reports are written."""
        return self.reports_dir or self.home / "reports"

    @property
    def champion_uri(self) -> str:
        """The registry URI serving loads: by alias, never by run id."""
        return champion_uri(self.model_name)


def champion_uri(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The registry URI of the champion: ``models:/<name>@champion`` (never a run id)."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


__all__ = [
    "CHAMPION_ALIAS",
    "DEFAULT_MODEL_NAME",
    "FROZEN_CLOCK_ENV",
    "TELEMETRY_ENV",
    "Settings",
    "champion_uri",
    "disable_telemetry",
    "utc_now",
]
