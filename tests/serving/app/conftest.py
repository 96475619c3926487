"""Fixtures the app-layer tests share."""

from __future__ import annotations

from datetime import date

import pandas as pd
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


@pytest.fixture(scope="module")
def day(workspace) -> tuple[date, pd.DataFrame, pd.DataFrame]:
    """The workspace's latest snapshot day, its features and the stored state on that day.

    The workspace is shared with the other serving test modules of this worker, which may have
    moved some learners after that day (applied moves, overrides): those learners are the
    scorer's to refuse (422), so the day here is made of the others.
    """
    from serving.infra.snapshots import latest_feature_snapshot

    as_of, features = latest_feature_snapshot(workspace.settings.data_path)
    with workspace.open_store() as store:
        state = store.state_frame(as_of)
    later = state.loc[state["since"] > pd.Timestamp(as_of), "customer_id"]
    features = features[~features["customer_id"].isin(later)].reset_index(drop=True)
    state = state[~state["customer_id"].isin(later)].reset_index(drop=True)
    return as_of, features, state


@pytest.fixture
def data_dir(tmp_path, day):
    """A data directory holding a copy of the workspace's snapshot only."""
    as_of, features, _ = day
    (tmp_path / "features").mkdir()
    features.to_parquet(tmp_path / "features" / f"as_of={as_of}.parquet")
    return tmp_path
