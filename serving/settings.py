"""Settings: frozen pydantic-settings, read from the environment (prefix ``LSTEP_``) or a YAML file.

Everything the app writes lives under ``LSTEP_HOME`` (default ``./.lstep``); each location can be
overridden on its own (``LSTEP_STATE_URL=postgresql+psycopg://...``). The MLflow tracking URI also
honours MLflow's own ``MLFLOW_TRACKING_URI`` so that an existing MLflow server is picked up.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.layout import CUSTOMERS_FILE, EVENTS_FILE

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


SINK_NAMES: tuple[str, ...] = ("webhook", "email", "file")
"""The sinks ``lstep dispatch`` can deliver through (``serving.infra.sinks``)."""
DEFAULT_SINKS: dict[str, str] = {
    "email": "email", "push": "file", "in_app": "file", "csm_task": "file", "webhook": "webhook",
}  # fmt: skip
"""Channel -> sink unless ``LSTEP_DISPATCH__SINKS`` says otherwise (push and in-app go to the
marketing tool's file; a CSM task is a row in it too)."""


class DispatchSettings(BaseModel):
    """How ``lstep dispatch`` delivers campaign messages (``LSTEP_DISPATCH__<FIELD>``).

    Attributes:
        sinks: channel -> sink (``webhook``, ``email`` or ``file``).
        webhook_url: where the webhook sink POSTs (JSON; signed ``X-Lstep-Signature``).
        webhook_secret: the HMAC-SHA256 key of the signature; a webhook sink refuses to start
            without one (an empty secret is no secret).
        webhook_timeout_s: per request.
        webhook_attempts: tries of one message within a dispatch (500s and connection
            errors), with exponential backoff from ``webhook_backoff_s``.
        smtp_host, smtp_port, smtp_from, smtp_timeout_s: the mail server the email sink uses.
        smtp_to: the recipient when the message's context has no ``email``.
        file_path: the JSONL file the file sink appends to (default
            ``$LSTEP_HOME/outbox/messages.jsonl``).
        max_tries: dispatch attempts before a message is ``dead``.
        retry_base_s, retry_max_s: the wait before retrying a failed message doubles from
            ``retry_base_s`` with each try, up to ``retry_max_s``.
        lease_s: how long a claim holds a message (a dispatcher killed mid-send leaves it to
            another after this).
        quiet_start, quiet_end, quiet_channels: a daily UTC window when those channels wait
            (deferred, not lost); equal start and end: no quiet hours.
        max_per_learner, cap_window_h: at most this many messages per learner per window.
        batch_size: messages claimed at a time.
        record_every: outcomes recorded per transaction (a dispatcher killed mid-group sends
            that group again after the lease: at least once, deduplicated by message id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sinks: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SINKS))
    webhook_url: str = "http://127.0.0.1:8099/lstep/messages"
    webhook_secret: SecretStr = SecretStr("")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_attempts: int = Field(default=3, ge=1, le=10)
    webhook_backoff_s: float = Field(default=0.2, ge=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "lstep@localhost"
    smtp_to: str = "{customer_id}@learners.invalid"
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    file_path: Path | None = None
    max_tries: int = Field(default=5, ge=1)
    retry_base_s: float = Field(default=60.0, ge=0)
    retry_max_s: float = Field(default=6 * 3600.0, ge=0)
    lease_s: float = Field(default=300.0, gt=0)
    quiet_start: time = time(21, 0)
    quiet_end: time = time(7, 0)
    quiet_channels: tuple[str, ...] = ("email", "push")
    max_per_learner: int = Field(default=3, ge=1)
    cap_window_h: float = Field(default=24.0, gt=0)
    batch_size: int = Field(default=200, ge=1)
    record_every: int = Field(default=50, ge=1)

    @field_validator("sinks", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # Naming one channel's sink keeps the others' defaults.
        return {**DEFAULT_SINKS, **value} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _known_sinks(self) -> DispatchSettings:
        unknown = {channel: sink for channel, sink in self.sinks.items() if sink not in SINK_NAMES}
        if unknown:
            raise ValueError(f"dispatch.sinks: unknown sink(s) {unknown}: use one of {SINK_NAMES}")
        return self


class Settings(BaseSettings):
    """Where lstep reads and writes, and the knobs shared by the CLI, batch job and service."""

    model_config = SettingsConfigDict(
        env_prefix="LSTEP_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    home: Path = Path(".lstep")
    data_dir: Path | None = None
    state_url: str | None = None
    mlflow_tracking_uri: str | None = None
    bentoml_home: Path | None = None
    reports_dir: Path | None = None
    model_name: str = DEFAULT_MODEL_NAME
    carry_window: bool = True
    """Keep each batch day's window for the next day (``features.carry``; off: aggregated)."""
    carry_proof: bool = True
    """Keep each batch day's proof of its inputs for the next day, which then checks only the
    events since (``features.kept_proof``; off: the whole log is proved every day)."""
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

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
    def outbox_file(self) -> Path:
        """Where the file sink appends messages (JSONL)."""
        return self.dispatch.file_path or self.home / "outbox" / "messages.jsonl"

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
    "SINK_NAMES",
    "TELEMETRY_ENV",
    "DispatchSettings",
    "Settings",
    "champion_uri",
    "disable_telemetry",
    "utc_now",
]
