"""Evaluation plots as PNG: ROC, precision-recall, calibration, lift, SHAP summary, importance.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot): no
global figure state, no display needed, and nothing happens at import time.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

LABEL = "churned"
CALIBRATION_BINS = 15
TOP_FEATURES = 15
SHAP_SAMPLE_ROWS = 2000


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _usable(scores: pd.DataFrame, scorer: str) -> tuple[np.ndarray, np.ndarray]:
    rows = scores[scores[scorer].notna()]
    return rows[LABEL].to_numpy(dtype=int), rows[scorer].to_numpy(dtype=float)


def roc_figure(scores: pd.DataFrame, scorers: list[str]) -> Figure:
    """ROC curves of every scorer on the test slice."""
    figure = _figure()
    axes = figure.subplots()
    for scorer in scorers:
        false_pos, true_pos, _ = roc_curve(*_usable(scores, scorer))
        axes.plot(false_pos, true_pos, label=scorer)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test slice)")
    axes.legend(loc="lower right")
    return figure


def pr_figure(scores: pd.DataFrame, scorers: list[str]) -> Figure:
    """Precision-recall curves of every scorer, with the churn rate as the chance line."""
    figure = _figure()
    axes = figure.subplots()
    for scorer in scorers:
        precision, recall, _ = precision_recall_curve(*_usable(scores, scorer))
        axes.step(recall, precision, where="post", label=scorer)
    axes.axhline(scores[LABEL].mean(), linestyle=":", color="grey", label="churn rate")
    axes.axhline(0.85, linestyle="--", color="lightgrey", label="precision 0.85")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall (test slice)")
    axes.legend(loc="upper right")
    return figure


def calibration_figure(scores: pd.DataFrame, scorers: list[str]) -> Figure:
    """Reliability diagram: mean outcome vs mean probability in 15 equal-width bins."""
    figure = _figure()
    axes = figure.subplots()
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    for scorer in scorers:
        outcomes, probabilities = _usable(scores, scorer)
        bins = np.clip(np.digitize(probabilities, edges) - 1, 0, CALIBRATION_BINS - 1)
        table = pd.DataFrame({"bin": bins, "y": outcomes, "p": probabilities}).groupby("bin")
        means = table.mean()
        axes.plot(means["p"], means["y"], marker="o", label=scorer)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    axes.set(xlabel="predicted churn probability", ylabel="observed churn rate")
    axes.set_title("Calibration (test slice, 15 bins)")
    axes.legend(loc="upper left")
    return figure


def lift_figure(scores: pd.DataFrame, scorers: list[str]) -> Figure:
    """Cumulative lift by decile of score: churn rate in the top k deciles over the overall rate."""
    figure = _figure()
    axes = figure.subplots()
    deciles = np.arange(1, 11)
    for scorer in scorers:
        outcomes, probabilities = _usable(scores, scorer)
        ordered = outcomes[np.argsort(-probabilities, kind="mergesort")]
        cut = np.ceil(deciles / 10 * len(ordered)).astype(int)
        cumulative = np.cumsum(ordered)[cut - 1] / cut
        axes.plot(deciles * 10, cumulative / outcomes.mean(), marker="o", label=scorer)
    axes.axhline(1.0, linestyle=":", color="grey")
    axes.set(xlabel="top % of learners by score", ylabel="cumulative lift", title="Lift chart")
    axes.legend(loc="upper right")
    return figure


def shap_summary_figure(contributions: pd.DataFrame, features: pd.DataFrame) -> Figure:
    """A SHAP beeswarm: per top feature, each learner's contribution coloured by the feature value.

    Args:
        contributions: TreeSHAP log-odds contributions (one column per feature, plus ``bias``).
        features: the model matrix of the same rows (product_tag as a categorical).
    """
    values = contributions.drop(columns="bias", errors="ignore")
    ranked = values.abs().mean().sort_values(ascending=False).index[:TOP_FEATURES][::-1]
    figure = _figure(7.5, 0.35 * len(ranked) + 1.5)
    axes = figure.subplots()
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(values))
    for position, name in enumerate(ranked):
        raw = features[name]
        numeric = raw.cat.codes.astype(float) if hasattr(raw, "cat") else raw.astype(float)
        colour = numeric.rank(pct=True).to_numpy()
        axes.scatter(
            values[name], position + jitter, c=colour, cmap="coolwarm", s=4, vmin=0, vmax=1
        )
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(ranked)), list(ranked))
    axes.set(xlabel="contribution to churn log-odds (TreeSHAP)", title="SHAP summary (test sample)")
    axes.text(
        1.0,
        -0.08,
        "colour: feature value, low (blue) to high (red)",
        ha="right",
        va="top",
        transform=axes.transAxes,
        fontsize=8,
    )
    return figure


def importance_figure(booster: lgb.Booster) -> Figure:
    """LightGBM gain importance of the top features."""
    gains = pd.Series(
        booster.feature_importance(importance_type="gain"), index=booster.feature_name()
    ).sort_values(ascending=False)[:TOP_FEATURES][::-1]
    figure = _figure(7.0, 0.35 * len(gains) + 1.5)
    axes = figure.subplots()
    axes.barh(gains.index, gains.to_numpy())
    axes.set(xlabel="total gain", title="Feature importance (LightGBM gain)")
    return figure


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as PNG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def write_plots(
    scores: pd.DataFrame,
    scorers: list[str],
    *,
    booster: lgb.Booster,
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    out_dir: Path,
) -> list[Path]:
    """Write every evaluation plot into ``out_dir``; returns the files written."""
    figures = {
        "roc.png": roc_figure(scores, scorers),
        "precision_recall.png": pr_figure(scores, scorers),
        "calibration.png": calibration_figure(scores, scorers),
        "lift.png": lift_figure(scores, scorers),
        "shap_summary.png": shap_summary_figure(contributions, features),
        "feature_importance.png": importance_figure(booster),
    }
    return [save(figure, out_dir / name) for name, figure in figures.items()]
