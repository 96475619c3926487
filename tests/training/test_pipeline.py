"""End to end: ``train`` on a seeded simulated population, a foreign log, and a PostgreSQL store."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import mlflow
import psycopg
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from rich.console import Console

from features.validation import load_valid_inputs
from models.pyfunc import mlflow_uris
from tests.training.simulated import foreign_copy
from training.dataset import build_training_set
from training.early_warning import (
    EARLY_WARNING,
    RECOVERED,
    early_warning_point,
    lead_days,
    recovered_point,
)
from training.jobs import TrainJob
from training.pipeline import train
from training.registry import CHALLENGER, CHAMPION, current_champion
from training.splits import split_by_time

NOW = datetime(2027, 1, 1, tzinfo=UTC)
BASELINES = ("recency", "risk_rules", "logistic")
PLOTS = {
    "roc.png",
    "precision_recall.png",
    "calibration.png",
    "lift.png",
    "shap_summary.png",
    "feature_importance.png",
}
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"

pytestmark = pytest.mark.slow


def _quiet_console() -> Console:
    return Console(file=io.StringIO(), width=200, record=True)


@pytest.fixture(scope="module")
def trained_twice(population, migrated_mlflow_db, tmp_path_factory):
    """One store; a first train with 4 trials, then a second with 1 trial."""
    store = tmp_path_factory.mktemp("store") / "mlflow.db"
    store.write_bytes(migrated_mlflow_db.read_bytes())
    uri = f"sqlite:///{store}"
    console = _quiet_console()
    runs = {"tracking_uri": uri, "now": NOW, "console": console}
    data = {"events": population.events, "customers": population.customers, "threads": 1}
    first = train(TrainJob(**data, truth=population.truth, trials=4), **runs)
    second = train(TrainJob(**data, truth=population.truth, trials=1), **runs)
    return uri, first, second, console.export_text()


def test_first_train_registers_a_calibrated_champion_that_beats_every_baseline(trained_twice):
    # given the first training run on the simulated population
    _, first, _, _ = trained_twice
    table = first.evaluation.table

    # then it is the champion, calibrated within the gate, and beats every baseline on PR-AUC
    assert first.decision.alias == CHAMPION
    assert table.loc["model", "ece"] <= 0.03
    for baseline in BASELINES:
        assert table.loc["model", "pr_auc"] > table.loc[baseline, "pr_auc"], baseline
    # and the oracle bounds it from above, with ratios on the same rows
    assert table.loc["oracle", "pr_auc"] >= table.loc["model", "pr_auc"]
    assert 0.5 < first.evaluation.ratios["pr_auc"] <= 1.0


def test_training_rows_never_cross_the_purge_gap_nor_the_end_of_the_log(trained_twice):
    # given the first run's data and split summaries
    _, first, _, _ = trained_twice
    split, data = first.split, first.data
    day = 86_400

    def ts(key: str) -> float:
        return datetime.fromisoformat(split[key]).timestamp()

    # then each slice's label windows close before the next slice starts
    assert ts("split.calibration.first_as_of") - ts("split.train.last_as_of") >= 30 * day
    assert ts("split.test.first_as_of") - ts("split.calibration.last_as_of") >= 30 * day
    # and no row's label window runs past the end of the log
    last_window_end = datetime.fromisoformat(data["data.last_as_of"]).timestamp() + 30 * day
    assert last_window_end <= datetime.fromisoformat(data["data.observed_until"]).timestamp()
    assert data["data.incomplete_excluded"] == 0


def test_the_run_holds_trials_plots_card_and_features(trained_twice):
    # given the first run
    uri, first, _, _ = trained_twice
    client = mlflow.MlflowClient(tracking_uri=uri)

    # then its trials are nested runs and its artifacts are all there
    children = client.search_runs(
        [first.experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{first.run_id}'"
    )
    assert len(children) == 4
    plots = {item.path.split("/")[-1] for item in client.list_artifacts(first.run_id, "plots")}
    assert plots == PLOTS
    top = {item.path for item in client.list_artifacts(first.run_id)}
    assert {"model_card.md", "features.json", "comparison.md"} <= top
    run = client.get_run(first.run_id)
    assert run.data.metrics["test.model.pr_auc"] == pytest.approx(
        first.evaluation.table.loc["model", "pr_auc"]
    )
    assert run.data.params["data.label_source"] == "computed"


def test_a_second_train_with_fewer_trials_does_not_displace_the_champion(trained_twice):
    # given the second, 1-trial run on the same data
    uri, first, second, printed = trained_twice
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    # then it is a challenger, the first version is still champion, and the reason was printed
    assert second.decision.alias == CHALLENGER
    assert str(current_champion(client, "lstep-churn").version) == first.model_version
    assert second.decision.champion.pr_auc >= second.decision.new.pr_auc
    assert f"v{second.model_version} -> challenger" in printed
    assert "oracle" in printed and "recency" in printed


def test_a_foreign_log_with_a_mapping_and_its_own_labels_trains(population, tracking_uri, tmp_path):
    # given a foreign export (sessions, lessons, cancellations only; no durations) and labels
    foreign = foreign_copy(population, tmp_path / "foreign")

    # when trained through the mapping with the labels file
    job = TrainJob(
        events=foreign.events,
        customers=foreign.customers,
        labels=foreign.labels,
        mapping=foreign.mapping,
        trials=2,
        threads=1,
    )
    result = train(job, tracking_uri=tracking_uri, now=NOW, console=_quiet_console())

    # then the labels file's rows were the rows, and a model was registered and evaluated
    assert result.data["data.label_source"] == "labels file"
    assert result.data["data.rows"] == foreign.label_rows
    assert result.decision.alias == CHAMPION
    assert result.evaluation.table.loc["model", "roc_auc"] > 0.7


@pytest.fixture
def postgres_uri():
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    name = f"lstep_mlflow_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_train_with_the_mlflow_store_on_postgresql(population, postgres_uri, tmp_path):
    # given an MLflow backend store on the PostgreSQL server (artifacts on local disk)
    artifacts = (tmp_path / "artifacts").as_uri()

    # when trained with one trial
    job = TrainJob(events=population.events, customers=population.customers, trials=1, threads=1)
    result = train(
        job,
        tracking_uri=postgres_uri,
        artifact_location=artifacts,
        now=NOW,
        console=_quiet_console(),
    )

    # then the run, its metrics and the champion alias live in PostgreSQL
    client = mlflow.MlflowClient(tracking_uri=postgres_uri, registry_uri=postgres_uri)
    assert client.get_run(result.run_id).data.metrics["test.model.pr_auc"] > 0
    assert str(current_champion(client, "lstep-churn").version) == result.model_version


def test_the_early_warning_is_measured_printed_logged_and_tagged(trained_twice):
    # given the first run
    uri, first, _, printed = trained_twice
    early = first.evaluation.early_warning
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    # then the model and every baseline have N = 7/14/21 rows at their own thresholds
    for scorer in ("model", *BASELINES):
        assert [days for (name, days) in early.table.index if name == scorer] == [7, 14, 21]
    # and the table and the plain verdict were printed, the metrics logged
    assert "Early warning" in printed and "85% precision 14+ days ahead is" in printed
    metrics = client.get_run(first.run_id).data.metrics
    assert metrics["early_warning.model.14d.precision"] == pytest.approx(
        early.table.loc[("model", 14), "precision"]
    )
    # and the version's tags hold the operating points the model carries
    version = client.get_model_version("lstep-churn", first.model_version)
    for name, point in early.operating_points.items():
        tagged = float(version.tags[f"lstep.operating_point.{name}"])
        assert tagged == pytest.approx(point.threshold, abs=1e-6)


def test_operating_points_reproduce_from_the_calibration_slice(trained_twice, population):
    # given the registered first version, loaded as serving loads a model
    uri, first, _, _ = trained_twice
    with mlflow_uris(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/lstep-churn/{first.model_version}")
    model = loaded.unwrap_python_model().churn_model

    # when the calibration slice is rebuilt from the same log and the points chosen again
    job = TrainJob(events=population.events, customers=population.customers)
    events, customers = load_valid_inputs(job.events, job.customers, now=NOW)
    data = build_training_set(
        events, customers, horizon_days=job.horizon_days, every_days=job.every_days
    )
    calibration = split_by_time(data.frame, horizon_days=job.horizon_days).calibration.frame
    p_churn = model.predict(calibration)["p_churn"].to_numpy()
    lead = lead_days(calibration, events, observed_until=data.observed_until)
    healthy = calibration["risk_indicator_count"].to_numpy() == 0

    # then they are the thresholds the model carries
    assert model.operating_points[EARLY_WARNING] == early_warning_point(lead, p_churn).threshold
    recovered = recovered_point(calibration["churned"], p_churn, healthy)
    assert model.operating_points[RECOVERED] == recovered.threshold
