"""The Spark engine of the daily batch: parity with DuckDB, idempotency, one-line errors.

Both engines run the same days on the session's simulated log and champion, each into its own
SQLite store (DuckDB's keeping scores in SQL, Spark's in scores files, as the apps do: the reads
must not tell them apart); transitions, tags, priorities, over_capacity and scores must be
identical (floats within 1e-9). The Spark step is the one the CLI runs: learners and features
by ``features.spark`` (the feature SQL transpiled), scores by ``spark_udf``, the rules per
partition (``mapInPandas``), the capacity cut on the driver, the shared write. The session is the
tests' shared ``spark``.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from datetime import timedelta

import pandas as pd
import pytest

from features.spark import SparkEngine, check_master_reachable
from features.windows import feature_dtypes
from serving.app.batch import BatchContext, BatchInputs, Models, duckdb_step, run_day
from serving.app.jobs import BatchJob, Runtime
from serving.app.spark_day import EngineFeatures, SparkDay
from serving.core.problems import Invalid
from serving.infra.store import StateStore
from tests.serving.fixtures import FIRST_DAY, NOW, limited_ruleset

SECOND_DAY = FIRST_DAY + timedelta(days=1)


def no_stage(name):
    return nullcontext()


COMPARED = ["customer_id", "from_tag", "to_tag", "rule_id", "priority", "action", "control"]


def spark_step(spark, champion, tracking_uri, tmp_path) -> SparkDay:
    """The Spark step as the CLI builds it (rules-only without ``champion``)."""
    names = () if champion is None else tuple(champion.model.feature_dtypes)
    return SparkDay(
        spark=spark,
        source=EngineFeatures(SparkEngine(spark)),
        model_uri=None if champion is None else f"models:/lstep-churn/{champion.version}",
        tracking_uri=tracking_uri,
        input_names=names,
        output_dir=tmp_path / "spark",
    )


def run(store, log, champion, ruleset, day, *, step=None, run_id=None):
    context = BatchContext(
        store=store, models=Models(champion, ruleset), run_id=run_id or f"run-{day}",
        now=NOW, step=step,
    )  # fmt: skip
    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    return run_day(day, inputs, context)


def store_contents(store) -> dict[str, pd.DataFrame]:
    return {
        "state": store.state_frame(),
        "transitions": store.transitions_frame().drop(columns=["created_at", "id", "run_id"]),
        "scores": store.scores_frame(),
        "runs": store.runs().drop(columns=["started_at", "finished_at", "run_id"]),
    }


def assert_same_day(spark_result, duck_result) -> None:
    """Same decisions (to 1e-9 for numbers) and same scores for every learner."""
    spark_decisions = spark_result.assessment.decisions.sort_values("customer_id")
    duck_decisions = duck_result.assessment.decisions.sort_values("customer_id")
    for name in [*COMPARED, "over_capacity", "campaign_id", "channel", "why"]:
        left = spark_decisions[name].astype(object).fillna("-").to_numpy()
        right = duck_decisions[name].astype(object).fillna("-").to_numpy()
        assert (left == right).all(), name
    for name in ("p_churn", "confidence", "value_at_risk"):
        pd.testing.assert_series_equal(
            spark_decisions[name].reset_index(drop=True),
            duck_decisions[name].reset_index(drop=True),
            rtol=0,
            atol=1e-9,
        )
    pd.testing.assert_frame_equal(
        spark_result.assessment.scores, duck_result.assessment.scores, rtol=0, atol=1e-9
    )


@pytest.fixture(scope="module")
def two_days(spark, simulated_log, champion, champion_tracking_uri, ruleset, tmp_path_factory):
    """Two days through each engine, each engine into its own store."""
    home = tmp_path_factory.mktemp("spark-day")
    duck_store = StateStore(f"sqlite:///{home / 'duck.db'}")
    spark_store = StateStore(f"sqlite:///{home / 'spark.db'}", scores_dir=home / "scores")
    step = spark_step(spark, champion, champion_tracking_uri, home)
    results = {"duckdb": [], "spark": []}
    for day in (FIRST_DAY, SECOND_DAY):
        results["duckdb"].append(run(duck_store, simulated_log, champion, ruleset, day))
        results["spark"].append(run(spark_store, simulated_log, champion, ruleset, day, step=step))
    yield duck_store, spark_store, results, step, home
    duck_store.close()
    spark_store.close()


def test_both_engines_decide_and_score_the_first_day_alike(two_days):
    # Given the first day through DuckDB and through Spark
    _, _, results, _, _ = two_days
    duck, spark = results["duckdb"][0], results["spark"][0]
    # Then every learner has the same move, priority, capacity cut and scores
    assert spark.learners == duck.learners > 0 and spark.eligible == duck.eligible
    assert spark.transitions_by_rule == duck.transitions_by_rule
    assert_same_day(spark, duck)


def test_the_second_day_reads_the_state_each_engine_wrote_and_stays_identical(two_days):
    # Given the second day, decided on the state the first day left in each store
    duck_store, spark_store, results, _, _ = two_days
    duck, spark = results["duckdb"][1], results["spark"][1]
    # Then the decisions match, and so do both stores' transitions, tags and scores
    assert_same_day(spark, duck)
    assert spark.transitions == duck.transitions
    for name in ("state", "transitions", "scores", "runs"):
        left, right = store_contents(spark_store)[name], store_contents(duck_store)[name]
        pd.testing.assert_frame_equal(left, right, rtol=0, atol=1e-9, obj=name)


def test_a_rerun_of_a_spark_day_changes_nothing(two_days, simulated_log, champion, ruleset):
    # Given the Spark store after two days
    _, spark_store, _, step, _ = two_days
    before = store_contents(spark_store)
    # When the second day runs again through Spark
    again = run(spark_store, simulated_log, champion, ruleset, SECOND_DAY, step=step, run_id="x")
    # Then the earlier run is reported and the store is unchanged
    assert again.already_done
    for name, frame in store_contents(spark_store).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)


def test_spark_writes_features_and_scores_partitioned_by_day(two_days, spark):
    # Given the two Spark days, When their parquet is read back
    _, _, results, _, home = two_days
    scores = spark.read.parquet(str(home / "spark" / "scores")).toPandas()
    features = spark.read.parquet(str(home / "spark" / "features"))
    # Then each day is a partition holding one row per learner decided that day
    per_day = scores.groupby(scores["as_of"].astype(str))["customer_id"].nunique()
    assert per_day.to_dict() == {
        str(FIRST_DAY): results["spark"][0].learners,
        str(SECOND_DAY): results["spark"][1].learners,
    }
    assert set(features.columns) == {"customer_id", "as_of", *feature_dtypes()}


def test_rules_only_days_agree_between_engines(
    spark, simulated_log, ruleset, champion_tracking_uri, sqlite_store, tmp_path
):
    # Given a rules-only day (no champion) through both engines
    with StateStore(f"sqlite:///{tmp_path / 'duck.db'}") as duck_store:
        duck = run(duck_store, simulated_log, None, ruleset, FIRST_DAY)
    step = spark_step(spark, None, champion_tracking_uri, tmp_path)
    spark_result = run(sqlite_store, simulated_log, None, ruleset, FIRST_DAY, step=step)
    # Then the decisions are identical and nothing was scored
    assert spark_result.rules_only and spark_result.transitions_by_rule == duck.transitions_by_rule
    assert_same_day(spark_result, duck)
    assert spark_result.assessment.scores["p_churn"].isna().all()


def test_a_champion_whose_signature_the_features_miss_is_one_line_and_writes_nothing(
    spark, simulated_log, champion, champion_tracking_uri, ruleset, sqlite_store, tmp_path
):
    # Given a store with a completed day and a champion needing a column the features lack
    store = sqlite_store
    run(store, simulated_log, None, ruleset, FIRST_DAY)
    before = store_contents(store)
    step = spark_step(spark, champion, champion_tracking_uri, tmp_path)
    step.input_names = (*step.input_names, "no_such_feature")
    # When the next day runs through Spark, Then one line names the model and the column
    with pytest.raises(Invalid, match=r"models:/lstep-churn/\d+: .*no_such_feature"):
        run(store, simulated_log, champion, ruleset, SECOND_DAY, step=step)
    # And the store is unchanged
    for name, frame in store_contents(store).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)


def test_an_unreachable_master_is_named():
    # Given a standalone master URL nothing listens on, When it is checked, Then it is named
    with pytest.raises(ValueError, match=r"^Spark master spark://127\.0\.0\.1:9 cannot be reached"):
        check_master_reachable("spark://127.0.0.1:9")
    check_master_reachable("local[2]")  # and a local master needs no check


# --- the job and the command ----------------------------------------------------------------------


@pytest.fixture
def shared_session(spark, monkeypatch):
    """The job's ``spark_session`` gets the tests' running session (``getOrCreate``); the job
    stops the session it was handed when it ends, which must not end the shared one."""
    monkeypatch.setattr(type(spark), "stop", lambda self: None)


def test_a_spark_batch_job_runs_the_day_as_the_duckdb_job_does(
    workspace_settings, shared_session, two_days, champion
):
    # When the job runs a day with the Spark engine from the settings alone
    outcome = BatchJob(as_of=FIRST_DAY, engine="spark").run(Runtime(workspace_settings, NOW))
    # Then the champion's version scored it, it moved learners as the DuckDB day did
    (result,) = outcome.results
    duck = two_days[2]["duckdb"][0]
    assert result.model_version == champion.version and not result.dry_run
    assert result.transitions_by_rule == duck.transitions_by_rule
    # And Spark wrote the day's scores under the event store's spark/ directory
    assert (workspace_settings.data_path / "spark" / "scores" / f"as_of={FIRST_DAY}").is_dir()


def test_a_master_that_cannot_be_reached_is_named_and_nothing_is_written(workspace_settings):
    # Given a workspace with one completed rules-only day
    runtime = Runtime(workspace_settings, NOW)
    BatchJob(as_of=FIRST_DAY, rules_only=True).run(runtime)
    before = store_contents(runtime.open_store())
    # When the next day runs on a master nobody listens on, Then the error names the master
    job = BatchJob(as_of=SECOND_DAY, engine="spark", spark_master="spark://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"^Spark master spark://127\.0\.0\.1:9 cannot be reached"):
        job.run(runtime)
    # And the store is unchanged
    for name, frame in store_contents(runtime.open_store()).items():
        pd.testing.assert_frame_equal(frame, before[name], obj=name)


def test_the_spark_step_keeps_what_its_capacity_cut_overwrote_as_duckdb_does(
    two_days, simulated_log, champion, tmp_path
):
    # Given a third day's state, read from the DuckDB store both engines have kept alike, and
    # rules whose daily capacity of personal outreach binds
    duck_store, _, _, step, _ = two_days
    third = SECOND_DAY + timedelta(days=1)
    state = duck_store.state_frame(third)
    ruleset = limited_ruleset(tmp_path / "rules", personal_outreach_per_day=2)
    context = BatchContext(store=duck_store, models=Models(champion, ruleset), run_id="t", now=NOW)
    inputs = BatchInputs(events=simulated_log.events, customers=simulated_log.customers)
    # When each engine's step assesses it (nothing committed)
    checked = dataclasses.replace(inputs, validated=True)
    duck = duckdb_step(third, checked, context, lambda: state, no_stage)
    spark = step(third, inputs, context, lambda: state, no_stage)
    # Then both hand the answers the cut's overwritten values, learner for learner
    assert duck.decided.uncut is not None and len(duck.decided.uncut) > 0
    assert spark.decided is not None and spark.decided.state is state
    pd.testing.assert_frame_equal(
        spark.decided.uncut.sort_values("customer_id", ignore_index=True),
        duck.decided.uncut.sort_values("customer_id", ignore_index=True),
    )
