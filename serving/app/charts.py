"""The report's images: matplotlib figures as PNG data URIs (nothing loaded from a network)."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.explain import Explanation, waterfall_plot
from serving.core.tags import STATUS_TAGS

WATERFALL_REASONS = 8
TAG_COLORS = ("#2e86c1", "#28b463", "#7d3c98", "#e67e22", "#f1c40f", "#7f8c8d")
"""One colour per status tag (ST_001..ST_006), the report's and the dashboard's."""


def tag_area_figure(history: pd.DataFrame) -> Any:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.6))
    days = history["day"].to_numpy()
    counts = [history[tag].to_numpy() for tag in STATUS_TAGS]
    labels = [f"{tag} {name}" for tag, name in STATUS_TAGS.items()]
    if len(history) == 1:  # one day has no area: widen it to a visible band
        days = np.array([days[0] - np.timedelta64(12, "h"), days[0] + np.timedelta64(12, "h")])
        counts = [np.repeat(column, 2) for column in counts]
    axes.stackplot(days, *counts, labels=labels, colors=TAG_COLORS, alpha=0.9)
    axes.set_ylabel("learners")
    axes.set_title("learners per status tag at the end of each batch day")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def rules_bar_figure(counts: pd.Series) -> Any:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(counts) + 1.4))
    axes.barh(list(counts.index), counts.to_numpy(), color="#2e86c1")
    axes.invert_yaxis()
    axes.set_xlabel("transitions in the audit log")
    axes.set_title("transitions by rule")
    figure.tight_layout()
    return figure


def waterfall_uri(explanation: Explanation) -> str:
    """The learner's waterfall (``models.explain.waterfall_plot``) as a PNG data URI."""
    with tempfile.TemporaryDirectory(prefix="lstep-report-") as scratch:
        path = waterfall_plot(
            explanation.top(WATERFALL_REASONS),
            Path(scratch) / "waterfall.png",
            p_base=explanation.p_base,
            title=f"{explanation.customer_id}: base rate {explanation.p_base:.1%} to "
            f"{explanation.p_raw:.1%} (raw model probability)",
        )
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: figures only become PNG bytes
    import matplotlib.pyplot as plt

    return plt


def png_data_uri(figure: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = [
    "TAG_COLORS",
    "png_data_uri",
    "pyplot",
    "rules_bar_figure",
    "tag_area_figure",
    "waterfall_uri",
]
