"""Binary-classification metrics for churn scores, in plain numpy.

The same functions score the model, the baselines and the simulator's oracle, so that every row of
the comparison table means the same thing. Every function takes ``y`` (0/1 outcomes) and ``p``
(predicted probabilities of class 1) of equal length and validates them first: a NaN, a label other
than 0/1, a probability outside [0, 1] or a length mismatch is a ``ValueError`` that says how many
values are wrong. Ties in ``p`` are handled exactly (never by the order of the rows), so shuffling
the rows never changes a metric.

Definitions:

- ``roc_auc``: the probability that a random churner scores above a random non-churner, ties
  counting one half (Mann-Whitney U with average ranks).
- ``pr_auc``: average precision, ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds
  taken from high to low (the step-wise area under the precision-recall curve, no interpolation;
  the same as scikit-learn's ``average_precision_score``).
- ``lift_top_decile``: the churn rate among the ``ceil(n / 10)`` highest scores divided by the
  overall churn rate. When the cut falls inside a group of tied scores, that group contributes in
  proportion (the expected value under a random tie break).
- ``recall_at_precision_85``: the largest recall over thresholds ``p >= t`` whose precision is at
  least 0.85; 0.0 when no threshold reaches that precision.
- ``brier``: mean squared error ``mean((p - y)^2)``.
- ``ece``: expected calibration error with 15 equal-width bins on [0, 1] (bin ``b`` holds
  ``b/15 <= p < (b+1)/15``, the last bin also holds ``p == 1``):
  ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``; empty bins count zero.
- ``log_loss``: mean negative log-likelihood, ``p`` clipped to ``[1e-15, 1 - 1e-15]``.

AUCs and lift need both classes; a single-class ``y`` is a ``ValueError`` rather than a NaN,
because a test slice without churners (or with nothing else) cannot rank models and must not pass
unnoticed.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

ECE_BINS = 15
LOG_LOSS_EPS = 1e-15
RECALL_PRECISION_TARGET = 0.85


def _as_outcomes_and_scores(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check ``y`` and ``p`` and return them as float arrays.

    Raises:
        ValueError: naming the problem and how many values have it.
    """
    outcomes = np.asarray(y, dtype=float).ravel()
    scores = np.asarray(p, dtype=float).ravel()
    if outcomes.size != scores.size:
        raise ValueError(f"metrics: y has {outcomes.size} values but p has {scores.size}")
    if outcomes.size == 0:
        raise ValueError("metrics: y and p are empty")
    bad_labels = int(np.sum((outcomes != 0) & (outcomes != 1)))
    if bad_labels:
        raise ValueError(f"metrics: {bad_labels} values of y are not 0/1 (or are NaN)")
    bad_scores = int(np.sum(~((scores >= 0) & (scores <= 1))))
    if bad_scores:
        raise ValueError(f"metrics: {bad_scores} values of p are outside [0, 1] (or are NaN)")
    return outcomes, scores


def _require_both_classes(outcomes: np.ndarray, metric: str) -> None:
    positives = int(outcomes.sum())
    if positives == 0 or positives == outcomes.size:
        only = 1 if positives else 0
        raise ValueError(
            f"metrics: {metric} needs both classes, but all {outcomes.size} values of y are {only}"
        )


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores``, tied values sharing the mean of their ranks."""
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    group_mean_rank = first + (counts + 1) / 2.0
    ranks = np.empty(scores.size, dtype=float)
    ranks[order] = np.repeat(group_mean_rank, counts)
    return ranks


def _roc_auc(outcomes: np.ndarray, scores: np.ndarray) -> float:
    _require_both_classes(outcomes, "roc_auc")
    positives = outcomes.sum()
    negatives = outcomes.size - positives
    rank_sum = _average_ranks(scores)[outcomes == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _precision_recall_steps(
    outcomes: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each distinct threshold ``p >= t``, from the highest ``t`` down."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    true_positives = np.cumsum(outcomes[order])
    # The last row of each tied group is where the threshold at that score is evaluated.
    group_ends = np.flatnonzero(np.diff(sorted_scores) != 0)
    group_ends = np.append(group_ends, sorted_scores.size - 1)
    flagged = group_ends + 1.0
    precision = true_positives[group_ends] / flagged
    recall = true_positives[group_ends] / outcomes.sum()
    return precision, recall


def _pr_auc(outcomes: np.ndarray, scores: np.ndarray) -> float:
    _require_both_classes(outcomes, "pr_auc")
    precision, recall = _precision_recall_steps(outcomes, scores)
    recall_gain = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(recall_gain * precision))


def recall_at_precision(y: ArrayLike, p: ArrayLike, precision_target: float) -> float:
    """The largest recall over thresholds whose precision is at least ``precision_target``.

    Returns:
        The recall, or 0.0 when no threshold reaches the target precision.
    """
    outcomes, scores = _as_outcomes_and_scores(y, p)
    _require_both_classes(outcomes, "recall_at_precision")
    precision, recall = _precision_recall_steps(outcomes, scores)
    reaching = precision >= precision_target
    return float(recall[reaching].max()) if reaching.any() else 0.0


def lift_top_decile(y: ArrayLike, p: ArrayLike) -> float:
    """Churn rate among the top ``ceil(n / 10)`` scores over the overall churn rate.

    A tied group straddling the cut contributes its churn rate times the places it takes, so the
    result does not depend on the order of the rows.
    """
    outcomes, scores = _as_outcomes_and_scores(y, p)
    _require_both_classes(outcomes, "lift_top_decile")
    top_count = math.ceil(outcomes.size / 10)
    cut_score = np.sort(scores)[::-1][top_count - 1]
    above = scores > cut_score
    tied = scores == cut_score
    places_left = top_count - int(above.sum())
    churners_in_top = outcomes[above].sum() + places_left * outcomes[tied].mean()
    return float((churners_in_top / top_count) / outcomes.mean())


def expected_calibration_error(y: ArrayLike, p: ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins on [0, 1].

    ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``; bin ``b`` holds
    ``b/bins <= p < (b+1)/bins`` and the last bin also holds ``p == 1``.

    Raises:
        ValueError: on invalid inputs or ``bins < 1``.
    """
    if bins < 1:
        raise ValueError(f"expected_calibration_error: bins must be >= 1, got {bins}")
    outcomes, scores = _as_outcomes_and_scores(y, p)
    bin_index = np.minimum((scores * bins).astype(int), bins - 1)
    outcome_sums = np.bincount(bin_index, weights=outcomes, minlength=bins)
    score_sums = np.bincount(bin_index, weights=scores, minlength=bins)
    gaps = np.abs(outcome_sums - score_sums)  # = n_b * |mean(y) - mean(p)| in each bin
    return float(gaps.sum() / outcomes.size)


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared difference between probabilities and outcomes."""
    outcomes, scores = _as_outcomes_and_scores(y, p)
    return float(np.mean((scores - outcomes) ** 2))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood, probabilities clipped to ``[1e-15, 1 - 1e-15]``."""
    outcomes, scores = _as_outcomes_and_scores(y, p)
    clipped = np.clip(scores, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    likelihood = np.where(outcomes == 1, clipped, 1 - clipped)
    return float(-np.mean(np.log(likelihood)))


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half)."""
    return _roc_auc(*_as_outcomes_and_scores(y, p))


def pr_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Average precision (step-wise area under the precision-recall curve)."""
    return _pr_auc(*_as_outcomes_and_scores(y, p))


def classification_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """All the metrics of the comparison table for one set of scores.

    Returns:
        ``roc_auc``, ``pr_auc``, ``lift_top_decile``, ``recall_at_precision_85``, ``brier``, ``ece``
        (15 equal-width bins) and ``log_loss``, as plain floats.

    Raises:
        ValueError: on invalid inputs or when ``y`` holds a single class.
    """
    outcomes, scores = _as_outcomes_and_scores(y, p)
    return {
        "roc_auc": _roc_auc(outcomes, scores),
        "pr_auc": _pr_auc(outcomes, scores),
        "lift_top_decile": lift_top_decile(outcomes, scores),
        "recall_at_precision_85": recall_at_precision(outcomes, scores, RECALL_PRECISION_TARGET),
        "brier": brier_score(outcomes, scores),
        "ece": expected_calibration_error(outcomes, scores),
        "log_loss": log_loss(outcomes, scores),
    }


__all__ = [
    "ECE_BINS",
    "brier_score",
    "classification_metrics",
    "expected_calibration_error",
    "lift_top_decile",
    "log_loss",
    "pr_auc",
    "recall_at_precision",
    "roc_auc",
]
