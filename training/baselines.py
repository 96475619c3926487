"""Baselines the model must beat, trained on the training slice and scored on the same test slice.

- ``recency``: days_since_last_event alone. The raw score ranks learners; an isotonic
  (monotone non-decreasing) fit on the training slice maps it to a churn probability so that
  Brier, ECE and log loss are comparable with the model's. Isotonic steps tie learners inside a
  step, and the metrics treat ties exactly (never by row order).
- ``risk_rules``: risk_indicator_count, the rules-only score (how many of the 12 risk flags are up),
  mapped to a probability the same way: the training churn rate per count, made monotone.
- ``logistic``: a scikit-learn logistic regression on the model's features (median imputation with
  missing-value indicators, standard scaling, one-hot product_tag).

Every baseline takes a feature frame (the catalog columns; extra columns ignored) and returns
``P(churned = 1)`` per row, aligned with the frame.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.matrix import to_model_matrix

CATEGORICAL_FEATURES = ("product_tag",)
# Isotonic outputs can be exactly 0 or 1 on a training step with a single class; log loss would
# then be infinite for one surprise, so probabilities are kept this far inside (0, 1).
PROBABILITY_FLOOR = 1e-4


class Scorer(Protocol):
    """Anything that learns P(churn) from a feature frame."""

    name: str

    def fit(self, frame: pd.DataFrame, churned: np.ndarray) -> Scorer:
        """Fit on a feature frame and its 0/1 labels; returns self."""
        ...

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Churn probability per row of ``frame``."""
        ...


class SingleFeatureBaseline:
    """One feature column as the score, mapped to a probability by an isotonic fit."""

    def __init__(self, name: str, column: str) -> None:
        self.name = name
        self.column = column
        self._isotonic = IsotonicRegression(
            increasing=True,
            out_of_bounds="clip",
            y_min=PROBABILITY_FLOOR,
            y_max=1 - PROBABILITY_FLOOR,
        )

    def _scores(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column not in frame.columns:
            raise ValueError(
                f"{self.name} baseline: the feature frame has no column {self.column!r}"
            )
        scores = pd.to_numeric(frame[self.column], errors="coerce").to_numpy(dtype=float)
        missing = int(np.isnan(scores).sum())
        if missing:
            raise ValueError(
                f"{self.name} baseline: {missing} of {len(scores)} rows have a null or non-numeric "
                f"{self.column}"
            )
        return scores

    def fit(self, frame: pd.DataFrame, churned: np.ndarray) -> SingleFeatureBaseline:
        """Fit the monotone map from the column's value to the training churn rate."""
        self._isotonic.fit(self._scores(frame), np.asarray(churned, dtype=float))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Churn probability per row from the column's value."""
        return self._isotonic.predict(self._scores(frame))


def _logistic_pipeline(numeric: list[str], categorical: list[str]) -> Pipeline:
    numbers = make_pipeline(
        # keep_empty_features: a foreign log without durations has all-null columns; keeping them
        # (as zeros) keeps the column set the same between fit and predict.
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
    )
    columns = ColumnTransformer(
        [
            ("numbers", numbers, numeric),
            ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=2000))


class LogisticBaseline:
    """Logistic regression on the model's features (imputation, scaling, one-hot product_tag)."""

    name = "logistic"

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None

    def fit(self, frame: pd.DataFrame, churned: np.ndarray) -> LogisticBaseline:
        """Fit the pipeline on the model matrix of ``frame``."""
        matrix = _as_sklearn_matrix(frame)
        categorical = [c for c in matrix.columns if c in CATEGORICAL_FEATURES]
        numeric = [c for c in matrix.columns if c not in CATEGORICAL_FEATURES]
        self._pipeline = _logistic_pipeline(numeric, categorical)
        self._pipeline.fit(matrix, np.asarray(churned, dtype=int))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Churn probability per row."""
        if self._pipeline is None:
            raise RuntimeError("logistic baseline: predict_proba called before fit")
        return self._pipeline.predict_proba(_as_sklearn_matrix(frame))[:, 1]


def _as_sklearn_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """The model matrix with categories as plain strings (scikit-learn's one-hot input)."""
    matrix = to_model_matrix(frame)
    for column in CATEGORICAL_FEATURES:
        if column in matrix.columns:
            matrix[column] = matrix[column].astype(object).where(matrix[column].notna(), "missing")
    return matrix


def make_baselines() -> list[Scorer]:
    """Fresh, unfitted baselines in the order the comparison table lists them."""
    return [
        SingleFeatureBaseline("recency", "days_since_last_event"),
        SingleFeatureBaseline("risk_rules", "risk_indicator_count"),
        LogisticBaseline(),
    ]


def fit_baselines(frame: pd.DataFrame, churned: np.ndarray) -> list[Scorer]:
    """Fit every baseline on the training slice."""
    return [baseline.fit(frame, churned) for baseline in make_baselines()]
