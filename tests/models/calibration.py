"""Calibration and confidence checks that can tell a calibrated model from an uncalibrated one.

An ECE below a threshold cannot: on a well-specified synthetic population the raw LightGBM scores
are nearly calibrated already, and even scores shrunk by 0.9 stay under 0.03. The logistic
recalibration test can (Cox 1958; "weak calibration" in Van Calster et al. 2016, J Clin Epidemiol
74:167): regress the outcome on the logit of the probability; a calibrated probability has slope 1
(not over- or under-confident) and, with the logit as an offset, intercept 0 (right on average).
statsmodels fits both and gives their confidence intervals; the check is that 1 and 0 lie inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy.special import logit

LEVEL = 0.95
EDGE = 1e-6
"""Probabilities are clipped to [EDGE, 1 - EDGE] so that their logits are finite."""


@dataclass(frozen=True)
class LogisticCalibration:
    """Calibration slope and intercept of probabilities against outcomes, with their intervals.

    Attributes:
        slope: the coefficient of logit(p) in the logistic regression of y on it.
        slope_interval: its confidence interval at ``LEVEL``.
        intercept: the intercept of that regression with logit(p) as an offset
            (calibration-in-the-large).
        intercept_interval: its confidence interval at ``LEVEL``.
    """

    slope: float
    slope_interval: tuple[float, float]
    intercept: float
    intercept_interval: tuple[float, float]

    @property
    def holds(self) -> bool:
        """Slope 1 and intercept 0 are both inside their intervals."""
        low, high = self.slope_interval
        lowest, highest = self.intercept_interval
        return low <= 1.0 <= high and lowest <= 0.0 <= highest


def logistic_calibration(y: ArrayLike, p: ArrayLike) -> LogisticCalibration:
    """Fit the calibration slope and intercept of probabilities ``p`` for 0/1 outcomes ``y``."""
    outcomes = np.asarray(y, dtype=float)
    log_odds = logit(np.clip(np.asarray(p, dtype=float), EDGE, 1 - EDGE))
    alpha = 1 - LEVEL
    slope = sm.Logit(outcomes, sm.add_constant(log_odds)).fit(disp=0)
    in_the_large = sm.GLM(
        outcomes, np.ones_like(log_odds), family=sm.families.Binomial(), offset=log_odds
    ).fit()
    slope_low, slope_high = slope.conf_int(alpha)[1]
    intercept_low, intercept_high = in_the_large.conf_int(alpha)[0]
    return LogisticCalibration(
        slope=float(slope.params[1]),
        slope_interval=(float(slope_low), float(slope_high)),
        intercept=float(in_the_large.params[0]),
        intercept_interval=(float(intercept_low), float(intercept_high)),
    )


def claims_per_bin(
    confidence: np.ndarray, right: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-count confidence bin: the share right, the mean claim and its binomial SE."""
    groups = np.array_split(np.argsort(confidence, kind="stable"), bins)
    accuracy = np.array([right[rows].mean() for rows in groups])
    claimed = np.array([confidence[rows].mean() for rows in groups])
    sizes = np.array([len(rows) for rows in groups])
    return accuracy, claimed, np.sqrt(claimed * (1 - claimed) / sizes)
