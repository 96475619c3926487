"""The dashboard's model-health page (``/dashboard/model``): the champion's card (the report's
``model_card_section``), its calibration over the recent labelled batch days and the drift of its
features since training (``serving.app.dashboard_model``).

The champion is looked up on every request (a cheap registry read) and loaded again only when
the alias moved; its card and run parameters are read with it. The calibration and the drift are
computed once per stored history and champion version, kept with the dashboard's frames.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd

from features.windows import build_features, eligible_spine, read_features
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_model import (
    CALIBRATION_SAMPLE,
    DRIFT_SAMPLE,
    PSI_BANDS,
    RECENT_LABELLED_DAYS,
    brier_score,
    drift_table,
    labelled_days,
    labelled_scores,
    reliability,
    sample_rows,
    training_window,
)
from serving.app.dashboard_pages import Links, _charts_json
from serving.app.kpi_inputs import StoredEvents
from serving.app.kpis import LABEL_HORIZON_DAYS
from serving.app.model_card import model_card_section
from serving.app.report import render_html
from serving.infra.champion import Champion, champion_version, load_champion
from serving.infra.snapshots import batch_snapshots
from serving.settings import Settings

BAND_COLORS = {"stable": "#27ae60", "moderate": "#f39c12", "major": "#c0392b"}


@dataclass(frozen=True)
class ChampionView:
    """The champion with what its training run logged: the card and the run's parameters."""

    champion: Champion
    card: dict[str, Any]
    params: dict[str, str]

    @property
    def version(self) -> str:
        return self.champion.version

    @property
    def horizon_days(self) -> int:
        """The label window its ``p_churn`` covers (30 for a model that does not record it)."""
        return self.champion.model.horizon_days or LABEL_HORIZON_DAYS


class ChampionSource:
    """The registry's current champion, loaded again only when the alias moves (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._view: ChampionView | None = None
        self._lock = threading.Lock()

    def current(self) -> ChampionView | None:
        """The champion holding the alias now, or None when there is none."""
        version = champion_version(self.settings.tracking_uri, self.settings.model_name)
        if version is None:
            return None
        with self._lock:
            if self._view is None or self._view.version != version:
                self._view = self._load()
            return self._view

    def _load(self) -> ChampionView | None:
        import mlflow

        champion = load_champion(self.settings.tracking_uri, self.settings.model_name)
        if champion is None:
            return None
        card = model_card_section(self.settings, champion)
        client = mlflow.MlflowClient(tracking_uri=self.settings.tracking_uri)
        params = dict(client.get_run(card["run_id"]).data.params)
        return ChampionView(champion, card, params)


def calibration_section(
    cache: DashboardCache, frames: DashboardFrames, horizon: int
) -> dict[str, Any]:
    """The recent labelled days' reliability bins and Brier score, or a note saying why none."""
    source = cache.source
    if not source.events_path.exists():
        return {"note": f"no event log at {source.events_path}: no labels to compare with"}
    last = StoredEvents(source.events_path, cache.clock()).last_event()
    log_end = min(frames.latest_day, last.date() if last is not None else date.min)
    log_end += timedelta(days=1)
    days = labelled_days(frames.days, log_end, horizon)
    if not days:
        return {"note": f"no labelled day yet: a batch day's {horizon}-day label window must "
                f"close before {log_end} (the log's end)"}  # fmt: skip
    columns = ["as_of", "customer_id", "p_churn"]
    scores = pd.concat([source.store.scores_frame(day, columns=columns) for day in days])
    scored = scores.loc[scores["p_churn"].notna()]
    labelled = labelled_scores(
        sample_rows(scored, CALIBRATION_SAMPLE), source.events_path, horizon, log_end
    )
    if labelled.empty:
        return {"note": f"no model score on the labelled days {days[0]}..{days[-1]}"}
    return {
        "note": None, "days": days, "rows": len(labelled), "scored": len(scored),
        "sampled": len(scored) > CALIBRATION_SAMPLE, "brier": brier_score(labelled),
        "churn_rate": float(labelled["churned"].mean()), "bins": reliability(labelled),
    }  # fmt: skip


def drift_section(cache: DashboardCache, frames: DashboardFrames, view: ChampionView) -> dict:
    """PSI of the champion's features, training window against the latest day's snapshot."""
    source = cache.source
    window = training_window(view.params)
    snapshots = batch_snapshots(source.data_dir, frames.latest_day)
    if window is None:
        return {"note": f"the champion v{view.version}'s run records no training window"}
    if not snapshots or not source.events_path.exists():
        return {"note": "no batch-day feature snapshot or event log to compare with"}
    latest_day, latest_path = snapshots[-1]
    inputs = (source.events_path, source.customers_path)
    spine = sample_rows(eligible_spine(*inputs, [window.last_as_of]))
    reference = build_features(*inputs, spine=spine)
    current = sample_rows(read_features(latest_path))
    drift = drift_table(reference, current, view.champion.model.feature_names)
    return {
        "note": None, "window": window, "reference_rows": len(reference), "latest": latest_day,
        "current_rows": len(current), "sample": DRIFT_SAMPLE,
        "bands": PSI_BANDS, "rows": drift.to_dict("records"),
    }  # fmt: skip


def reliability_chart(bins: pd.DataFrame) -> dict[str, Any]:
    """Observed churn rate against the mean predicted p_churn per bin, counts as bars."""
    filled = bins[bins["learners"] > 0]
    middle = ((filled["low"] + filled["high"]) / 2).round(3).tolist()
    data = [
        {"type": "bar", "name": "learner-days", "x": middle,
         "y": filled["learners"].tolist(), "yaxis": "y2", "opacity": 0.3, "width": 0.08},
        {"type": "scatter", "mode": "lines", "name": "perfect calibration", "x": [0, 1],
         "y": [0, 1], "line": {"dash": "dash", "color": "#7f8c8d"}},
        {"type": "scatter", "mode": "lines+markers", "name": "observed churn rate",
         "x": filled["mean_p"].round(4).tolist(), "y": filled["observed"].round(4).tolist(),
         "text": [f"{n} learner-days" for n in filled["learners"]]},
    ]  # fmt: skip
    layout = {
        "title": {"text": "reliability: predicted p_churn against observed churn"},
        "xaxis": {"title": "predicted p_churn", "range": [0, 1]},
        "yaxis": {"title": "observed churn rate", "range": [0, 1]},
        "yaxis2": {"title": "learner-days", "overlaying": "y", "side": "right"},
        "legend": {"orientation": "h", "y": -0.2}, "height": 420,
    }  # fmt: skip
    return {"data": data, "layout": layout}


def drift_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """PSI per feature, largest first, coloured by band, with the 0.1 and 0.25 lines."""
    labels = [row["feature"] for row in rows]
    data = [
        {"type": "bar", "orientation": "h", "name": "PSI", "y": labels,
         "x": [round(row["psi"], 4) for row in rows],
         "marker": {"color": [BAND_COLORS[row["band"]] for row in rows]}},
    ]  # fmt: skip
    lines = [
        {"type": "line", "x0": band, "x1": band, "yref": "paper", "y0": 0, "y1": 1,
         "line": {"dash": "dot", "color": color}}
        for band, color in zip(PSI_BANDS, ("#f39c12", "#c0392b"), strict=True)
    ]  # fmt: skip
    layout = {
        "title": {"text": "feature drift since training (PSI)"}, "shapes": lines,
        "yaxis": {"autorange": "reversed", "automargin": True}, "xaxis": {"title": "PSI"},
        "height": max(320, 22 * len(rows) + 120),
    }  # fmt: skip
    return {"data": data, "layout": layout}


def model_page(cache: DashboardCache, champions: ChampionSource, links: Links) -> str:
    """The champion's card, recent calibration and drift; says so when there is no champion."""
    frames = cache.frames()
    view = champions.current()
    context: dict[str, Any] = {
        "page": "model", "links": links, "latest_day": frames.latest_day, "view": view,
        "refreshing": cache.refreshing,
        "recent": RECENT_LABELLED_DAYS, "charts": [], "charts_json": "[]",
    }  # fmt: skip
    if view is None:
        return render_html(context, "dashboard_model.html.j2")
    calibration, drift = model_parts(cache, frames, view)
    charts = []
    if calibration["note"] is None:
        charts.append({"id": "calibration-chart", **reliability_chart(calibration["bins"])})
    if drift["note"] is None and drift["rows"]:
        charts.append({"id": "drift-chart", **drift_chart(drift["rows"])})
    context |= {"card": view.card, "calibration": calibration, "drift": drift}
    context |= {"charts": charts, "charts_json": _charts_json(charts)}
    return render_html(context, "dashboard_model.html.j2")


def model_parts(
    cache: DashboardCache, frames: DashboardFrames, view: ChampionView
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The calibration and drift sections of ``view``'s champion on ``frames``, kept per
    version (``warm_pages`` computes them before a refreshed history is served)."""
    return frames.remembered(
        ("model-health", view.version),
        lambda: (
            calibration_section(cache, frames, view.horizon_days),
            drift_section(cache, frames, view),
        ),
    )


__all__ = [
    "ChampionSource",
    "ChampionView",
    "calibration_section",
    "drift_chart",
    "drift_section",
    "model_page",
    "model_parts",
    "reliability_chart",
]
