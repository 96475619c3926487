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

**Lead time.** The ST_006 date of a learner is the first UTC midnight at least 30 days after their
last event (when the daily batch would tag them churned). A *churner* here is a learner with a
``churned = 1`` test row whose ST_006 date is observable (``<= observed_until``) and not before the
first test date. The scorer *flags* a learner at ``as_of`` t when its probability is
``>= flag_threshold`` (default 0.5, the churn model's decision threshold: ``p_churn >= 0.5`` is the
"churner" decision that its ``confidence`` speaks about). Lead time = days from the first flagging
test date before the ST_006 date to that date. Reported: churners, share flagged at all, median lead
time of the flagged, and the share of ALL churners flagged at least 14 days ahead. The test slice
has weekly dates, so lead times move in steps of ``every_days``, and a churner whose decline began
before the first test date cannot be credited with more lead than the slice allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from models.metrics import classification_metrics

KEYS = ["customer_id", "as_of"]
LABEL = "churned"
ORACLE = "oracle"
MODEL = "model"
ST006_INACTIVE_DAYS = 30
"""ST_006 (Status:Churned) fires after this many days without an event (DESIGN §5)."""
LEAD_TARGET_DAYS = 14
"""The business wants churners flagged at least this many days before ST_006 (DESIGN §4)."""
DEFAULT_FLAG_THRESHOLD = 0.5
LEAD_COLUMNS = ("churners", "flagged_share", "median_lead_days", "flagged_14d_share")

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


def st006_dates(last_event: pd.Series) -> pd.Series:
    """First UTC midnight at least ``ST006_INACTIVE_DAYS`` after each learner's last event.

    Args:
        last_event: per customer_id (index), the timestamp of the last event (UTC or naive UTC).
    """
    instants = pd.to_datetime(last_event, utc=True).dt.tz_localize(None)
    due = instants + pd.Timedelta(days=ST006_INACTIVE_DAYS)
    return due.dt.ceil("D").astype("datetime64[us]")


def lead_times(
    scores: pd.DataFrame,
    column: str,
    st006: pd.Series,
    *,
    observed_until: pd.Timestamp,
    flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
) -> pd.DataFrame:
    """Per churner: ST_006 date, first flagging as_of and lead time in days (NaN if never flagged).

    See the module docstring for who counts as a churner and what flagging means.
    """
    churned_rows = scores.loc[scores[LABEL] == 1, "customer_id"].unique()
    due = st006.reindex(churned_rows)
    first_test_date = scores["as_of"].min()
    due = due[(due <= observed_until) & (due >= first_test_date)].rename("st006_date")
    rows = scores[scores["customer_id"].isin(due.index)].join(due, on="customer_id")
    flagged = rows[(rows[column] >= flag_threshold) & (rows["as_of"] < rows["st006_date"])]
    first_flag = flagged.groupby("customer_id")["as_of"].min().rename("first_flag")
    result = due.to_frame().join(first_flag)
    result["lead_days"] = (result["st006_date"] - result["first_flag"]).dt.days
    return result.rename_axis("customer_id").reset_index()


def lead_summary(per_churner: pd.DataFrame) -> dict[str, float]:
    """Churners, share flagged, median lead days of the flagged, share flagged >= 14 days ahead."""
    churners = len(per_churner)
    if churners == 0:
        return dict.fromkeys(LEAD_COLUMNS, np.nan) | {"churners": 0.0}
    lead = per_churner["lead_days"]
    return {
        "churners": float(churners),
        "flagged_share": float(lead.notna().mean()),
        "median_lead_days": float(lead.median()) if lead.notna().any() else np.nan,
        "flagged_14d_share": float((lead >= LEAD_TARGET_DAYS).mean()),
    }


@dataclass(frozen=True)
class Evaluation:
    """The comparison table and what it was computed on."""

    table: pd.DataFrame
    """Index: scorer; columns: the classification metrics, then the lead-time columns."""
    ratios: dict[str, float]
    """model / oracle per metric, on the rows the oracle covers (empty without truth)."""
    rows: int
    oracle_rows: int
    flag_threshold: float

    def mlflow_metrics(self) -> dict[str, float]:
        """``test.<scorer>.<metric>`` and ``test.model_vs_oracle.<metric>``, NaNs left out."""
        metrics = {
            f"test.{scorer}.{name}": float(value)
            for scorer, row in self.table.iterrows()
            for name, value in row.items()
            if pd.notna(value)
        }
        metrics |= {f"test.model_vs_oracle.{k}": v for k, v in self.ratios.items() if pd.notna(v)}
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
    last_event: pd.Series,
    observed_until: pd.Timestamp,
    flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
) -> Evaluation:
    """Metrics and lead times of every scorer column of ``scores`` (see the module docstring).

    Args:
        scores: customer_id, as_of, churned and one probability column per name in ``scorers``
            (an ``oracle`` column may hold NaN where the truth has no row).
        scorers: the columns to compare, in table order (``model`` first).
        last_event: per customer_id, the timestamp of their last event in the whole log.
        observed_until: the instant up to which the log is complete.
        flag_threshold: probability at which a scorer flags a learner (lead time).

    Raises:
        ValueError: when a scorer column is missing, or the test slice has a single class.
    """
    missing = [name for name in scorers if name not in scores.columns]
    if missing:
        raise ValueError(f"evaluation: scores frame lacks the scorer columns {missing}")
    st006 = st006_dates(last_event)
    rows: dict[str, Mapping[str, float]] = {}
    for name in scorers:
        usable = scores[scores[name].notna()]
        if usable.empty:
            continue
        metrics = classification_metrics(usable[LABEL], usable[name])
        per_churner = lead_times(
            usable, name, st006, observed_until=observed_until, flag_threshold=flag_threshold
        )
        rows[name] = metrics | lead_summary(per_churner)
    table = pd.DataFrame.from_dict(rows, orient="index")
    has_oracle = ORACLE in scores.columns and MODEL in scores.columns
    return Evaluation(
        table=table,
        ratios=_ratios(scores) if has_oracle else {},
        rows=len(scores),
        oracle_rows=int(scores[ORACLE].notna().sum()) if ORACLE in scores.columns else 0,
        flag_threshold=flag_threshold,
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
