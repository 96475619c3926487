"""Optuna tuning: seeded, pruning on LightGBM iterations, every finished trial handed to a hook."""

from __future__ import annotations

from datetime import date

import lightgbm as lgb
import optuna
import pytest

from models.matrix import to_model_matrix
from tests.training.frames import feature_frame, weekly_dates
from training.splits import expanding_folds
from training.tuning import TuningConfig, pruning_callback, tune

FAST = {"threads": 1, "max_boost_rounds": 40, "min_boost_rounds": 10, "report_every": 5}


@pytest.fixture(scope="module")
def problem():
    frame = feature_frame(60, weekly_dates(date(2026, 2, 1), 14), seed=3)
    folds = expanding_folds(frame, horizon_days=30, n_folds=2)
    return to_model_matrix(frame), frame["churned"].to_numpy(), folds


def test_same_seed_gives_the_same_search(problem):
    # given the same data and seed twice
    X, y, folds = problem
    config = TuningConfig(trials=3, seed=7, **FAST)

    # when tuned twice
    first = tune(X, y, folds, config)
    second = tune(X, y, folds, config)

    # then the best parameters and score are identical
    assert first.params == second.params
    assert first.best_score == second.best_score
    assert first.trials_complete + first.trials_pruned == 3


def test_every_finished_trial_reaches_the_hook_and_the_progress(problem):
    # given hooks that record what they see
    X, y, folds = problem
    seen, progress = [], []
    config = TuningConfig(trials=4, seed=1, **FAST)

    # when tuned
    result = tune(
        X,
        y,
        folds,
        config,
        on_trial=lambda trial, cfg: seen.append((trial.number, trial.state.name)),
        on_progress=lambda study: progress.append(len(study.trials)),
    )

    # then each trial was handed over once, in order, and the best is a real PR-AUC
    assert [number for number, _ in seen] == [0, 1, 2, 3]
    assert progress == [1, 2, 3, 4]
    assert 0.0 < result.best_score <= 1.0
    assert result.params["objective"] == "binary" and result.params["seed"] == 1


def _env(value: float, iteration: int) -> lgb.callback.CallbackEnv:
    return lgb.callback.CallbackEnv(
        model=None,
        params={},
        iteration=iteration,
        begin_iteration=0,
        end_iteration=100,
        evaluation_result_list=[("valid", "average_precision", value, True)],
    )


def test_pruning_callback_reports_per_fold_steps_and_prunes():
    # given a trial whose pruner prunes anything below 0.9
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.9)
    )
    trial = study.ask()
    config = TuningConfig(report_every=10, max_boost_rounds=100)
    callback = pruning_callback(trial, fold=1, config=config)

    # when LightGBM reaches iteration 5 (not a report step) then iteration 10 with 0.5
    callback(_env(0.5, iteration=4))
    with pytest.raises(optuna.TrialPruned, match="fold 1 iteration 10"):
        callback(_env(0.5, iteration=9))

    # then one value was reported, at step fold * max_rounds + iteration
    assert study.trials[0].intermediate_values == {110: 0.5}


def test_config_rejects_unknown_knobs():
    # when / then: frozen pydantic with extra="forbid"
    with pytest.raises(ValueError, match="extra"):
        TuningConfig(trails=3)
