"""Settings: frozen pydantic-settings, read from the environment (prefix ``LSTEP_``) or a YAML file.

Everything the app writes lives under ``LSTEP_HOME`` (default ``./.lstep``); each location can be
overridden on its own (``LSTEP_STATE_URL=postgresql+psycopg://...``). The MLflow tracking URI also
honours MLflow's own ``MLFLOW_TRACKING_URI`` so that an existing MLflow server is picked up.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TELEMETRY_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
}
"""Variables that stop MLflow and BentoML from calling home (there is no internet at run time)."""


def utc_now() -> datetime:
    """The real current time. Read only at the edges (CLI, HTTP, the store's run stamps) and
    passed inward as ``now``: logic never reads the clock."""
    return datetime.now(UTC)


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
    model_name: str = "lstep-churn"
    horizon_days: int = 30

    @property
    def data_path(self) -> Path:
        """Parquet data directory (simulated or imported events, customers, features)."""
        return self.data_dir or self.home / "data"

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
        return f"models:/{self.model_name}@champion"


def load_settings(config_file: Path | None = None) -> Settings:
    """Build settings from an optional YAML file; environment variables override the file.

    Raises:
        ValueError: when the YAML file is not a mapping or names an unknown setting.
    """
    if config_file is None:
        return Settings()
    loaded = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ValueError(f"{config_file}: expected a mapping of settings, got {kind}")
    from_env = Settings().model_dump(exclude_unset=True)
    return Settings(**{**loaded, **from_env})


__all__ = ["TELEMETRY_ENV", "Settings", "disable_telemetry", "load_settings", "utc_now"]
