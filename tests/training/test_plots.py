"""Plots: every evaluation figure is written as a real PNG."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from models.churn import ChurnModel
from tests.training.frames import feature_frame, weekly_dates
from training.plots import write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    dates = weekly_dates(date(2026, 2, 1), 2)
    train, cal, test = (feature_frame(200, dates, seed=s) for s in (1, 2, 3))
    model = ChurnModel.fit(
        train,
        train["churned"],
        cal,
        cal["churned"],
        params={"num_leaves": 7, "num_threads": 1},
        num_boost_round=20,
    )
    return model, test


def test_write_plots_writes_six_pngs(fitted, tmp_path):
    # given test scores of the model and one baseline
    model, test = fitted
    scores = test[["customer_id", "as_of", "churned"]].copy()
    scores["model"] = model.predict(test)["p_churn"].to_numpy()
    scores["recency"] = np.linspace(0, 1, len(test))

    # when every plot is written
    written = write_plots(
        scores,
        ["model", "recency"],
        booster=model.booster,
        contributions=model.contributions(test),
        features=model.model_matrix(test),
        out_dir=tmp_path,
    )

    # then six distinct PNG files exist
    names = sorted(path.name for path in written)
    assert names == sorted(
        [
            "roc.png",
            "precision_recall.png",
            "calibration.png",
            "lift.png",
            "shap_summary.png",
            "feature_importance.png",
        ]
    )
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
