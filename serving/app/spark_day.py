"""The Spark engine of the daily batch: ``lstep score --engine spark``.

``SparkDay`` is a ``serving.app.batch.DayStep``: it runs learners -> features -> score -> decide
of one day on Spark, and ``run_day`` does the rest exactly as for DuckDB (day order, the state
before the day, the store's one transaction, the answers file, the summary). Nothing is copied:

1. **learners**: the eligible learners from the Spark feature engine UNION the live-tagged
   learners of the store (``serving.app.batch.spine_of``, as the DuckDB path).
2. **features**: ``features.spark.spark_features`` (the one feature definition, run by Spark).
3. **score**: ``mlflow.pyfunc.spark_udf`` on the champion's registered version (the version the
   run records; the alias could move during the run), ``env_manager="local"``: the executors
   load the same pyfunc the DuckDB path calls. Rules-only runs score nothing (NaN).
4. **decide**: ``mapInPandas`` over features + scores, each partition joined with its learners'
   stored state (the state is broadcast) and decided by the same ``decide_learners`` with
   ``whole_day=False``; the day's capacity (``rules.cut_to_capacity``) needs every decision of
   the day, so it runs on the driver over the collected decisions.

The driver collects features, scores and decisions through Arrow: the shared write commits them
with ``StateStore.apply_day`` in one transaction, and the answers file and the summary read them.
Spark also writes the day's features and scores as parquet partitioned by ``as_of`` under
``<data_dir>/spark/`` (a rerun overwrites that day's partition only).

pyspark is imported lazily: the DuckDB path never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from features.windows import frame_dtypes
from features.workspace import naive_utc
from models.churn import PREDICTION_COLUMNS
from rules import OVER_CAPACITY, RuleSet
from serving.app.batch import AssessedDay, BatchContext, BatchInputs, Stage, StateRead, spine_of
from serving.app.day_decisions import DecidedDay, cut_day
from serving.core.assess import Assessment, decide_learners
from serving.core.frames import is_in
from serving.core.problems import Invalid, NotFound
from serving.core.scoring import SCORES_SCHEMA
from serving.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

SCORES_STRUCT = "_scores"
"""The column the UDF's struct of predictions lands in before it is flattened."""
DECISION_TYPES: dict[str, str] = {
    "customer_id": "string",
    "as_of": "timestamp",
    "from_tag": "string",
    "to_tag": "string",
    "changed": "boolean",
    "rule_id": "string",
    "description": "string",
    "signal": "string",
    "p_churn": "double",
    "confidence": "double",
    "priority": "string",
    "action": "string",
    "campaign_id": "string",
    "channel": "string",
    "control": "boolean",
    "value_at_risk": "double",
    "expected_months": "double",
    "projected_value": "double",
    "held": "string",
    "behaviour_tags": "string",
    "why": "string",
}
"""``rules.decide``'s columns as Spark types: categories travel as strings, typed back after."""


class SparkFeatureSource(Protocol):
    """Where the Spark step gets its learners and features (``features.spark`` in production)."""

    def eligible(self, inputs: BatchInputs, as_of: date) -> pd.DataFrame:
        """The eligible (customer_id, as_of) pairs at ``as_of``."""
        ...

    def features(self, inputs: BatchInputs, spine: pd.DataFrame) -> SparkFrame:
        """The catalog features of the ``spine``'s learners, as a Spark DataFrame."""
        ...


@dataclass(frozen=True)
class EngineFeatures:
    """``features.spark``'s feature engine (the feature definitions exist once)."""

    engine: Any

    def eligible(self, inputs: BatchInputs, as_of: date) -> pd.DataFrame:
        from features.windows import eligible_spine

        with _named_paths(inputs):
            return eligible_spine(inputs.events, inputs.customers, [as_of], con=self.engine)

    def features(self, inputs: BatchInputs, spine: pd.DataFrame) -> SparkFrame:
        from features.spark import spark_features

        with _named_paths(inputs):
            return spark_features(self.engine, inputs.events, inputs.customers, spine=spine)


@contextmanager
def _named_paths(inputs: BatchInputs) -> Iterator[None]:
    """Spark's "path does not exist" as a one-line ``NotFound`` naming the path."""
    from pyspark.errors import AnalysisException

    try:
        yield
    except AnalysisException as error:
        if error.getCondition() != "PATH_NOT_FOUND":
            raise
        paths = error.getMessageParameters() or {}
        named = paths.get("path") or f"{inputs.events} or {inputs.customers}"
        raise NotFound(f"{named}: the Spark input path does not exist") from None


@dataclass
class SparkDay:
    """The Spark ``DayStep`` (see the module docstring).

    Attributes:
        spark: the session.
        source: learners and features (``EngineFeatures`` over ``features.spark``).
        model_uri: the champion's registered version (``models:/NAME/V``); None: rules-only.
        tracking_uri: the MLflow registry the URI resolves in.
        input_names: the columns the champion's signature requires.
        output_dir: where Spark writes ``features/`` and ``scores/`` partitioned by as_of
            (nothing written when None).
    """

    spark: SparkSession
    source: SparkFeatureSource
    model_uri: str | None = None
    tracking_uri: str | None = None
    input_names: tuple[str, ...] = ()
    output_dir: Path | None = None
    _cached: list[SparkFrame] = field(default_factory=list, repr=False)

    def __call__(
        self,
        as_of: date,
        inputs: BatchInputs,
        context: BatchContext,
        stored: StateRead,
        stage: Stage,
    ) -> AssessedDay:
        """Assess the day on Spark; the capacity cut on the driver (it needs the whole day)."""
        self.release()
        with stage("learners"):
            eligible = self.source.eligible(inputs, as_of)
            state = stored()
            spine = spine_of(eligible, state, as_of)
        with stage("features"):
            features = self._keep(self.source.features(inputs, spine))
            self._check_signature(features)
        with stage("score"):
            scored = self._keep(self._scored(features))
        with stage("decide"):
            decided = decide_partitions(scored, context.ruleset, state, as_of)
            assessment, day = self._assessment(scored, decided, context, state, as_of)
        writer = None if self.output_dir is None else lambda: self._write(scored, as_of)
        return AssessedDay(assessment, len(eligible), write_outputs=writer, decided=day)

    def release(self) -> None:
        """Drop the frames the previous day cached."""
        while self._cached:
            self._cached.pop().unpersist()

    def _keep(self, frame: SparkFrame) -> SparkFrame:
        """``frame`` cached and computed now, so that each stage's time is its own."""
        with _spark_errors(self.model_uri):
            frame = frame.persist()
            frame.count()
        self._cached.append(frame)
        return frame

    def _check_signature(self, features: SparkFrame) -> None:
        """The champion's required columns are in the features, or ``Invalid`` naming them."""
        missing = [name for name in self.input_names if name not in features.columns]
        if missing:
            raise Invalid(
                f"{self.model_uri}: the champion's signature needs columns the features lack: "
                f"{', '.join(missing)}"
            )

    def _scored(self, features: SparkFrame) -> SparkFrame:
        """Features plus the prediction columns (``spark_udf``; nulls when rules-only)."""
        from pyspark.sql import functions as F

        if self.model_uri is None:
            nothing = {name: F.lit(None).cast("double") for name in PREDICTION_COLUMNS}
            return features.withColumns(nothing)
        udf = champion_udf(self.spark, self.model_uri, self.tracking_uri)
        inputs = F.struct(*[F.col(name) for name in self.input_names])
        struct = features.withColumn(SCORES_STRUCT, udf(inputs))
        flat = {name: F.col(f"{SCORES_STRUCT}.{name}") for name in PREDICTION_COLUMNS}
        return struct.withColumns(flat).drop(SCORES_STRUCT)

    def _assessment(
        self,
        scored: SparkFrame,
        decided: SparkFrame,
        context: BatchContext,
        state: pd.DataFrame,
        as_of: date,
    ) -> tuple[Assessment, DecidedDay]:
        """Features, scores and decisions on the driver, the day's capacity cut applied; the
        cut's ``DecidedDay`` beside them (what it overwrote, which the answers reuse)."""
        with _spark_errors(self.model_uri):
            features, scores = features_and_scores(scored)
            collected = decided.toArrow().to_pandas()
            decisions = decisions_frame(collected, features, scores, state, context.ruleset)
            day = cut_day(context.ruleset, state, decisions, features)
        champion = context.champion if self.model_uri is not None else None
        assessment = Assessment(
            as_of=as_of, features=features, scores=scores, decisions=day.decisions,
            model=None if champion is None else champion.model,
            model_version=None if champion is None else champion.version,
        )  # fmt: skip
        return assessment, day

    def _write(self, scored: SparkFrame, as_of: date) -> None:
        """The day's features and scores as parquet partitioned by as_of (that day replaced)."""
        from pyspark.sql import functions as F

        day = scored.withColumn("as_of", F.to_date("as_of"))
        keys = ["customer_id", "as_of"]
        feature_names = [name for name in scored.columns if name not in PREDICTION_COLUMNS]
        parts = {"features": feature_names, "scores": [*keys, *PREDICTION_COLUMNS]}
        for name, columns in parts.items():
            target = str(Path(self.output_dir) / name)
            writer = day.select(*columns).write.mode("overwrite").partitionBy("as_of")
            writer.option("partitionOverwriteMode", "dynamic").parquet(target)


def champion_udf(spark: SparkSession, model_uri: str, tracking_uri: str | None) -> Any:
    """``mlflow.pyfunc.spark_udf`` of ``model_uri``: a struct of the four predictions."""
    import mlflow.pyfunc

    from models.pyfunc import mlflow_uris

    result = ", ".join(f"{name} double" for name in PREDICTION_COLUMNS)
    with mlflow_uris(tracking_uri) if tracking_uri else _no_context():
        return mlflow.pyfunc.spark_udf(
            spark, model_uri, result_type=f"struct<{result}>", env_manager="local"
        )


@contextmanager
def _no_context() -> Iterator[None]:
    yield


@contextmanager
def _spark_errors(model_uri: str | None) -> Iterator[None]:
    """A failed Spark job (an executor's Python error, a lost cluster) as one line."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1:] or [""])
        what = f"scoring with {model_uri}" if model_uri else "the rules-only day"
        raise Invalid(f"Spark job failed ({what}): {str(reason)[:300]}") from None


def decide_partitions(
    scored: SparkFrame, ruleset: RuleSet, state: pd.DataFrame, as_of: date
) -> SparkFrame:
    """The rules per partition (``mapInPandas``): ``decide_learners`` without the capacity.

    The stored state goes to the executors once (a broadcast); each partition decides its
    learners on their own state rows, so no decision depends on another partition's learners.
    """
    shared = scored.sparkSession.sparkContext.broadcast(state)
    schema = ", ".join(f"{name} {kind}" for name, kind in DECISION_TYPES.items())

    def decide_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = list(batches)
        if not frames:
            return
        yield decide_rows(pd.concat(frames, ignore_index=True), ruleset, shared.value, as_of)

    return scored.mapInPandas(decide_partition, schema)


def decide_rows(
    rows: pd.DataFrame, ruleset: RuleSet, state: pd.DataFrame, as_of: date
) -> pd.DataFrame:
    """One partition's decisions, as Spark types (categories as strings, no capacity column)."""
    features = conform_features(rows.drop(columns=list(PREDICTION_COLUMNS)))
    scores = rows[["customer_id", *PREDICTION_COLUMNS]]
    own_state = state[is_in(state["customer_id"], features["customer_id"])]
    decisions = decide_learners(features, scores, ruleset, own_state, as_of, whole_day=False)
    out = decisions.drop(columns=OVER_CAPACITY)
    for name, kind in DECISION_TYPES.items():
        if kind == "string":
            values = out[name].astype(object)
            out[name] = values.where(values.notna(), None)
    return out[list(DECISION_TYPES)]


def conform_features(frame: pd.DataFrame) -> pd.DataFrame:
    """A Spark-made feature frame with the catalog's pandas dtypes (as ``build_features``).

    Arrow hands Spark timestamps over tz-aware and pandas UDFs naive: both become naive UTC.
    """
    dtypes = frame_dtypes()
    frame = frame.assign(as_of=naive_utc(frame["as_of"]))
    ordered = [name for name in dtypes if name in frame.columns]
    typed = frame[ordered].astype({name: dtypes[name] for name in ordered})
    return typed.reset_index(drop=True)


def features_and_scores(scored: SparkFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and scores on the driver (Arrow), in customer_id order."""
    collected = scored.toArrow().to_pandas()
    collected = collected.sort_values("customer_id", ignore_index=True)
    features = conform_features(collected.drop(columns=list(PREDICTION_COLUMNS)))
    scores = features[["customer_id", "as_of"]].copy()
    for name in PREDICTION_COLUMNS:
        scores[name] = collected[name].to_numpy(np.float64)
    return features, SCORES_SCHEMA.validate(scores)


def decisions_frame(
    collected: pd.DataFrame,
    features: pd.DataFrame,
    scores: pd.DataFrame,
    state: pd.DataFrame,
    ruleset: RuleSet,
) -> pd.DataFrame:
    """The collected decisions with ``rules.decide``'s dtypes, in its row order.

    The dtypes come from deciding no learner at all on the driver: the categories and their
    order are the ruleset's, not the data's.
    """
    template = decide_learners(
        features.iloc[:0], scores.iloc[:0], ruleset, state.iloc[:0], scores["as_of"].iloc[0]
    ) if len(features) else None  # fmt: skip
    typed = collected.copy()
    typed["as_of"] = naive_utc(typed["as_of"]).astype("datetime64[ns]")  # rules.decide's unit
    for name in DECISION_TYPES:
        wanted = None if template is None else template[name].dtype
        if isinstance(wanted, pd.CategoricalDtype):
            seen = typed[name].dropna().unique().tolist()
            extra = [value for value in seen if value not in set(wanted.categories)]
            categories = [*wanted.categories, *sorted(extra)]
            typed[name] = pd.Categorical(typed[name], categories=categories, ordered=wanted.ordered)
        elif wanted is not None:
            typed[name] = typed[name].astype(wanted)
    return typed


@contextmanager
def spark_step(settings: Settings, champion: Any, *, master: str) -> Iterator[SparkDay]:
    """A Spark session on ``master`` and the ``SparkDay`` of a run; the session ends with it.

    Args:
        settings: the workspace (MLflow registry, model name, ``<data_dir>/spark`` output).
        champion: the loaded champion (``serving.infra.champion.Champion``), None: rules-only.
        master: the Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``...).

    Raises:
        ValueError: the master cannot be reached or cannot start a session
            (``features.spark.spark_session``).
        Invalid: pyspark or sqlglot (the ``spark`` extra) is not installed.
    """
    try:
        from features.spark import SparkEngine, spark_session
    except ImportError as error:
        raise Invalid(f"--engine spark needs the spark extra: pyspark, sqlglot ({error})") from None
    spark = spark_session(master, app_name="lstep-score")
    try:
        yield SparkDay(
            spark=spark,
            source=EngineFeatures(SparkEngine(spark)),
            model_uri=None if champion is None else version_uri(settings, champion),
            tracking_uri=settings.tracking_uri,
            input_names=() if champion is None else signature_names(champion),
            output_dir=settings.data_path / "spark",
        )
    finally:
        spark.stop()


def version_uri(settings: Settings, champion: Any) -> str:
    """The champion's registered version as a URI: what the run records is what Spark loads."""
    return f"models:/{settings.model_name}/{champion.version}"


def signature_names(champion: Any) -> tuple[str, ...]:
    """The input columns the champion's MLflow signature requires."""
    schema = champion.pyfunc.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return tuple(champion.model.feature_dtypes)
    return tuple(schema.required_input_names())


__all__ = [
    "DECISION_TYPES",
    "EngineFeatures",
    "SparkDay",
    "SparkFeatureSource",
    "champion_udf",
    "conform_features",
    "decide_partitions",
    "decide_rows",
    "decisions_frame",
    "features_and_scores",
    "signature_names",
    "spark_step",
    "version_uri",
]
