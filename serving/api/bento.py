"""``lstep serve``: copy the champion into the BentoML model store, then run the HTTP service.

The MLflow registry stays the source of truth (``models:/lstep-churn@champion``). ``serve``
resolves the alias to a version, imports that version with ``bentoml.mlflow.import_model`` under
the tag ``lstep-churn:mlflow-v<version>`` (once: a version already in the store is reused), and
execs ``bentoml serve serving.api.service:LstepService``. The service declares
``bentoml.models.BentoModel("lstep-churn:latest")``, so it serves the newest import and
``bentoml build`` (``bentofile.yaml``) packs it into the bento.

The BentoML store lives at ``Settings().bentoml_path`` (``BENTOML_HOME``, by default
``$LSTEP_HOME/bentoml``). BentoML reads ``BENTOML_HOME`` once per process, so this module sets it
before its first (lazy) ``import bentoml`` and checks that an earlier import did not settle on
another home. ``LSTEP_RULES_ONLY=true`` serves the rules alone: nothing is imported and the
service starts without a model.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.app.online import Limits
from serving.core.assess import TOP_REASONS
from serving.infra.champion import (
    Champion,
    champion_version,
    load_champion,
    require_champion,
    unwrap_churn_model,
)
from serving.settings import TELEMETRY_ENV, Settings, disable_telemetry

BENTO_MODEL_NAME = "lstep-churn"
"""Name of the champion in the BentoML model store."""
SERVED_MODEL_TAG = f"{BENTO_MODEL_NAME}:latest"
"""What the service declares: the newest import."""
SERVICE_IMPORT = "serving.api.service:LstepService"
METADATA_VERSION = "mlflow_version"
METADATA_URI = "mlflow_uri"
METADATA_MODEL_NAME = "mlflow_model_name"
HINT = " (or set LSTEP_RULES_ONLY=true to serve the rules alone)"
"""How to start the service without a champion."""


class ServiceSettings(BaseSettings):
    """Knobs of the HTTP service, from ``LSTEP_*`` variables (beside ``serving.settings``).

    Attributes:
        api_token: the bearer token of ``/override`` and ``/score`` with ``apply``; unset, empty
            or blank, both are refused (401) for everyone: an empty secret is no secret.
        max_batch: most learners one ``/score`` request may carry (413 above).
        max_events: most inline events one ``/score`` request may carry (413 above).
        rules_only: serve without a model (scores null, rules decide on features alone); the
            service then starts whether or not a champion exists.
        rules_dir: a rules directory to load instead of the packaged rules.
        top_reasons: reason codes per learner in ``/score``.
        warm_reasons: how many of the day's learners (call-list order: P1 first) get their
            reason codes computed in the background when a snapshot's answers are built; the
            others are explained on their first request (TreeSHAP, a few ms each).
        reasons_cache: how many learners' reason codes a worker keeps (LRU); the day's answers
            themselves are memory-mapped from a file, so memory grows with this, not with the
            number of learners.
        api_workers: worker processes of the public service (each maps the same answers file;
            2 on 2 cores: one process queues requests at concurrency 32).
        max_body_bytes: the largest request body; a larger one gets its 413 before parsing.
    """

    model_config = SettingsConfigDict(env_prefix="LSTEP_", frozen=True, extra="forbid")

    api_token: SecretStr | None = None
    max_batch: int = Field(default=1000, ge=1)
    max_events: int = Field(default=200_000, ge=1)
    rules_only: bool = False
    rules_dir: Path | None = None
    top_reasons: int = Field(default=TOP_REASONS, ge=0)
    warm_reasons: int = Field(default=50_000, ge=0)
    reasons_cache: int = Field(default=100_000, ge=1)
    api_workers: int = Field(default=2, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    @property
    def limits(self) -> Limits:
        """What one request may carry."""
        return Limits(max_learners=self.max_batch, max_events=self.max_events)

    @property
    def write_token(self) -> str | None:
        """The token writes need, or None when writes are refused (token unset, empty or blank)."""
        if self.api_token is None or not self.api_token.get_secret_value().strip():
            return None
        return self.api_token.get_secret_value()

    def token_warning(self) -> str | None:
        """What start-up must warn about the token, or None when writes are enabled."""
        if self.api_token is None:
            return "LSTEP_API_TOKEN is not set: /override and apply are refused (401)"
        if self.write_token is None:
            return (
                "LSTEP_API_TOKEN is empty: an empty secret is no secret, so /override and apply "
                "are refused (401); set a non-blank token to enable them"
            )
        return None


def bento_model_tag(version: str) -> str:
    """The BentoML tag of a registered MLflow version (BentoML versions are lowercase words)."""
    return f"{BENTO_MODEL_NAME}:mlflow-v{version}"


def service_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``bentoml serve`` runs with: ``base`` plus the locations and telemetry off.

    Every location is passed resolved (absolute paths, the full state and tracking URLs), so the
    service finds the same files as the process that started it, whatever its working directory.
    """
    environment = dict(os.environ if base is None else base)
    for name, value in TELEMETRY_ENV.items():
        environment.setdefault(name, value)
    environment.update(
        {
            "BENTOML_HOME": str(settings.bentoml_path.resolve()),
            "LSTEP_HOME": str(settings.home.resolve()),
            "LSTEP_DATA_DIR": str(settings.data_path.resolve()),
            "LSTEP_STATE_URL": settings.state_database_url,
            "LSTEP_MLFLOW_TRACKING_URI": settings.tracking_uri,
            "LSTEP_MODEL_NAME": settings.model_name,
        }
    )
    return environment


def use_bentoml_home(settings: Settings) -> Path:
    """Point this process's BentoML at ``settings.bentoml_path``, before BentoML reads it.

    Raises:
        RuntimeError: when BentoML already settled on another home in this process.
    """
    disable_telemetry()
    home = settings.bentoml_path.resolve()
    os.environ["BENTOML_HOME"] = str(home)
    from bentoml._internal.configuration.containers import BentoMLContainer

    settled = Path(BentoMLContainer.bentoml_home.get()).resolve()
    if settled != home:
        raise RuntimeError(
            f"BentoML already uses the model store at {settled} in this process, not {home}: "
            "call serving.bento functions before anything else touches BentoML"
        )
    return home


def import_champion(settings: Settings) -> str | None:
    """Import the champion into the BentoML store, once per registered version.

    Returns:
        The BentoML tag (``lstep-churn:mlflow-v3``), or None when no version holds the alias.
    """
    use_bentoml_home(settings)
    version = champion_version(settings.tracking_uri, settings.model_name)
    if version is None:
        return None
    import bentoml
    import mlflow

    tag = bento_model_tag(version)
    try:
        return str(bentoml.models.get(tag).tag)
    except bentoml.exceptions.NotFound:
        pass  # not imported yet
    # Pin the version the alias named: a promotion meanwhile must not import another one.
    model_uri = f"models:/{settings.model_name}/{version}"
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    imported = bentoml.mlflow.import_model(
        tag,
        model_uri,
        labels={"source": "mlflow", "alias": "champion"},
        metadata={
            METADATA_VERSION: version,
            METADATA_URI: model_uri,
            METADATA_MODEL_NAME: settings.model_name,
        },
    )
    return str(imported.tag)


def serve_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line of the service (the venv's ``bentoml`` script)."""
    script = Path(sys.executable).with_name("bentoml")
    executable = str(script) if script.exists() else shutil.which("bentoml") or "bentoml"
    return [executable, "serve", SERVICE_IMPORT, "--host", host, "--port", str(port)]


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 3000) -> None:
    """Import the champion and replace this process with ``bentoml serve`` (does not return).

    Raises:
        NoChampionError: when no champion is registered and ``LSTEP_RULES_ONLY`` is not true.
        RuntimeError: see ``use_bentoml_home``.
    """
    rules_only = ServiceSettings().rules_only
    if not rules_only:
        imported = import_champion(settings)
        require_champion(imported, rules_only=False, model_name=settings.model_name, hint=HINT)
    environment = service_environment(settings)  # resolved before leaving the working directory
    # `bentoml serve` imports the service from its working directory: the project root.
    os.chdir(project_root())
    command = serve_command(host, port)
    os.execve(command[0], command, environment)


def load_served_champion(settings: Settings, reference: Any) -> Champion | None:
    """The champion from the BentoML store when it holds one, else from the MLflow registry.

    Args:
        settings: where the registry is (when the store has none).
        reference: the ``bentoml.models.BentoModel`` the service declares, or None.
    """
    import bentoml

    stored = reference.stored if reference is not None else None
    if stored is None:
        return load_champion(settings.tracking_uri, settings.model_name)
    pyfunc = bentoml.mlflow.load_model(stored)
    uri = str(stored.info.metadata.get(METADATA_URI, f"bentoml:{stored.tag}"))
    version = str(stored.info.metadata.get(METADATA_VERSION, stored.tag.version))
    return Champion(pyfunc=pyfunc, model=unwrap_churn_model(pyfunc, uri), version=version, uri=uri)


def project_root() -> Path:
    """The directory holding the five packages (and ``bentofile.yaml``)."""
    return Path(__file__).resolve().parent.parent


__all__ = [
    "BENTO_MODEL_NAME",
    "HINT",
    "SERVED_MODEL_TAG",
    "SERVICE_IMPORT",
    "ServiceSettings",
    "bento_model_tag",
    "import_champion",
    "load_served_champion",
    "project_root",
    "serve",
    "serve_command",
    "service_environment",
    "use_bentoml_home",
]
