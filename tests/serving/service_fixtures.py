"""A served workspace for the service tests, and a ``bentoml serve`` subprocess on it.

The workspace reuses the session's simulated log and champion (``tests/serving/conftest.py``):
its own LSTEP_HOME (state store, BentoML store), a data directory with copies of the log's two
parquet files, two batch days run on it (state to decide from, and the feature snapshot of the
fast path), and the champion imported into the BentoML store as ``lstep serve`` does.

Both are built once per process (``WORKSPACES``/``SERVERS``) and shared by the test modules,
whose session fixtures call ``shared_workspace`` and ``shared_service``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx

from serving.api.bento import import_champion, project_root, serve_command, service_environment
from serving.infra.store import StateStore
from serving.settings import Settings
from tests.serving.fixtures import NOW, run_batch_day

SNAPSHOT_DAY = date(2026, 5, 20)
"""The batch job's latest day in the workspace: by-id requests for it take the fast path."""
OTHER_DAY = date(2026, 5, 26)
"""A day without a snapshot: by-id requests compute features from the stored events."""
API_TOKEN = "test-token-0123456789"
MAX_BATCH = 40
MAX_BODY_BYTES = 256 * 1024
"""Small enough to test the body limit with bodies of a few hundred KB."""
READY_TIMEOUT_S = 180.0
WORKSPACES: dict[str, ServedWorkspace] = {}
SERVERS: dict[str, ServedService] = {}


@dataclass(frozen=True)
class ServedWorkspace:
    """An LSTEP_HOME that ``lstep serve`` could start on."""

    home: Path
    settings: Settings
    environment: dict[str, str]
    bento_tag: str

    def open_store(self) -> StateStore:
        return StateStore.from_settings(self.settings)


def build_workspace(root: Path, log, tracking_uri: str, champion, ruleset) -> ServedWorkspace:
    """Copy the log, run the batch on ``SNAPSHOT_DAY`` and the day before, import the model."""
    home = root / "home"
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    for source in (log.events_path, log.customers_path):
        shutil.copy(source, data_dir / source.name)
    settings = Settings(home=home, data_dir=data_dir, mlflow_tracking_uri=tracking_uri)
    with StateStore.from_settings(settings) as store:
        for day in (SNAPSHOT_DAY - timedelta(days=1), SNAPSHOT_DAY):
            run_batch_day(
                day, log, store, champion, ruleset, run_id=f"batch-{day.isoformat()}",
                data_dir=data_dir,
            )  # fmt: skip
    bento_tag = import_champion(settings)
    assert bento_tag is not None, "the session's champion did not reach the BentoML store"
    environment = {
        **service_environment(settings),
        "LSTEP_API_TOKEN": API_TOKEN,
        "LSTEP_MAX_BATCH": str(MAX_BATCH),
        "LSTEP_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "LSTEP_NOW": NOW.isoformat(),  # the service's clock: the tests' present, not today
    }
    return ServedWorkspace(home, settings, environment, bento_tag)


def shared_workspace(tmp_path_factory, log, tracking_uri, champion, ruleset) -> ServedWorkspace:
    """The process's one workspace on the session's champion."""
    if tracking_uri not in WORKSPACES:
        root = tmp_path_factory.mktemp("served")
        WORKSPACES[tracking_uri] = build_workspace(root, log, tracking_uri, champion, ruleset)
    return WORKSPACES[tracking_uri]


@dataclass
class ServedService:
    """A ``bentoml serve serving.service:LstepService`` subprocess on a free loopback port."""

    url: str
    process: subprocess.Popen
    log_path: Path
    stopped: bool = field(default=False)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server and its workers: its own process group, by id."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(
    workspace: ServedWorkspace, log_path: Path, extra_env: dict[str, str] | None = None
) -> ServedService:
    """Start the service (``extra_env`` added to the workspace's) and wait until ``/readyz`` is 200.

    Raises:
        AssertionError: with the server's log tail when it exits or is not ready in time.
    """
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command("127.0.0.1", port),
            cwd=project_root(),
            env=workspace.environment | (extra_env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends all its workers
        )
    served = ServedService(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"bentoml serve exited with {process.returncode}:\n{served.log_tail()}"
            )
        try:
            if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                return served
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    served.stop()
    raise AssertionError(f"not ready after {READY_TIMEOUT_S} s:\n{served.log_tail()}")


def shared_service(workspace: ServedWorkspace) -> ServedService:
    """The process's one server on the workspace."""
    key = str(workspace.home)
    if key not in SERVERS or SERVERS[key].stopped:
        SERVERS[key] = start_service(workspace, workspace.home.parent / "bentoml-serve.log")
    return SERVERS[key]
