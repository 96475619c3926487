"""``lstep explain`` on a batch day: the snapshot row, the version that scored it, the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.cli.explain_inputs import (
    StoredScoreModel,
    cache_version,
    model_cache_dir,
    stored_day_inputs,
    version_model,
)
from serving.core.scoring import scores_and_contributions
from serving.infra.snapshots import snapshot_path
from serving.infra.store import StateStore
from serving.settings import TELEMETRY_ENV, Settings
from tests.serving.fixtures import NOW, run_batch_day
from tests.serving.service_fixtures import SNAPSHOT_DAY

runner = CliRunner()

# Runs one command in a fresh interpreter and reports which heavy libraries it imported.
COMMAND_IMPORTS = textwrap.dedent(
    """
    import json, sys
    from serving.cli import app
    try:
        app(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
    heavy = ("mlflow", "duckdb", "bentoml", "matplotlib", "sklearn", "alembic")
    imported = [m for m in heavy if m in sys.modules]
    # pandera registers its pandas backend (and imports its hypothesis strategies, ~0.1 s) on
    # the first validation only
    validated = "pandera.backends.pandas.register" in sys.modules
    print(json.dumps({"code": code, "imported": imported, "validated": validated}))
    """
)


@dataclass(frozen=True)
class BatchHome:
    """An LSTEP_HOME with one batch day (snapshot and stored scores) on the session's champion."""

    settings: Settings
    environment: dict[str, str]
    events: Path
    customers: Path
    customer_id: str
    p_churn: float
    version: str


@pytest.fixture(scope="module")
def batch_home(tmp_path_factory, simulated_log, champion_tracking_uri, champion, ruleset):
    root = tmp_path_factory.mktemp("explain-home")
    data_dir = root / "data"
    data_dir.mkdir()
    for source in (simulated_log.events_path, simulated_log.customers_path):
        shutil.copy(source, data_dir / source.name)
    settings = Settings(
        home=root / "home", data_dir=data_dir, mlflow_tracking_uri=champion_tracking_uri
    )
    with StateStore.from_settings(settings) as store:
        run_batch_day(
            SNAPSHOT_DAY, simulated_log, store, champion, ruleset, run_id="batch", data_dir=data_dir
        )
        scores = store.scores_frame(SNAPSHOT_DAY).dropna(subset=["p_churn"])
    environment = {
        **TELEMETRY_ENV,
        "LSTEP_HOME": str(settings.home),
        "LSTEP_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": champion_tracking_uri,
        "LSTEP_NOW": NOW.isoformat(),
    }
    first = scores.iloc[0]
    return BatchHome(
        settings,
        environment,
        data_dir / simulated_log.events_path.name,
        data_dir / simulated_log.customers_path.name,
        str(first["customer_id"]),
        float(first["p_churn"]),
        str(first["model_version"]),
    )


def _explain(home: BatchHome, *options: str) -> str:
    result = runner.invoke(app, ["explain", home.customer_id, *options], env=home.environment)
    assert result.exit_code == 0, result.output
    return result.output


def _in_a_fresh_process(home: BatchHome, *arguments: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", COMMAND_IMPORTS, *arguments],
        env={**os.environ, **home.environment},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_explain_on_a_batch_day_explains_the_stored_score_as_rebuilt_features_do(batch_home):
    # given a batch day with its snapshot and stored scores, and no cached model yet
    cache = model_cache_dir(batch_home.settings, batch_home.version)
    shutil.rmtree(cache, ignore_errors=True)
    # when the learner is explained from the stored day, and from features built from the events
    stored = _explain(batch_home)
    built = _explain(
        batch_home, "--events", str(batch_home.events), "--customers", str(batch_home.customers)
    )
    # then both say the same, with the score the batch stored, and the version's files are cached
    assert stored == built
    assert f"p_churn {batch_home.p_churn:.1%}" in stored.splitlines()[0]
    assert (cache / "booster.txt").is_file()


@pytest.mark.slow
def test_a_cached_version_explains_without_mlflow_duckdb_or_bentoml(batch_home):
    # given the version that scored the day in the model cache
    _explain(batch_home)
    # when a fresh `lstep explain` runs on the batch day
    ran = _in_a_fresh_process(batch_home, "explain", batch_home.customer_id)
    # then it needed neither MLflow nor BentoML nor matplotlib, nor DuckDB (the snapshot row is
    # read with pandas), nor Alembic (the store is at head, nothing to migrate), nor
    # scikit-learn (LightGBM imported without it; the stored score needs no calibrator). No
    # pandera pass ran: the row, the stored score and the state are lstep's own frames, coerced
    # as the online path coerces them
    assert ran == {"code": 0, "imported": [], "validated": False}


@pytest.mark.slow
def test_status_and_kpis_import_no_heavy_library(batch_home):
    # given a workspace with a batch day, the version that scored it in the model cache (an
    # explain leaves it there; without it kpis loads the version's operating points through
    # MLflow) / when status and kpis run in fresh processes
    _explain(batch_home)
    status = _in_a_fresh_process(batch_home, "status", batch_home.customer_id)
    kpis = _in_a_fresh_process(batch_home, "kpis")
    # then neither loads the model's libraries, nor Alembic for a store at head (kpis reads the
    # event log for its labels: DuckDB builds them)
    assert (status["code"], status["imported"]) == (0, [])
    assert kpis["code"] == 0 and not {"mlflow", "sklearn", "alembic"} & set(kpis["imported"])


@pytest.mark.slow
def test_an_unwritable_cache_costs_speed_not_the_answer(batch_home, tmp_path):
    # given a home where the cache folder cannot be created (a file is in its place)
    home = tmp_path / "home"
    shutil.copytree(batch_home.settings.home, home)
    shutil.rmtree(home / "cache", ignore_errors=True)
    (home / "cache").write_text("not a folder")
    blocked = BatchHome(
        batch_home.settings.model_copy(update={"home": home}),
        {**batch_home.environment, "LSTEP_HOME": str(home)},
        batch_home.events, batch_home.customers, batch_home.customer_id, batch_home.p_churn,
        batch_home.version,
    )  # fmt: skip
    # when
    output = _explain(blocked)
    # then it still explains the stored score, and says the model was not cached
    assert f"p_churn {batch_home.p_churn:.1%}" in output
    assert "not written" in output


def test_a_cached_version_predicts_exactly_as_the_registered_one(batch_home, champion, tmp_path):
    # given a home without a cache and the champion as the batch loaded it
    settings = batch_home.settings.model_copy(update={"home": tmp_path / "home"})
    frame = pd.read_parquet(snapshot_path(settings.data_path, SNAPSHOT_DAY))
    # when a batch caches its version, and explain reads it back
    cache_version(settings, champion.version, champion.model)
    cached = version_model(settings, champion.version)
    # then the cached files score every learner of the day exactly as the champion does
    assert (model_cache_dir(settings, champion.version) / "booster.txt").is_file()
    pd.testing.assert_frame_equal(cached.predict(frame), champion.model.predict(frame))


def test_the_stored_score_is_what_the_version_predicts_for_the_learners_row(batch_home):
    # given a batch day whose learner's version is cached
    cache_version(batch_home.settings, batch_home.version)
    with StateStore.from_settings(batch_home.settings) as store:
        # when explain reads the day's inputs
        row, champion = stored_day_inputs(
            batch_home.settings, store, batch_home.customer_id, SNAPSHOT_DAY
        )
    # then the model answers the learner's row with the stored score, which is exactly what the
    # version computes from that row; any other frame is the version's own prediction
    assert isinstance(champion.model, StoredScoreModel)
    predicted = champion.model.predict(row)
    assert predicted.loc[0, "p_churn"] == batch_home.p_churn
    pd.testing.assert_frame_equal(predicted, champion.model.model.predict(row))
    other = row.assign(customer_id="someone else")
    version = champion.model.model
    pd.testing.assert_frame_equal(champion.model.predict(other), version.predict(other))


def test_the_stored_score_comes_with_the_versions_contributions(batch_home):
    # given explain's inputs of a batch day whose learner's version is cached
    cache_version(batch_home.settings, batch_home.version)
    with StateStore.from_settings(batch_home.settings) as store:
        row, champion = stored_day_inputs(
            batch_home.settings, store, batch_home.customer_id, SNAPSHOT_DAY
        )
    version = champion.model.model
    # when the scores and contributions are asked as ``assess`` asks them (one model matrix)
    scores, contributions = scores_and_contributions(row, champion)
    # then they are the stored score and the version's TreeSHAP of the row; any other frame is
    # the version's own prediction
    assert scores.loc[0, "p_churn"] == batch_home.p_churn
    _, expected_contributions = version.predict_with_contributions(row)
    np.testing.assert_array_equal(contributions(), expected_contributions.to_numpy())
    values = version.model_values(row)
    pd.testing.assert_frame_equal(
        champion.model.predict_rows(row, values), champion.model.predict(row)
    )
    other = row.assign(customer_id="someone else")
    pd.testing.assert_frame_equal(
        champion.model.predict_rows(other, values), version.predict_rows(other, values)
    )


def test_a_broken_stored_score_is_refused_as_the_models_own_would_be(batch_home):
    # given explain's inputs whose stored score lies outside its interval (a corrupted store)
    cache_version(batch_home.settings, batch_home.version)
    with StateStore.from_settings(batch_home.settings) as store:
        row, champion = stored_day_inputs(
            batch_home.settings, store, batch_home.customer_id, SNAPSHOT_DAY
        )
    broken = StoredScoreModel(
        champion.model.model,
        batch_home.customer_id,
        {"p_churn": 0.9, "p_low": 0.1, "p_high": 0.2, "confidence": 0.8},
    )
    # when / then the prediction from the model matrix refuses it, naming the broken check
    with pytest.raises(ValueError, match=r"p_churn outside \[p_low, p_high\]"):
        broken.predict_rows(row, broken.model_values(row))


def test_explains_options_decide_and_explain_as_the_checked_default(batch_home, champion):
    # given learners of the batch day, their stored state and the rules of the champion
    from serving.cli.explain_inputs import assess_options
    from serving.core.assess import AssessOptions, assess
    from serving.infra.rulesets import load_rules

    frame = pd.read_parquet(snapshot_path(batch_home.settings.data_path, SNAPSHOT_DAY)).head(40)
    with StateStore.from_settings(batch_home.settings) as store:
        state = store.state_frame(SNAPSHOT_DAY, customer_ids=frame["customer_id"].tolist())
    ruleset = load_rules(champion=champion)
    inputs = {"champion": champion, "ruleset": ruleset, "state": state, "as_of": SNAPSHOT_DAY}
    # when they are assessed as `lstep explain` does (one pass, inputs coerced, not re-checked)
    # and with the default options (every input checked by pandera, contributions later)
    fast = assess(frame, **inputs, options=assess_options())
    checked = assess(frame, **inputs, options=AssessOptions())
    # then the scores, the decisions, the records and the explanations are the same
    pd.testing.assert_frame_equal(fast.scores, checked.scores)
    pd.testing.assert_frame_equal(fast.decisions, checked.decisions)
    assert fast.records() == checked.records()
    positions = range(len(frame))
    assert [fast.explanation(p) for p in positions] == [checked.explanation(p) for p in positions]
