"""The window features on Spark SQL equal DuckDB's (features.spark, issue 14).

Every test runs on the one session-scoped ``spark`` fixture (tests/conftest.py): Spark pays a fixed
cost per statement, so the population is small and the calls are few.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import windows
from features.simulator import SimulationConfig, simulate
from features.spark import (
    UTC,
    SparkEngine,
    feature_schema,
    local_cores,
    spark_features,
    spark_session,
    to_spark_sql,
)
from serving.cli import app

WEEKLY = [dt.date(2026, 2, 3) + dt.timedelta(days=7 * i) for i in range(6)]
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> tuple[str, str]:
    """150 simulated learners over 100 days: events and customers parquet paths."""
    out = tmp_path_factory.mktemp("spark-log")
    simulate(SimulationConfig(customers=150, days=100, seed=5, truth_share=0.0), out)
    return str(out / "events.parquet"), str(out / "customers.parquet")


@pytest.fixture(scope="module")
def engine(spark):
    engine = SparkEngine(spark)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def spine(log) -> pd.DataFrame:
    """Random (learner, weekly date) pairs: many not eligible (not yet enrolled, inactive)."""
    customers = pd.read_parquet(log[1])
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame(
        {
            "customer_id": rng.choice(customers["customer_id"].to_numpy(), 120),
            "as_of": pd.to_datetime(rng.choice(np.array(WEEKLY, dtype="datetime64[D]"), 120)),
        }
    )
    return pairs.drop_duplicates(ignore_index=True)


def as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """pandas 3's Arrow-backed str columns as object, which pyspark's Arrow conversion takes."""
    return frame.astype({"customer_id": object})


def assert_same_features(duck: pd.DataFrame, spark: pd.DataFrame) -> None:
    """Same rows, columns, dtypes and nulls; floats within TOLERANCE, everything else equal."""
    pd.testing.assert_frame_equal(spark, duck, check_exact=False, rtol=0, atol=TOLERANCE)


def test_features_at_several_dates_on_spark_equal_duckdbs_for_every_learner(log, engine):
    # given the log, three weekly dates and one between them
    events, customers = log
    dates = [*WEEKLY[::2], dt.date(2026, 3, 5)]
    # when both engines build the features of the learners eligible at them
    duck = windows.build_features(events, customers, as_of=dates)
    spark = windows.build_features(events, customers, as_of=dates, con=engine)
    # then every row and feature is the same, nulls included (and there is something to compare)
    assert duck["as_of"].nunique() == len(dates)
    assert duck.isna().to_numpy().any()
    assert_same_features(duck, spark)


def test_a_spine_of_non_eligible_pairs_with_foreign_type_firsts_gives_the_same_features(
    log, engine, spine
):
    # given a spine of random pairs and availability from a log that never had videos
    events, customers = log
    firsts = windows.event_type_firsts(events)
    firsts = firsts[firsts["event_type"] != "video_watched"]
    eligible = windows.eligible_spine(events, customers, WEEKLY)
    assert len(spine.merge(eligible)) < len(spine)  # some pairs are not eligible
    # when both engines build the spine's features
    kwargs = {"spine": spine, "type_firsts": firsts}
    duck = windows.build_features(events, customers, **kwargs)
    spark = windows.build_features(events, customers, con=engine, **kwargs)
    # then they agree row by row, in the spine's order, and the videos are unavailable
    assert_same_features(duck, spark)
    assert spark["video_minutes_30d"].isna().all()


def test_eligible_spine_on_spark_equals_duckdbs(log, engine):
    # given the log / when both engines list the eligible pairs at a date
    dates = WEEKLY[-1:]
    duck = windows.eligible_spine(*log, dates)
    spark = windows.eligible_spine(*log, dates, con=engine)
    # then the pairs are the same, in the same order
    assert len(duck) > 0
    pd.testing.assert_frame_equal(spark, duck)


def test_spark_features_of_a_spark_spine_is_a_typed_spark_frame_equal_to_duckdbs(
    log, engine, spine, spark
):
    # given the spine as a Spark DataFrame
    events, customers = log
    spark_spine = spark.createDataFrame(as_objects(spine))
    # when the features are computed as a Spark DataFrame
    frame = spark_features(engine, events, customers, spine=spark_spine)
    # then its schema is the catalog's in Spark types, and its rows are DuckDB's
    assert ", ".join(f"{name} {kind}" for name, kind in frame.dtypes) == feature_schema()
    dtypes = {"customer_id": "str", "as_of": "datetime64[us]", **windows.feature_dtypes()}
    keys = ["customer_id", "as_of"]
    collected = frame.toPandas().astype(dtypes).sort_values(keys, ignore_index=True)
    duck = windows.build_features(events, customers, spine=spine)
    assert_same_features(duck.sort_values(keys, ignore_index=True), collected)


def test_a_spark_spine_with_a_repeated_pair_is_refused(log, engine, spine, spark):
    # given a Spark spine that repeats its first pair
    repeated = spark.createDataFrame(as_objects(pd.concat([spine, spine.head(1)])))
    # when / then the features are refused, saying why
    with pytest.raises(ValueError, match="1 rows repeat a"):
        spark_features(engine, *log, spine=repeated)


def test_a_session_time_zone_other_than_utc_is_refused(spark):
    # given a session whose time zone someone changed
    spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
    try:
        # when / then no engine is made on it
        with pytest.raises(ValueError, match="Europe/Paris"):
            SparkEngine(spark)
    finally:
        spark.conf.set("spark.sql.session.timeZone", UTC)
    # and a session is not even asked for in another zone
    with pytest.raises(ValueError, match="need UTC"):
        spark_session(conf={"spark.sql.session.timeZone": "America/New_York"})


def test_a_missing_input_path_is_named(log, engine, tmp_path):
    # given a customers path where nothing is
    missing = tmp_path / "nowhere" / "customers.parquet"
    # when / then the error names the role and the path
    with pytest.raises(FileNotFoundError, match=f"customers: no such file {missing}"):
        windows.build_features(log[0], missing, as_of=WEEKLY[:1], con=engine)


def test_an_input_without_a_needed_column_is_named(log, engine, tmp_path):
    # given events without their channel column
    events = tmp_path / "events.parquet"
    pd.read_parquet(log[0]).drop(columns="channel").to_parquet(events)
    # when / then Spark makes the same column check as DuckDB
    with pytest.raises(ValueError, match=r"events.parquet: missing columns \['channel'\]"):
        windows.build_features(events, log[1], as_of=WEEKLY[:1], con=engine)


def test_spark_sql_drops_duckdbs_utc_conversion_and_caches_temp_tables():
    # given the DuckDB statements of the events view and of a temp table
    view = "CREATE TEMP VIEW v AS SELECT make_timestamp(epoch_us(ts)) AS ts FROM e"
    table = "CREATE TEMP TABLE t AS SELECT 1 AS a"
    # when transpiled / then the conversion is gone and the table is materialised once
    assert to_spark_sql(view) == "CREATE TEMPORARY VIEW v AS SELECT ts AS ts FROM e"
    assert to_spark_sql(table, cache_tables=True) == "CACHE TABLE t AS SELECT 1 AS a"
    assert to_spark_sql(table) == "CREATE TEMPORARY VIEW t AS SELECT 1 AS a"


@pytest.mark.parametrize(
    ("master", "cores"), [("local", 1), ("local[2]", 2), ("local[3,2]", 3), ("yarn", None)]
)
def test_local_cores_reads_the_master(master, cores):
    assert local_cores(master) == cores


def test_local_star_counts_the_cores_the_process_may_use(monkeypatch):
    # given a process allowed 3 CPUs (LSTEP_THREADS), whatever the host has
    monkeypatch.setenv("LSTEP_THREADS", "3")
    # when local[*]'s cores are read / then they are those 3, not os.cpu_count()
    assert local_cores("local[*]") == 3


# --- the CLI --------------------------------------------------------------------------------------

runner = CliRunner()


def test_features_command_on_spark_writes_what_duckdb_writes(log, spark, tmp_path):
    # given the log, two dates, and the DuckDB command's output
    events, customers = log
    dates = ["--as-of", "2026-03-10"]
    inputs = ["--events", events, "--customers", customers, *dates]
    duck = runner.invoke(app, ["features", *inputs, "--out", str(tmp_path / "duck.parquet")])
    assert duck.exit_code == 0, duck.output
    # when the same command runs on Spark
    out = tmp_path / "spark-features"
    result = runner.invoke(app, ["features", *inputs, "--engine", "spark", "--out", str(out)])
    # then it writes a parquet directory holding DuckDB's rows
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    keys = ["customer_id", "as_of"]
    expected = pd.read_parquet(tmp_path / "duck.parquet").sort_values(keys, ignore_index=True)
    written = pd.read_parquet(out).astype(expected.dtypes.to_dict())
    assert_same_features(expected, written.sort_values(keys, ignore_index=True))


@pytest.mark.parametrize(
    ("option", "named"),
    [("--events", "events: no such file"), ("--master", "spark://127.0.0.1:9 cannot be reached")],
)
def test_features_command_on_spark_names_a_missing_path_or_an_unreachable_master(
    log, spark, tmp_path, option, named
):
    # given a bad events path, or a master where nothing listens
    events, customers = log
    arguments = {"--events": events, "--master": "local[2]"}
    arguments[option] = (
        str(tmp_path / "nope.parquet") if option == "--events" else ("spark://127.0.0.1:9")
    )
    # when the command runs on Spark
    result = runner.invoke(
        app,
        ["features", "--customers", customers, "--as-of", "2026-03-03", "--engine", "spark",
         "--out", str(tmp_path / "out"), *[part for pair in arguments.items() for part in pair]],
    )  # fmt: skip
    # then it exits 1 with one line naming the thing, no traceback
    assert result.exit_code == 1
    assert named in result.output
    assert "Traceback" not in result.output
    assert not Path(tmp_path / "out").exists()
