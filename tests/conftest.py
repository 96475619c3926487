"""Shared test fixtures; telemetry is off for every test."""

from __future__ import annotations

import pytest

from serving.settings import disable_telemetry

disable_telemetry()


@pytest.fixture
def lstep_home(tmp_path, monkeypatch):
    """A fresh LSTEP_HOME for one test, so no test touches the developer's ./.lstep.

    MLflow's own URI variables are cleared too: ``mlflow.set_tracking_uri()`` in an earlier test
    of the same process leaves MLFLOW_TRACKING_URI pointing at that test's registry, which
    Settings would otherwise honour.
    """
    home = tmp_path / "lstep-home"
    home.mkdir()
    monkeypatch.setenv("LSTEP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home


# ---- scoring and batch fixtures (one simulated log and one champion per test session) --------


@pytest.fixture(scope="session")
def simulated_log(tmp_path_factory: pytest.TempPathFactory):
    """500 simulated learners x 150 days, written once and validated once."""
    from tests.serving.fixtures import simulate_log

    return simulate_log(tmp_path_factory.mktemp("simulated-log"))


@pytest.fixture(scope="session")
def champion_tracking_uri(simulated_log, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow store under a tmp LSTEP_HOME whose ``lstep-churn@champion`` was just trained."""
    from tests.serving.fixtures import train_champion

    return train_champion(simulated_log, tmp_path_factory.mktemp("lstep-home"))


@pytest.fixture(scope="session")
def champion(champion_tracking_uri: str):
    """The champion, loaded by its alias as serving loads it."""
    from serving.infra.champion import load_champion

    loaded = load_champion(champion_tracking_uri)
    assert loaded is not None, "the session's training did not register a champion"
    return loaded


@pytest.fixture(scope="session")
def ruleset():
    """The packaged rules."""
    from tests.serving.fixtures import packaged_ruleset

    return packaged_ruleset()
