"""Reason codes: TreeSHAP contributions turned into probability points and plain words.

Method
------
LightGBM's TreeSHAP (``ChurnModel.contributions``) splits each learner's raw log-odds into a bias
(the expected log-odds over the training data) plus one contribution ``phi_i`` per feature::

    logit(p_raw) = bias + sum_i phi_i

Log-odds are not what a CS lead reads, so the contributions are turned into **probability
points** (percentage points, 0-100 scale). The base rate is ``p_base = sigmoid(bias)``; the
probability change to explain is ``delta = p_raw - p_base``; it is shared among the features in
proportion to their log-odds contributions::

    points_i = 100 * delta * phi_i / sum_j phi_j

The ratio ``delta / sum_j phi_j`` is the slope of the sigmoid's secant between ``bias`` and
``logit(p_raw)``, which is always positive, so each reason keeps the sign of its contribution, the
points of all features add up to ``100 * (p_raw - p_base)`` exactly, and the relative sizes are the
SHAP ones. When the contributions cancel out (``sum_j phi_j`` ~ 0) the secant becomes the tangent
``p_base * (1 - p_base)``, the limit of the same formula.

The points explain LightGBM's RAW probability, before Venn-Abers calibration: calibration is a
monotone map of that probability and has no per-feature split, so the served ``p_churn`` differs
from ``p_base + sum(points) / 100`` by the calibration step only.

Texts come from the feature catalog (``label`` and ``unit``) and the learner's own values. A
7- or 14-day count or total whose 30-day counterpart is in the frame also shows the learner's rate
over the rest of the window (the 23 or 16 days before, fewer for a learner enrolled less than 30
days ago), scaled to the same length ("sessions in the last 7 days: 1 (was 9 per week before):
+21 pts").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import FeatureSpec, load_catalog
from models.churn import ChurnModel

WINDOW_DAYS = 30
RECENT_PAIRS: dict[str, tuple[str, int]] = {
    "active_days_7d": ("active_days_30d", 7),
    "active_days_14d": ("active_days_30d", 14),
    "events_7d": ("events_30d", 7),
    "sessions_7d": ("sessions_30d", 7),
    "sessions_14d": ("sessions_30d", 14),
    "session_minutes_7d": ("session_minutes_30d", 7),
    "lessons_7d": ("lessons_30d", 7),
}
"""A recent-window feature -> (its 30-day counterpart, the recent window's days)."""
PRODUCT_NAMES: dict[str, str] = {
    "PT_001": "PPAL Pro",
    "PT_002": "PPAL Enterprise",
    "PT_003": "PPAL Freemium",
}
_TANGENT_EPSILON = 1e-12


@dataclass(frozen=True)
class Reason:
    """One feature's share of a learner's churn probability.

    Attributes:
        feature: the catalog feature name.
        value: the learner's value (JSON-ready: float, int, bool, str or None when missing).
        points: percentage points of churn probability this feature adds (negative: removes).
        text: the plain-words reason a CS lead reads.
    """

    feature: str
    value: float | int | bool | str | None
    points: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        """The reason as the JSON object the API returns."""
        return {
            "feature": self.feature,
            "value": self.value,
            "points": self.points,
            "text": self.text,
        }


@dataclass(frozen=True)
class Explanation:
    """A learner's full breakdown: base rate, raw probability and every feature's points.

    Attributes:
        customer_id: the learner (None when the frame has no customer_id column).
        p_base: the model's base rate, ``sigmoid(bias)``.
        p_raw: LightGBM's raw (uncalibrated) churn probability of the learner.
        reasons: one reason per model feature, largest ``|points|`` first; their points add up to
            ``100 * (p_raw - p_base)``.
    """

    customer_id: str | None
    p_base: float
    p_raw: float
    reasons: tuple[Reason, ...]

    def top(self, count: int | None) -> list[Reason]:
        """The ``count`` largest reasons (all of them for None)."""
        return list(self.reasons if count is None else self.reasons[:count])


def probability_points(contributions: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Turn TreeSHAP log-odds contributions into percentage points (see the module doc).

    Args:
        contributions: ``ChurnModel.contributions`` output: one column per feature and ``bias``.

    Returns:
        (points per feature, ``p_base`` per row, ``p_raw`` per row); each row of points sums to
        ``100 * (p_raw - p_base)``.
    """
    if "bias" not in contributions.columns:
        raise ValueError("contributions: missing the 'bias' column of ChurnModel.contributions")
    names = contributions.columns.drop("bias")
    values = contributions[[*names, "bias"]].to_numpy(dtype=np.float64)
    points, p_base, p_raw = points_of(values)
    return pd.DataFrame(points, columns=names, index=contributions.index), p_base, p_raw


def points_of(contributions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``probability_points`` on a plain array whose last column is the bias.

    Args:
        contributions: rows of ``ChurnModel.raw_contributions`` (features, then bias).

    Returns:
        (points, rows x features; ``p_base`` per row; ``p_raw`` per row).
    """
    # One memory layout for every caller: a sum over rows of a column-major array adds in
    # another order, and the points of a learner would differ in the last bits by path.
    contributions = np.ascontiguousarray(contributions, dtype=np.float64)
    phi = contributions[:, :-1]
    bias = contributions[:, -1]
    total = phi.sum(axis=1)
    p_base = _sigmoid(bias)
    p_raw = _sigmoid(bias + total)
    tangent = p_base * (1.0 - p_base)
    cancelled = np.abs(total) < _TANGENT_EPSILON
    slope = np.where(cancelled, tangent, (p_raw - p_base) / np.where(cancelled, 1.0, total))
    return 100.0 * phi * slope[:, None], p_base, p_raw


def ranked_reasons(
    row: Mapping[str, Any], names: Sequence[str], points: Sequence[float], top: int | None
) -> list[Reason]:
    """One learner's reasons, largest ``|points|`` first (ties by feature name), ``top`` of them.

    Only the reasons returned are worded, so the top three of 50 features cost three sentences.

    Args:
        row: the learner's feature values by name (a frame row or a plain mapping); related
            columns (``sessions_30d`` for ``sessions_7d``, ``tenure_days``) enrich the texts.
        names: the model's feature names, in the order of ``points``.
        points: each feature's probability points (``points_of``).
        top: how many reasons (all for None).
    """
    order = sorted(range(len(names)), key=lambda index: (-abs(points[index]), names[index]))
    specs = _catalog_specs()
    return [
        _reason(specs.get(names[index]), names[index], row, float(points[index]))
        for index in order[:top]
    ]


def explain_frame(
    model: ChurnModel, features: pd.DataFrame, *, contributions: pd.DataFrame | None = None
) -> list[Explanation]:
    """Explain every row of a feature frame (one TreeSHAP call for all of them).

    Args:
        model: the fitted churn model.
        features: a feature frame with the model columns (and optionally customer_id); related
            columns (e.g. ``sessions_30d`` for ``sessions_7d``) enrich the texts when present.
        contributions: ``model.contributions(features)`` when the caller already has them
            (``ChurnModel.predict_with_contributions``), so TreeSHAP does not run twice.

    Raises:
        models.matrix.FeatureFrameError: naming every missing or mistyped model column.
        ValueError: when ``contributions`` has not one row per row of ``features``.
    """
    if contributions is None:
        contributions = model.contributions(features)
    elif len(contributions) != len(features):
        raise ValueError(
            f"contributions: {len(contributions)} rows for {len(features)} feature rows"
        )
    points, p_base, p_raw = probability_points(contributions)
    names = list(points.columns)
    point_rows = points.to_numpy()
    explanations = []
    ids = features["customer_id"] if "customer_id" in features.columns else None
    for position, (_, row) in enumerate(features.iterrows()):
        reasons = ranked_reasons(row, names, point_rows[position], None)
        explanations.append(
            Explanation(
                customer_id=None if ids is None else str(ids.iloc[position]),
                p_base=float(p_base[position]),
                p_raw=float(p_raw[position]),
                reasons=tuple(reasons),
            )
        )
    return explanations


def explain(model: ChurnModel, features: pd.DataFrame, *, top: int | None = 3) -> list[Reason]:
    """Reason codes of ONE learner, largest ``|points|`` first.

    Args:
        model: the fitted churn model.
        features: a one-row feature frame.
        top: how many reasons to return (all model features for None).

    Raises:
        ValueError: when the frame does not have exactly one row.
    """
    if len(features) != 1:
        raise ValueError(f"explain: expected a one-row feature frame, got {len(features)} rows")
    return explain_frame(model, features)[0].top(top)


def format_points(points: float) -> str:
    """``+21 pts``; one decimal below one point so that small reasons do not read ``+0 pts``."""
    return f"{points:+.1f} pts" if abs(points) < 1 else f"{points:+.0f} pts"


def format_value(value: Any, unit: str) -> str:
    """A feature value in its catalog unit, for a sentence."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if unit == "flag":
        return "yes" if value else "no"
    if unit == "category":
        return PRODUCT_NAMES.get(str(value), str(value))
    if unit == "share":
        return f"{100 * float(value):.0f}%"
    if unit == "count":
        return _number(value)
    if unit == "ratio":
        return f"{float(value):.2f}"
    return f"{_number(value)} {'min' if unit == 'minutes' else unit}"


def reason_text(spec: FeatureSpec | None, name: str, row: Mapping[str, Any], points: float) -> str:
    """The sentence of one reason: label, the learner's value, context, points."""
    label = spec.label if spec is not None else name
    unit = spec.unit if spec is not None else ""
    value = _plain(row.get(name))
    return (
        f"{label}: {format_value(value, unit)}{_context(name, row, unit)}: {format_points(points)}"
    )


def waterfall_plot(
    reasons: Sequence[Reason],
    path: str | Path,
    *,
    p_base: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw a waterfall of reasons (percentage points) from the base rate, as a PNG.

    Args:
        reasons: the reasons to draw, in order (e.g. ``Explanation.top(10)``).
        path: the image file to write (its directory is created).
        p_base: the base rate the bars start from (0 when None).
        title: the figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: the CLI writes files
    import matplotlib.pyplot as plt

    start = 100.0 * (p_base or 0.0)
    levels = start + np.cumsum([0.0, *(reason.points for reason in reasons)])
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(reasons) + 1.6))
    for index, reason in enumerate(reasons):
        color = "#c0392b" if reason.points > 0 else "#27ae60"
        axes.barh(index, reason.points, left=levels[index], color=color)
        axes.text(levels[index + 1], index, f" {format_points(reason.points)}", va="center")
    axes.set_yticks(range(len(reasons)), [_wrap(reason.text) for reason in reasons], fontsize=8)
    axes.invert_yaxis()
    axes.axvline(start, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("churn probability (%)")
    axes.set_title(title or f"from the base rate {start:.1f}% to {levels[-1]:.1f}%")
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


# --- internals ------------------------------------------------------------------------------------


def _sigmoid(log_odds: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-log_odds))


@cache
def _catalog_specs() -> dict[str, FeatureSpec]:
    return {spec.name: spec for spec in load_catalog().features}


def _reason(spec: FeatureSpec | None, name: str, row: Mapping[str, Any], points: float) -> Reason:
    return Reason(
        feature=name,
        value=_plain(row.get(name)),
        points=points,
        text=reason_text(spec, name, row, points),
    )


def _plain(value: Any) -> float | int | bool | str | None:
    """A JSON-ready python scalar: numpy scalars unwrapped, missing values (NaN, NA) as None."""
    if (
        value is None
        or value is pd.NA
        or (isinstance(value, float | np.floating) and np.isnan(value))
    ):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)


def _number(value: Any) -> str:
    number = float(value)
    return f"{number:.0f}" if number == round(number) else f"{number:.1f}"


def _context(name: str, row: Mapping[str, Any], unit: str) -> str:
    """`` (was 9 per week before)`` for a recent window whose 30-day column is in the row."""
    if name not in RECENT_PAIRS:
        return ""
    total_name, days = RECENT_PAIRS[name]
    recent, total = _plain(row.get(name)), _plain(row.get(total_name))
    if recent is None or total is None or isinstance(recent, str) or isinstance(total, str):
        return ""
    # A learner enrolled less than 30 days ago has a shorter "before" part of the window.
    tenure = _plain(row.get("tenure_days"))
    window = WINDOW_DAYS if not isinstance(tenure, int | float) else min(WINDOW_DAYS, int(tenure))
    before_days = window - days
    if before_days <= 0:
        return ""
    rate = (float(total) - float(recent)) / before_days * days
    shown = format_value(rate, unit) if unit != "count" else f"{rate:.1f}".removesuffix(".0")
    period = "week" if days == 7 else f"{days // 7} weeks"
    return f" (was {shown} per {period} before)"


def _wrap(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


__all__ = [
    "Explanation",
    "Reason",
    "explain",
    "explain_frame",
    "format_points",
    "format_value",
    "points_of",
    "probability_points",
    "ranked_reasons",
    "reason_text",
    "waterfall_plot",
]
