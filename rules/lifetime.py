"""Lifetime value projection per learner: expected remaining months and projected value.

From the calibrated churn probability ``p`` (the probability of churn within the model's label
window of ``H_d`` days, 30 by default) to a projection over a capped horizon of ``H`` months
(``lifetime.horizon_months`` in ``interventions.yaml``, 24 by default):

- **monthly hazard** ``h = 1 - (1 - p) ** (30 / H_d)``: a month is 30 days, so a 30-day window
  gives ``h = p``; a 14-day window's ``p`` compounds over 30/14 windows.
- **expected remaining months** ``E = sum_{k=0}^{H-1} (1 - h) ** k = (1 - (1 - h) ** H) / h``
  (``H`` when ``h = 0``, 1 when ``h = 1``): month 0, the month starting on the decision day,
  counts in full (the learner is a customer today); month k counts with the probability
  ``(1 - h) ** k`` of surviving the k month ends before it. So ``1 <= E <= H``.
- **projected value** ``V = mrr x E``: null when ``mrr`` is null (unknown is not 0), 0 for a free
  learner (``mrr`` 0).

Assumptions (stated because each one is a simplification a reader should weigh):

- **constant hazard**: today's ``p`` holds for every later month (no ageing, no recovery, no
  decline); the learner's engagement in fact drifts, so the projection is a snapshot of today.
- **constant mrr**: no upgrades, downgrades, seat changes or price changes.
- **no discounting**: a euro in month 23 counts as much as one today.
- **no win-back**: a churned learner never pays again.
- **the cap** ``H``: nothing beyond it counts (a learner with ``p`` near 0 is worth ``H`` months).

**Months at risk** ``max(0, E(p_healthy) - E(p))``: the months of value a learner's risk is
expected to cost against a healthy learner's over the same cap, where ``p_healthy`` is a healthy
learner's ``p_churn`` (``healthy_p_churn``: the champion's ``@recovered`` operating point when it
records one, the score under which learners churn no more than the ST_001 base rate). Value at
risk (``rules.interventions.value_at_risk``) is the monthly value times the months at risk: it
grows with the risk and with the value, and a learner as safe as a healthy one risks nothing.
(``p x monthly value x E``, tried first, equals ``monthly value x P(churn within H)``: it
saturates for p above ~0.3 and ordered the call list by mrr alone, low-risk payers first.)

Tested against the simulator (``tests/rules/test_lifetime.py``, figures in ``rules/README.md``):
with the simulator's true probabilities at one day, the mean projected months of the paid tiers
lie within 15% of the mean realised months until final churn (censored at the end of the
simulation, the cap being the months it has left); Freemium is overstated 2-3x, because a free
learner cancels nothing and the label sees their churn only after a whole silent month.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

MONTH_DAYS = 30
"""Days in a month of the projection (the default label window is one month)."""
LIFETIME_COLUMNS: tuple[str, ...] = ("expected_months", "projected_value")
"""The projection's columns in the decisions (``rules.schemas.DECISION_COLUMNS``) and scores."""


class Lifetime(BaseModel):
    """The lifetime projection's settings (``lifetime:`` in ``interventions.yaml``).

    Attributes:
        horizon_months: the cap H: months projected at most, the current one included.
        healthy_p_churn: a healthy learner's ``p_churn`` over the same window, the reference of
            the months at risk (the champion's ``@recovered`` replaces it when the rules load on
            a champion that records it; 0.08 is about the demo's).
        score_horizon_days: H_d, the window ``p_churn`` is a probability of churn within (the
            champion's recorded label window replaces it when the rules load on the champion,
            ``RuleSet.with_score_horizon``): the
            champion's label window (``lstep train --horizon-days``, 30 by default).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon_months: int = Field(default=24, gt=0)
    score_horizon_days: int = Field(default=MONTH_DAYS, gt=0)
    healthy_p_churn: float = Field(default=0.08, ge=0.0, le=1.0)


def monthly_hazard(p_churn: ArrayLike, score_horizon_days: int = MONTH_DAYS) -> np.ndarray:
    """The monthly churn hazard ``1 - (1 - p) ** (30 / H_d)`` of a churn probability over H_d days.

    Args:
        p_churn: probabilities in [0, 1]; NaN (no score) stays NaN.
        score_horizon_days: H_d, the window ``p_churn`` covers.
    """
    p = np.asarray(p_churn, dtype=float)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf is the p = 1 case: h = 1
        return -np.expm1(_survival_log(p, score_horizon_days))


def expected_months(p_churn: ArrayLike, lifetime: Lifetime | None = None) -> np.ndarray:
    """Expected remaining months over the capped horizon (module docstring: the formula).

    Computed as ``expm1(H log s) / expm1(log s)`` with ``log s = (30 / H_d) log1p(-p)``, exact
    near ``p = 0`` where ``1 - s ** H`` would cancel.

    Args:
        p_churn: calibrated churn probabilities in [0, 1] over ``lifetime.score_horizon_days``;
            NaN (no score) gives NaN.
        lifetime: the cap and the score's window; None for the defaults (24 months, 30 days).

    Returns:
        E per learner, in [1, H] (NaN where ``p_churn`` is NaN).
    """
    lifetime = lifetime or Lifetime()
    p = np.asarray(p_churn, dtype=float)
    horizon = float(lifetime.horizon_months)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_survival = _survival_log(p, lifetime.score_horizon_days)
        months = np.expm1(horizon * log_survival) / np.expm1(log_survival)
    # p = 0: every month survives (0 / 0 above); p = 1: only the current month counts.
    months = np.where(p == 0.0, horizon, np.where(p == 1.0, 1.0, months))
    return np.clip(months, 1.0, horizon)  # rounding must not leave [1, H]


def months_at_risk(months: ArrayLike, lifetime: Lifetime | None = None) -> np.ndarray:
    """``max(0, E(healthy_p_churn) - E(p))``: months of value the risk costs against a healthy
    learner's (module docstring); NaN where the expected months are NaN (no score).

    Args:
        months: ``expected_months`` of the learners' ``p_churn`` under the same ``lifetime``.
        lifetime: the cap, the window and the healthy reference; None for the defaults.
    """
    lifetime = lifetime or Lifetime()
    months = np.asarray(months, dtype=float)
    healthy = expected_months(np.array([lifetime.healthy_p_churn]), lifetime)[0]
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(months), np.nan, np.maximum(healthy - months, 0.0))


def projected_value(mrr: ArrayLike, months: ArrayLike) -> np.ndarray:
    """``mrr x expected months``: NaN where mrr is null (unknown), 0 where mrr is 0 (free).

    Args:
        mrr: monthly recurring revenue per learner (NaN: unknown).
        months: ``expected_months`` of the same learners.
    """
    return np.asarray(mrr, dtype=float) * np.asarray(months, dtype=float)


def _survival_log(p: np.ndarray, score_horizon_days: int) -> np.ndarray:
    """``log(1 - h)``: the log of the probability of surviving one month."""
    return (MONTH_DAYS / score_horizon_days) * np.log1p(-p)


__all__ = [
    "LIFETIME_COLUMNS",
    "MONTH_DAYS",
    "Lifetime",
    "expected_months",
    "monthly_hazard",
    "months_at_risk",
    "projected_value",
]
