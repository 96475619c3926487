"""Evaluation on the test slice: the model beside the baselines and, on simulated data, the oracle.

Inputs are a **scores frame**: one row per test (customer_id, as_of) with the realised label
``churned`` and one probability column per scorer (``model``, ``recency``, ``risk_rules``,
``logistic`` and, when a simulator truth file is given, ``oracle`` = the simulator's ``p_true``).

Metrics (``models.metrics.classification_metrics``): ROC-AUC, PR-AUC, lift in the top decile,
recall at precision 0.85, Brier, ECE (15 bins), log loss. The oracle may cover only part of the test
rows (``truth_share`` < 1): its row of the table is computed on the covered rows, and the
model/oracle ratios compare the model and the oracle on exactly those rows. A ratio is
``model / oracle`` for every metric, so it is below 1 for a model that ranks worse (AUCs, lift,
recall) and above 1 for one with larger errors (Brier, ECE, log loss).

**Early warning** (``training.early_warning``): when the calibration slice's scores are given,
each scorer gets its own ``early_warning`` threshold chosen there (the lowest with precision 0.85
at 14+ days' lead, or its best reachable precision) and is measured with it on the test slice at
lead targets of 7, 14 and 21 days: precision, recall, accuracy and the lead-time distribution.
Both frames then carry ``lead``, the days from ``as_of`` to the learner's next ST_006 date.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from models.metrics import classification_metrics
from training.early_warning import MIN_FLAGS, EarlyWarning, evaluate_early_warning

KEYS = ["customer_id", "as_of"]
LABEL = "churned"
ORACLE = "oracle"
MODEL = "model"
TRUTH_SCHEMA = pa.DataFrameSchema(
    {
        "customer_id": pa.Column(str, nullable=False),
        "as_of": pa.Column("datetime64[us]", nullable=False),
        "p_true": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=False),
    },
    strict="filter",
    coerce=True,
    unique=KEYS,
    name="truth",
)


def prepare_truth(truth: pd.DataFrame) -> pd.DataFrame:
    """The simulator truth file's (customer_id, as_of, p_true), as_of as naive midnight datetimes.

    Raises:
        pandera.errors.SchemaError: on missing columns, p_true outside [0, 1] or duplicate keys.
    """
    frame = truth.copy()
    if "as_of" in frame:
        frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
    return TRUTH_SCHEMA.validate(frame)


def attach_oracle(scores: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Add an ``oracle`` column (``p_true`` joined on (customer_id, as_of); NaN where absent)."""
    oracle = prepare_truth(truth).rename(columns={"p_true": ORACLE})
    joined = scores.merge(oracle, on=KEYS, how="left", validate="one_to_one")
    joined.index = scores.index
    return joined


@dataclass(frozen=True)
class Evaluation:
    """The comparison table and what it was computed on."""

    table: pd.DataFrame
    """Index: scorer; columns: the classification metrics."""
    ratios: dict[str, float]
    """model / oracle per metric, on the rows the oracle covers (empty without truth)."""
    rows: int
    oracle_rows: int
    early_warning: EarlyWarning | None = None
    """Every scorer at its early-warning point, and the model's operating points (or None)."""

    def mlflow_metrics(self) -> dict[str, float]:
        """``test.<scorer>.<metric>`` and ``test.model_vs_oracle.<metric>``, NaNs left out."""
        metrics = {
            f"test.{scorer}.{name}": float(value)
            for scorer, row in self.table.iterrows()
            for name, value in row.items()
            if pd.notna(value)
        }
        metrics |= {f"test.model_vs_oracle.{k}": v for k, v in self.ratios.items() if pd.notna(v)}
        if self.early_warning is not None:
            metrics |= self.early_warning.mlflow_metrics()
        return metrics | {
            "test.rows": float(self.rows),
            "test.oracle_rows": float(self.oracle_rows),
        }


def _ratios(scores: pd.DataFrame) -> dict[str, float]:
    covered = scores[scores[ORACLE].notna()]
    if covered.empty or covered[LABEL].nunique() < 2:
        return {}
    model = classification_metrics(covered[LABEL], covered[MODEL])
    oracle = classification_metrics(covered[LABEL], covered[ORACLE])
    return {name: model[name] / oracle[name] if oracle[name] else np.nan for name in model}


def evaluate_scores(
    scores: pd.DataFrame,
    scorers: list[str],
    *,
    calibration: pd.DataFrame | None = None,
    min_flags: int = MIN_FLAGS,
) -> Evaluation:
    """Metrics of every scorer column of ``scores``, and their early warning (module docstring).

    Args:
        scores: customer_id, as_of, churned and one probability column per name in ``scorers``
            (an ``oracle`` column may hold NaN where the truth has no row); ``lead`` too when
            ``calibration`` is given.
        scorers: the columns to compare, in table order (``model`` first).
        calibration: the calibration slice's scores frame with the same columns plus
            ``risk_indicator_count``, to choose the operating points on; None: no early warning.
        min_flags: fewest flagged calibration rows an early-warning threshold needs.

    Raises:
        ValueError: when a scorer column is missing, or the test slice has a single class.
    """
    missing = [name for name in scorers if name not in scores.columns]
    if missing:
        raise ValueError(f"evaluation: scores frame lacks the scorer columns {missing}")
    rows: dict[str, Mapping[str, float]] = {}
    for name in scorers:
        usable = scores[scores[name].notna()]
        if not usable.empty:
            rows[name] = classification_metrics(usable[LABEL], usable[name])
    table = pd.DataFrame.from_dict(rows, orient="index")
    has_oracle = ORACLE in scores.columns and MODEL in scores.columns
    early = None
    if calibration is not None:
        early = evaluate_early_warning(calibration, scores, list(rows), min_flags=min_flags)
    return Evaluation(
        table=table,
        ratios=_ratios(scores) if has_oracle else {},
        rows=len(scores),
        oracle_rows=int(scores[ORACLE].notna().sum()) if ORACLE in scores.columns else 0,
        early_warning=early,
    )


def score_test_slice(
    test_frame: pd.DataFrame,
    *,
    model_probability: np.ndarray,
    baselines: list,
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The scores frame of the test slice: keys, label, model, each baseline, oracle if given.

    Args:
        test_frame: the test slice (features and ``churned``).
        model_probability: the model's calibrated ``p_churn`` per row of ``test_frame``.
        baselines: fitted ``training.baselines.Scorer`` objects.
        truth: the simulator's truth frame (customer_id, as_of, p_true, ...), or None.
    """
    scores = test_frame[[*KEYS, LABEL]].copy()
    scores[MODEL] = np.asarray(model_probability, dtype=float)
    for baseline in baselines:
        scores[baseline.name] = baseline.predict_proba(test_frame)
    return attach_oracle(scores, truth) if truth is not None else scores
