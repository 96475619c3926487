"""Optuna tuning of the LightGBM churn model on expanding-window, purged time folds.

The objective of a trial is the mean, over the CV folds of :func:`training.splits.expanding_folds`,
of the validation PR-AUC (average precision; maximised) or log loss (minimised) of a LightGBM
booster with the trial's parameters. Sampling is a seeded TPE, so the same data, seed and trial
count give the same trials. Pruning works on LightGBM iterations: a LightGBM callback reports the
validation metric every ``report_every`` iterations to Optuna (step = fold * max_rounds + iteration,
so fold k of one trial is compared with fold k of the others) and raises ``optuna.TrialPruned`` when
the median pruner says the trial is behind. (optuna-integration's callback does the same; it is not
a dependency here.)

Each finished trial (complete or pruned) is handed to an optional ``on_trial`` hook; the pipeline
uses it to log the trial as a nested MLflow run (``training.tracking.TrialRunLogger``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models.churn import MONOTONE_DIRECTIONS
from models.metrics import log_loss, pr_auc
from training.splits import CvFold

Metric = Literal["pr_auc", "log_loss"]
LIGHTGBM_METRIC: dict[str, str] = {"pr_auc": "average_precision", "log_loss": "binary_logloss"}
DIRECTION: dict[str, str] = {"pr_auc": "maximize", "log_loss": "minimize"}
TrialHook = Callable[[optuna.trial.FrozenTrial, "TuningConfig"], None]


class TuningConfig(BaseModel):
    """How hard to search; every knob has a default fit for a 2-core machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trials: int = Field(30, ge=1)
    timeout: float | None = Field(None, gt=0, description="Seconds; stops after the running trial.")
    seed: int = 0
    metric: Metric = "pr_auc"
    max_boost_rounds: int = Field(400, ge=20)
    min_boost_rounds: int = Field(30, ge=1)
    report_every: int = Field(10, ge=1, description="LightGBM iterations between pruning checks.")
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_steps: int = Field(30, ge=0)
    threads: int = Field(2, ge=1)


@dataclass(frozen=True)
class TuningResult:
    """The best trial's LightGBM parameters and how the search went."""

    params: dict[str, object]
    """LightGBM parameters for ``ChurnModel.fit`` (fixed ones included)."""
    num_boost_round: int
    best_score: float
    metric: Metric
    best_trial: int
    trials_complete: int
    trials_pruned: int
    seconds: float


def fixed_params(config: TuningConfig, feature_names: list[str]) -> dict[str, object]:
    """LightGBM parameters every trial shares (objective, metric, threads, seeding, monotonicity).

    The monotone constraints are the churn model's own (``models.churn.MONOTONE_DIRECTIONS``), so
    that the folds score the same kind of model that is finally fitted.
    """
    return {
        "monotone_constraints": [MONOTONE_DIRECTIONS.get(name, 0) for name in feature_names],
        "objective": "binary",
        "metric": LIGHTGBM_METRIC[config.metric],
        "verbosity": -1,
        "num_threads": config.threads,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "bagging_freq": 1,
    }


def suggest_params(
    trial: optuna.Trial, config: TuningConfig, feature_names: list[str]
) -> tuple[dict[str, object], int]:
    """Sample one trial's LightGBM parameters and boosting rounds."""
    params = {
        **fixed_params(config, feature_names),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
    }
    rounds = trial.suggest_int(
        "num_boost_round", config.min_boost_rounds, config.max_boost_rounds, log=True
    )
    return params, rounds


def pruning_callback(trial: optuna.Trial, fold: int, config: TuningConfig) -> Callable:
    """A LightGBM callback reporting the validation metric to Optuna and pruning on its advice."""

    def report(env: lgb.callback.CallbackEnv) -> None:
        iteration = env.iteration + 1
        if iteration % config.report_every or not env.evaluation_result_list:
            return
        value = env.evaluation_result_list[0][2]
        trial.report(value, step=fold * config.max_boost_rounds + iteration)
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold} iteration {iteration}: {value:.4f}")

    return report


@dataclass(frozen=True)
class _FoldData:
    train: lgb.Dataset
    valid: lgb.Dataset
    X_valid: pd.DataFrame
    y_valid: np.ndarray


def _fold_data(X: pd.DataFrame, y: np.ndarray, folds: list[CvFold]) -> list[_FoldData]:
    """LightGBM datasets per fold, binned once and reused by every trial."""
    # feature_pre_filter off: trials change min_data_in_leaf on an already-binned dataset.
    dataset_params = {"feature_pre_filter": False, "verbosity": -1}
    prepared = []
    for fold in folds:
        train = lgb.Dataset(
            X.iloc[fold.fit_index], y[fold.fit_index], params=dataset_params, free_raw_data=False
        )
        X_valid = X.iloc[fold.valid_index]
        valid = lgb.Dataset(
            X_valid,
            y[fold.valid_index],
            reference=train,
            params=dataset_params,
            free_raw_data=False,
        )
        prepared.append(_FoldData(train, valid, X_valid, y[fold.valid_index]))
    return prepared


def _score(metric: Metric, y: np.ndarray, p: np.ndarray) -> float:
    return pr_auc(y, p) if metric == "pr_auc" else log_loss(y, p)


def make_objective(
    X: pd.DataFrame, y: np.ndarray, folds: list[CvFold], config: TuningConfig
) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: mean fold score of one parameter draw."""
    fold_data = _fold_data(X, y, folds)

    def objective(trial: optuna.Trial) -> float:
        params, rounds = suggest_params(trial, config, list(X.columns))
        scores = []
        for number, data in enumerate(fold_data):
            booster = lgb.train(
                params,
                data.train,
                num_boost_round=rounds,
                valid_sets=[data.valid],
                valid_names=["valid"],
                callbacks=[pruning_callback(trial, number, config)],
            )
            scores.append(_score(config.metric, data.y_valid, booster.predict(data.X_valid)))
            trial.set_user_attr(f"fold_{number}_{config.metric}", scores[-1])
        return float(np.mean(scores))

    return objective


def _count(study: optuna.Study, state: optuna.trial.TrialState) -> int:
    return sum(1 for trial in study.trials if trial.state == state)


def tune(
    X: pd.DataFrame,
    y: np.ndarray,
    folds: list[CvFold],
    config: TuningConfig,
    *,
    on_trial: TrialHook | None = None,
    on_progress: Callable[[optuna.Study], None] | None = None,
) -> TuningResult:
    """Search LightGBM parameters with a seeded TPE sampler and a median pruner.

    Args:
        X: The model matrix (``models.matrix.to_model_matrix``) of the training slice.
        y: 0/1 labels aligned with ``X``.
        folds: Expanding-window folds over ``X``'s rows.
        config: Trials, timeout, seed, metric and LightGBM limits.
        on_trial: Called with every finished trial (complete or pruned), e.g. to log it.
        on_progress: Called with the study after every trial (progress bars).

    Raises:
        ValueError: when no trial completed (every trial was pruned before the timeout).
    """
    started = time.perf_counter()
    study = optuna.create_study(
        direction=DIRECTION[config.metric],
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.pruner_startup_trials,
            n_warmup_steps=config.pruner_warmup_steps,
        ),
    )

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(trial, config)
        if on_progress is not None:
            on_progress(study)

    study.optimize(
        make_objective(X, y, folds, config),
        n_trials=config.trials,
        timeout=config.timeout,
        callbacks=[after_trial],
    )
    complete = _count(study, optuna.trial.TrialState.COMPLETE)
    if complete == 0:
        raise ValueError(
            f"tuning: none of {len(study.trials)} trials completed (all pruned); "
            "raise --trials or --timeout"
        )
    best = study.best_trial
    params, rounds = _params_of(best, config, list(X.columns))
    return TuningResult(
        params=params,
        num_boost_round=rounds,
        best_score=float(best.value),
        metric=config.metric,
        best_trial=best.number,
        trials_complete=complete,
        trials_pruned=_count(study, optuna.trial.TrialState.PRUNED),
        seconds=time.perf_counter() - started,
    )


def _params_of(
    trial: optuna.trial.FrozenTrial, config: TuningConfig, feature_names: list[str]
) -> tuple[dict, int]:
    """The full LightGBM parameters and rounds of a finished trial."""
    sampled = dict(trial.params)
    rounds = int(sampled.pop("num_boost_round"))
    return {**fixed_params(config, feature_names), **sampled}, rounds


def best_so_far(study: optuna.Study) -> float:
    """The best completed trial's value, or NaN before the first one completes."""
    try:
        return float(study.best_value)
    except ValueError:
        return math.nan
