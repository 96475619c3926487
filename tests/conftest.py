"""Shared test fixtures; telemetry is off for every test."""

from __future__ import annotations

import pytest

from serving.settings import disable_telemetry

disable_telemetry()


@pytest.fixture
def lstep_home(tmp_path, monkeypatch):
    """A fresh LSTEP_HOME for one test, so no test touches the developer's ./.lstep."""
    home = tmp_path / "lstep-home"
    home.mkdir()
    monkeypatch.setenv("LSTEP_HOME", str(home))
    return home
