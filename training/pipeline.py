"""``train``: from an event log to a registered, evaluated churn model, under one MLflow run.

Stages (each timed, each with a progress line; tuning has its own bar with the best score so far):

1. **validate** the events and customers (``features.validation``; a foreign log through a mapping),
   and the labels file when one is given;
2. **dataset**: eligible rows at observation dates with labels, or the labels file's rows
   (``training.dataset``);
3. **split**: purged train / calibration / test slices and expanding CV folds (``training.splits``);
4. **baselines** fitted on the training slice (``training.baselines``);
5. **tuning**: Optuna on the CV folds, each trial a nested MLflow run (``training.tuning``);
6. **model**: LightGBM on the training slice with the best parameters, Venn-Abers calibrated on the
   calibration slice (``models.churn.ChurnModel``);
7. **evaluate**: model vs baselines (vs oracle) on the test slice, plots (``training.evaluate``);
   the early warning (``training.early_warning``): each scorer's ``early_warning`` threshold chosen
   on the calibration slice, measured on the test slice at N = 7/14/21 days; the model's named
   operating points (``early_warning``, ``recovered``) are saved inside the model;
8. **log**: params, metrics, plots, feature list, model card and the pyfunc model, registered as a
   new version of ``lstep-churn`` (operating points also as ``lstep.operating_point.*`` tags);
9. **registry**: champion or challenger (``training.registry``), printed with the reason.

The lead's CLI calls :func:`train` (``lstep train``) and :func:`training.registry.promote`
(``lstep promote``); :func:`training.report.comparison_table` renders the result table again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import optuna
import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from features.labels import load_labels
from features.schemas import labels_schema
from features.validation import load_valid_inputs
from models.churn import ChurnModel
from models.matrix import model_feature_names, to_model_matrix
from models.pyfunc import log_churn_model, mlflow_uris
from training.baselines import Scorer, fit_baselines
from training.dataset import TrainingSet, build_training_set
from training.early_warning import HEALTHY_COLUMN, lead_days
from training.evaluate import (
    MODEL,
    ORACLE,
    Evaluation,
    evaluate_scores,
    score_test_slice,
)
from training.plots import SHAP_SAMPLE_ROWS, write_plots
from training.registry import (
    MODEL_NAME,
    Decision,
    SliceScore,
    early_warning_recall,
    register_decision,
)
from training.report import (
    comparison_table,
    early_warning_caption,
    early_warning_table,
    markdown_table,
    model_card,
    operating_points_markdown,
)
from training.splits import CvFold, TimeSplit, expanding_folds, split_by_time
from training.tracking import TrialRunLogger, ensure_experiment, flat_params
from training.tuning import TuningConfig, TuningResult, best_so_far, tune

if TYPE_CHECKING:
    from training.jobs import TrainJob

TableInput = pd.DataFrame | str | Path


@dataclass(frozen=True)
class TrainResult:
    """What one ``train`` call produced."""

    run_id: str
    experiment_id: str
    model_version: str
    model_uri: str
    decision: Decision
    evaluation: Evaluation
    tuning: TuningResult
    data: dict[str, object]
    split: dict[str, object]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Rich progress lines per stage, and the seconds each stage took."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        task = self.progress.add_task(description, total=1)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        self.progress.update(task, completed=1, description=f"{description} ✓")


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _read_table(data: TableInput) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    path = Path(data)
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


def _labels(labels: TableInput | None) -> pd.DataFrame | None:
    """Bring-your-own labels, validated (a path goes through ``features.labels.load_labels``)."""
    if labels is None:
        return None
    if isinstance(labels, pd.DataFrame):
        return labels_schema().validate(labels)
    return load_labels(labels)


def _fit_model(split: TimeSplit, tuning: TuningResult, seed: int) -> ChurnModel:
    train, cal = split.train.frame, split.calibration.frame
    return ChurnModel.fit(
        train,
        train["churned"],
        cal,
        cal["churned"],
        params=tuning.params,
        num_boost_round=tuning.num_boost_round,
        seed=seed,
    )


def _tuning_bar(progress: Progress, config: TuningConfig) -> Callable[[optuna.Study], None]:
    """A progress task for the trials whose description shows the best score so far."""
    label = f"tuning ({config.metric}, best so far)"
    task = progress.add_task(label, total=config.trials)

    def update(study: optuna.Study) -> None:
        best = best_so_far(study)
        shown = "-" if np.isnan(best) else f"{best:.4f}"
        progress.update(task, completed=len(study.trials), description=f"{label}: {shown}")

    return update


def _tuning_folds(split: TimeSplit) -> tuple[pd.DataFrame, list[CvFold]]:
    """Expanding purged folds inside the training slice; on a short log, one purged holdout.

    A log of a few months leaves too few training dates for several folds with a W-day purge
    each. Then the trials fit on the training slice and are scored on the calibration slice,
    which the split already keeps W days later: still time-based, never random, and the test
    slice stays untouched by tuning.
    """
    train = split.train.frame.reset_index(drop=True)
    try:
        return train, expanding_folds(train, horizon_days=split.horizon_days)
    except ValueError:
        calibration = split.calibration.frame.reset_index(drop=True)
        both = pd.concat([train, calibration], ignore_index=True)
        fit = np.arange(len(train))
        valid = np.arange(len(train), len(both))
        as_of = calibration["as_of"]
        return both, [CvFold(fit, valid, as_of.min(), as_of.max())]


def _tune(
    split: TimeSplit,
    config: TuningConfig,
    progress: Progress,
    trial_logger: TrialRunLogger,
) -> TuningResult:
    train, folds = _tuning_folds(split)
    mlflow.log_param("cv.folds", len(folds))
    return tune(
        to_model_matrix(train),
        train["churned"].to_numpy(),
        folds,
        config,
        on_trial=trial_logger,
        on_progress=_tuning_bar(progress, config),
    )


def _evaluate(
    split: TimeSplit,
    model: ChurnModel,
    baselines: list[Scorer],
    truth: pd.DataFrame | None,
    events: pd.DataFrame,
    observed_until: pd.Timestamp,
) -> tuple[Evaluation, pd.DataFrame]:
    """Score test and calibration slices: metrics on test, early-warning points on calibration."""
    frames = {"test": split.test.frame, "calibration": split.calibration.frame}
    scored: dict[str, pd.DataFrame] = {}
    for name, frame in frames.items():
        p_churn = model.predict(frame)["p_churn"].to_numpy()
        scores = score_test_slice(
            frame, model_probability=p_churn, baselines=baselines, truth=truth
        )
        scores["lead"] = lead_days(frame, events, observed_until=observed_until)
        scores[HEALTHY_COLUMN] = frame[HEALTHY_COLUMN].to_numpy()
        scored[name] = scores
    scores = scored["test"]
    scorers = [MODEL, *(b.name for b in baselines)]
    if ORACLE in scores and scores[ORACLE].notna().any():
        scorers.append(ORACLE)
    evaluation = evaluate_scores(scores, scorers, calibration=scored["calibration"])
    return evaluation, scores


def _log_plots(
    scores: pd.DataFrame, evaluation: Evaluation, model: ChurnModel, test: pd.DataFrame
) -> None:
    sample = test.sample(n=min(SHAP_SAMPLE_ROWS, len(test)), random_state=0)
    with tempfile.TemporaryDirectory(prefix="lstep-plots-") as scratch:
        write_plots(
            scores,
            list(evaluation.table.index),
            booster=model.booster,
            contributions=model.contributions(sample),
            features=model.model_matrix(sample),
            out_dir=Path(scratch),
        )
        mlflow.log_artifacts(scratch, artifact_path="plots")


def _log_run_inputs(data: TrainingSet, split: TimeSplit, config: TuningConfig) -> None:
    mlflow.log_params(flat_params(data.summary() | split.summary()))
    mlflow.log_params(flat_params({f"tuning.{k}": v for k, v in config.model_dump().items()}))
    mlflow.log_dict({"features": model_feature_names()}, "features.json")


def _log_outcome(tuning: TuningResult, evaluation: Evaluation, stage_seconds: dict) -> None:
    best = {k: v for k, v in tuning.params.items() if k != "monotone_constraints"}
    mlflow.log_params(flat_params({f"best.{k}": v for k, v in best.items()}))
    mlflow.log_param("best.num_boost_round", tuning.num_boost_round)
    mlflow.log_metrics(evaluation.mlflow_metrics())
    mlflow.log_metrics({f"cv.best_{tuning.metric}": tuning.best_score})
    mlflow.log_metrics({"tuning.trials_complete": tuning.trials_complete})
    mlflow.log_metrics({"tuning.trials_pruned": tuning.trials_pruned})
    mlflow.log_metrics({f"seconds.{k}": v for k, v in stage_seconds.items()})
    mlflow.log_text(markdown_table(evaluation), "comparison.md")


@dataclass(frozen=True)
class _Prepared:
    events: pd.DataFrame
    data: TrainingSet
    split: TimeSplit
    truth: pd.DataFrame | None


def _prepare(stages: _Stages, job: TrainJob, now: datetime) -> _Prepared:
    """Stages 1-3: validated inputs, the training set and its time split."""
    with stages.stage("validate", "validate inputs"):
        events_frame, customers_frame = load_valid_inputs(
            job.events, job.customers, mapping=job.mapping, now=now
        )
        labels_frame = _labels(job.labels)
        truth_frame = _read_table(job.truth) if job.truth is not None else None
    with stages.stage("dataset", "features and labels"):
        data = build_training_set(
            events_frame,
            customers_frame,
            labels=labels_frame,
            horizon_days=job.horizon_days,
            every_days=job.every_days,
        )
    with stages.stage("split", "purged time split"):
        split = split_by_time(data.frame, horizon_days=job.horizon_days)
    return _Prepared(events_frame, data, split, truth_frame)


def _register(
    client: mlflow.MlflowClient,
    prepared: _Prepared,
    model: ChurnModel,
    evaluation: Evaluation,
    test_scores: pd.DataFrame,
    model_name: str,
) -> tuple[Decision, str]:
    """Log the pyfunc as a new registered version and give it champion or challenger."""
    test = prepared.split.test.frame
    info = log_churn_model(
        model, name="model", input_example=test.head(5), registered_model_name=model_name
    )
    version = str(info.registered_model_version)
    new_p_churn = model.predict(test)["p_churn"].to_numpy()
    lead = test_scores["lead"].to_numpy()
    new = SliceScore(
        version=version,
        pr_auc=float(evaluation.table.loc[MODEL, "pr_auc"]),
        ece=float(evaluation.table.loc[MODEL, "ece"]),
        early_recall=early_warning_recall(lead, new_p_churn, model.operating_points),
    )
    decision = register_decision(
        client,
        version,
        new,
        test_frame=test,
        churned=test["churned"].to_numpy(),
        new_p_churn=new_p_churn,
        lead=lead,
        name=model_name,
    )
    _tag_operating_points(client, model_name, version, evaluation)
    tags = {"model_version": version, "decision": decision.alias, "reason": decision.reason}
    mlflow.set_tags({f"lstep.{key}": value for key, value in tags.items()})
    return decision, info.model_uri


def _tag_operating_points(
    client: mlflow.MlflowClient, model_name: str, version: str, evaluation: Evaluation
) -> None:
    """Record the named operating points as model-version tags (``lstep.operating_point.*``).

    The thresholds also travel inside the model (``ChurnModel.operating_points``), which is what
    serving reads; the tags show them, how they were chosen and whether the target was met.
    """
    if evaluation.early_warning is None:
        return
    for name, point in evaluation.early_warning.operating_points.items():
        prefix = f"lstep.operating_point.{name}"
        client.set_model_version_tag(model_name, version, prefix, f"{point.threshold:.6f}")
        client.set_model_version_tag(model_name, version, f"{prefix}.reached", str(point.reached))
        client.set_model_version_tag(model_name, version, f"{prefix}.rule", point.rule)


def _report(
    console: Console,
    evaluation: Evaluation,
    decision: Decision,
    model_name: str,
    truth_given: bool,
) -> None:
    console.print(comparison_table(evaluation))
    if evaluation.early_warning is not None:
        early = evaluation.early_warning
        console.print(early_warning_table(early))
        console.print(early_warning_caption(early))
        console.print("operating points (recorded with the model version):")
        console.print(operating_points_markdown(early.operating_points), markup=False)
    if truth_given and evaluation.oracle_rows < evaluation.rows:
        console.print(
            f"[yellow]note[/]: the truth file covers {evaluation.oracle_rows} of the "
            f"{evaluation.rows} test rows; the oracle row and ratios use those rows only"
        )
    style = "bold green" if decision.alias == "champion" else "bold yellow"
    console.print(
        f"[{style}]{model_name} v{decision.version} -> {decision.alias}[/]: {decision.reason}"
    )


def train(
    job: TrainJob,
    *,
    tracking_uri: str,
    now: datetime,
    model_name: str = MODEL_NAME,
    console: Console | None = None,
    artifact_location: str | None = None,
) -> TrainResult:
    """Train, evaluate, log and register a churn model (the stages of the module docstring).

    Args:
        job: what to train on and how (``training.jobs.TrainJob``: the log, labels, mapping,
            truth, horizon, observation spacing, trials, timeout, experiment, seed, threads).
        tracking_uri: MLflow tracking and registry URI (the CLI passes the settings' one).
        now: the current instant; events after it fail validation (the CLI passes the real time).
        model_name: registered model name.
        console: where progress and the table go (a fresh ``rich`` console by default).
        artifact_location: artifact root for a new experiment (default: beside a SQLite file).

    Raises:
        features.validation_report.InputError: when the inputs fail validation (the rendered
            report).
        ValueError: when the log is too short for the split, or the test slice has one class.
    """
    console = console or Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = TuningConfig(
        trials=job.trials, timeout=job.timeout, seed=job.seed, threads=job.threads
    )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = ensure_experiment(client, job.experiment, tracking_uri, artifact_location)
    with (
        mlflow_uris(tracking_uri),  # the fluent run logs there; the caller's URIs come back
        _progress(console) as progress,
        mlflow.start_run(experiment_id=experiment_id) as run,
    ):
        stages = _Stages(progress)
        prepared = _prepare(stages, job, now)
        _log_run_inputs(prepared.data, prepared.split, config)
        logger = TrialRunLogger(client, experiment_id, run.info.run_id)
        model, tuning, evaluation, scores = _fit_and_evaluate(
            stages, prepared, config, logger, job.seed
        )
        with stages.stage("log_model", "log and register the model"):
            decision, model_uri = _register(client, prepared, model, evaluation, scores, model_name)
        _log_outcome(tuning, evaluation, stages.seconds)
        card = model_card(
            model_name=f"{model_name} v{decision.version} ({decision.alias})",
            data=prepared.data.summary(),
            split=prepared.split.summary(),
            tuning=tuning,
            evaluation=evaluation,
            feature_names=model.feature_names,
        )
        mlflow.log_text(card, "model_card.md")
    _report(console, evaluation, decision, model_name, job.truth is not None)
    return TrainResult(
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        model_version=decision.version,
        model_uri=model_uri,
        decision=decision,
        evaluation=evaluation,
        tuning=tuning,
        data=prepared.data.summary(),
        split=prepared.split.summary(),
        stage_seconds=dict(stages.seconds),
    )


def _fit_and_evaluate(
    stages: _Stages,
    prepared: _Prepared,
    config: TuningConfig,
    logger: TrialRunLogger,
    seed: int,
) -> tuple[ChurnModel, TuningResult, Evaluation, pd.DataFrame]:
    """Stages 4-7: baselines, tuning, the final model, the evaluation and its plots.

    The model comes back carrying its named operating points (chosen on the calibration slice),
    with the test slice's scores frame (``lead`` included).
    """
    split = prepared.split
    with stages.stage("baselines", "baselines"):
        baselines = fit_baselines(split.train.frame, split.train.frame["churned"].to_numpy())
    with stages.stage("tuning", "Optuna trials"):
        tuning = _tune(split, config, stages.progress, logger)
    with stages.stage("model", "final model + calibration"):
        # the window its p_churn covers travels with it: the lifetime projection reads it
        model = replace(_fit_model(split, tuning, seed), horizon_days=split.horizon_days)
    with stages.stage("evaluate", "evaluation and plots"):
        evaluation, scores = _evaluate(
            split, model, baselines, prepared.truth, prepared.events, prepared.data.observed_until
        )
        _log_plots(scores, evaluation, model, split.test.frame)
    if evaluation.early_warning is not None:
        points = evaluation.early_warning.operating_points
        model = replace(model, operating_points={k: p.threshold for k, p in points.items()})
    return model, tuning, evaluation, scores
