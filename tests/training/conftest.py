"""Fixtures shared by the training tests: fresh MLflow SQLite stores without the migration cost."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from tests.training.simulated import simulate_population


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory):
    """An empty MLflow SQLite database with every table created (MLflow migrates it once)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return path


@pytest.fixture
def tracking_uri(migrated_mlflow_db, tmp_path):
    """A fresh tracking + registry store for one test: a copy of the migrated empty database."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def population(tmp_path_factory):
    """The seeded simulated population of ``tests.training.simulated`` (simulated once)."""
    return simulate_population(tmp_path_factory.mktemp("population"))
