"""Fixtures the app-layer tests share."""

from __future__ import annotations

import pytest

from serving.settings import Settings


@pytest.fixture
def workspace_settings(simulated_log, champion_tracking_uri, tmp_path) -> Settings:
    """Settings whose event store is the session's log and whose MLflow holds the champion."""
    data = tmp_path / "data"
    data.mkdir()
    for source in (simulated_log.events_path, simulated_log.customers_path):
        (data / source.name).write_bytes(source.read_bytes())
    return Settings(
        home=tmp_path / "home", data_dir=data, mlflow_tracking_uri=champion_tracking_uri
    )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, simulated_log):
    """A batch workspace on the session's log and a dashboard cache over its store (per module)."""
    from serving.app.dashboard import DashboardCache, DashboardSource
    from tests.e2e.workspace import build_workspace
    from tests.serving.dashboard_helpers import DASHBOARD_NOW
    from tests.serving.fixtures import packaged_ruleset

    root = tmp_path_factory.mktemp("dashboard")
    workspace = build_workspace(root, simulated_log, None, f"sqlite:///{root / 'm.db'}")
    source = DashboardSource(
        store=workspace.store, customers_path=simulated_log.customers_path,
        events_path=simulated_log.events_path, data_dir=workspace.settings.data_path,
        ruleset=packaged_ruleset(None),
    )  # fmt: skip
    yield workspace, DashboardCache(source, lambda: DASHBOARD_NOW)
    workspace.store.close()
