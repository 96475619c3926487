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
