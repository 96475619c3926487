"""Shared test fixtures; telemetry is off for every test; hypothesis draws by profile.

hypothesis profiles: ``ci`` (chosen when the CI variable is set, as ``.ci/run`` sets it) runs
derandomized, every test's draws from a fixed seed derived from the test, so a CI failure
reproduces anywhere; ``dev`` (otherwise) draws afresh each run, so local runs explore new cases.
``HYPOTHESIS_PROFILE`` names a profile explicitly. The explicit ``@settings`` of a test (its
examples, its deadline) keep their values; the profile fills in the rest. Schemathesis draws
through hypothesis (``operation.as_strategy()`` under ``@given``), so the profile covers it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest
from hypothesis import settings

from serving.settings import disable_telemetry

disable_telemetry()

CI_PROFILE, DEV_PROFILE = "ci", "dev"
# Both from hypothesis's own defaults: a CI variable makes hypothesis load its built-in "ci"
# profile at import, which would otherwise be the parent of anything registered here.
_DEFAULTS = settings.get_profile("default")
settings.register_profile(
    CI_PROFILE, parent=_DEFAULTS, derandomize=True, database=None, print_blob=True
)
settings.register_profile(DEV_PROFILE, parent=_DEFAULTS, derandomize=False, print_blob=True)


def hypothesis_profile(environ: Mapping[str, str]) -> str:
    """The profile for an environment: HYPOTHESIS_PROFILE, else ``ci`` under CI, else ``dev``."""
    if environ.get("HYPOTHESIS_PROFILE"):
        return environ["HYPOTHESIS_PROFILE"]
    in_ci = environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return CI_PROFILE if in_ci else DEV_PROFILE


settings.load_profile(hypothesis_profile(os.environ))


TESTS_NOW = "2026-06-15T02:00:00+00:00"
"""The present of every test that reads the wall clock: after the simulated logs (2026)."""


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """Every wall-clock read of the code under test (``serving.settings.utc_now``) gives
    ``TESTS_NOW``: no test depends on the day it runs (the simulated logs are of 2026)."""
    monkeypatch.setenv("LSTEP_NOW", TESTS_NOW)
    return TESTS_NOW


@pytest.fixture(scope="session", autouse=True)
def compiled_models_dir(tmp_path_factory: pytest.TempPathFactory):
    """Compiled models (``models.compiled``) go to the session's directory, never to the
    developer's cache; the CLI's subprocesses inherit it."""
    compiled = tmp_path_factory.mktemp("compiled")
    os.environ["LSTEP_COMPILED_DIR"] = str(compiled)
    return compiled


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


# ---- Spark (the optional `spark` extra, installed by make setup: these tests run in CI) ---------


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession per test process, as ``features.spark.spark_session`` makes it
    (UTC, no UI, Arrow): a JVM starts in 5-15 s, so every Spark test shares it."""
    from features.spark import spark_session

    session = spark_session("local[2]", app_name="lstep-tests", conf={"spark.driver.memory": "1g"})
    yield session
    session.stop()
