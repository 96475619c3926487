"""The dashboard's value page (``/dashboard/value``): value at risk by tier and tag, and each
campaign's intervention ROI (``serving.app.dashboard_value``) with the cost per channel used.

The campaign inputs (the outbox, the feedback, the re-engagement events of the outbox's learners
and the trigger days' value at risk) are read once per stored history and kept with the
dashboard's frames; a filter then narrows them to its learners (treated and control alike: a
tier's two arms are still two random halves of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from serving.app.campaign_effect import FEEDBACK_COLUMNS
from serving.app.campaign_inputs import reengagement_events
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_data import DashboardFilters, days_in_range
from serving.app.dashboard_pages import (
    Links,
    _charts_json,
    _learners,
    filter_options,
    value_chart,
    values_of,
)
from serving.app.dashboard_value import (
    ROI_INPUTS,
    learner_roi,
    roi_of_learners,
    spend_by_channel,
)
from serving.app.report import render_html
from serving.core.frames import is_in
from serving.infra.store_reads import day_learners


@dataclass(frozen=True)
class CampaignInputs:
    """What the ROI reads, for every day up to the history's latest.

    Attributes:
        outbox: outbox rows (``OUTBOX_COLUMNS``; ``context`` left empty: the ROI never reads
            the templates' fields, and they are the outbox's bulk).
        feedback: feedback rows (``FEEDBACK_COLUMNS``).
        events: the outbox learners' re-engagement events and the ``LOG_END`` row; None when the
            workspace has no event log (nothing can be measured).
        scores: ``as_of``, ``customer_id``, ``value_at_risk`` of the learners messaged, on
            the days their messages were planned (a run's trigger day is one of them).
    """

    outbox: pd.DataFrame
    feedback: pd.DataFrame
    events: pd.DataFrame | None
    scores: pd.DataFrame


def read_campaign_inputs(cache: DashboardCache, frames: DashboardFrames) -> CampaignInputs:
    """The ROI's inputs of the frames' history (see ``CampaignInputs``)."""
    store = cache.source.store
    outbox = store.measured_outbox(until=frames.latest_day)
    feedback = store.feedback_frame()[list(FEEDBACK_COLUMNS)]
    learners = sorted(outbox["customer_id"].astype(str).unique())
    events = reengagement_events(cache.source.events_path, learners)
    # Only the trigger days' scores of the learners messaged (``learner_roi`` joins them on a
    # run's planned day): every learner's every day grew the service's memory by a day a day.
    scores = store.scores_frame(
        columns=["as_of", "customer_id", "value_at_risk"],
        learners=day_learners(outbox, "planned_on"),
    )
    return CampaignInputs(outbox, feedback, events, scores)


def roi_chart(roi: pd.DataFrame) -> dict[str, Any] | None:
    """The measured campaigns' ROI with the uplift's interval as error bars; None if none is."""
    measured = roi[roi["measured"] & roi["roi"].notna()].sort_values("roi", ascending=False)
    if measured.empty:
        return None
    error = {
        "type": "data", "symmetric": False,
        "array": (measured["roi_high"] - measured["roi"]).round(3).tolist(),
        "arrayminus": (measured["roi"] - measured["roi_low"]).round(3).tolist(),
    }  # fmt: skip
    data = [
        {"type": "bar", "name": "ROI", "x": measured["campaign_id"].tolist(),
         "y": measured["roi"].round(3).tolist(), "error_y": error},
    ]  # fmt: skip
    layout = {
        "title": {"text": "value saved per unit spent, 95% interval of the uplift"},
        "yaxis": {"title": "ROI (value saved / cost)"}, "height": 360,
    }  # fmt: skip
    return {"data": data, "layout": layout}


def spend_chart(spend: pd.DataFrame) -> dict[str, Any]:
    """Messages sent and what they cost, per channel."""
    labels = [f"{row.channel} ({row.cost_per_contact:g}/contact)" for row in spend.itertuples()]
    data = [
        {"type": "bar", "name": "cost", "x": labels, "y": spend["cost"].round(2).tolist(),
         "text": [f"{sent} sent" for sent in spend["sent"]], "textposition": "auto"},
    ]  # fmt: skip
    layout = {"title": {"text": "what the campaigns' messages cost, by channel"}, "height": 320}
    return {"data": data, "layout": layout}


def roi_rows(roi: pd.DataFrame) -> list[dict[str, Any]]:
    """The ROI table's rows as printed: "not measured yet" where the sample cannot tell."""

    def money(value: float) -> str:
        return "—" if pd.isna(value) else f"{value:,.2f}"

    rows = []
    for row in roi.to_dict("records"):
        measured = bool(row["measured"])
        interval = f"[{row['ci_low'] * 100:+.1f}, {row['ci_high'] * 100:+.1f}]"
        if not measured:
            roi_text = "not measured yet"
        elif pd.isna(row["roi"]):
            roi_text = "nothing spent"
        else:
            roi_text = f"{row['roi']:.2f} [{row['roi_low']:.2f}, {row['roi_high']:.2f}]"
        rows.append(
            {
                "campaign_id": row["campaign_id"], "treated": row["treated"],
                "control": row["control"], "pending": row["pending"], "contacts": row["contacts"],
                "cost": money(row["cost"]),
                "value_at_risk": money(row["value_at_risk"]),
                "uplift": "—" if pd.isna(row["uplift"]) else f"{row['uplift'] * 100:+.1f} pts",
                "interval": "—" if pd.isna(row["ci_low"]) else interval,
                "value_saved": money(row["value_saved"]) if measured else "not measured yet",
                "roi": roi_text, "measured": measured,
            }
        )  # fmt: skip
    return rows


def _campaign_section(
    cache: DashboardCache, frames: DashboardFrames, learners: pd.DataFrame | None, end: date
) -> dict[str, Any]:
    """The ROI and spend of the campaigns planned by ``end`` (their learners' when given).

    The per-learner ROI rows of everyone are found once per ``end`` (``learner_roi``); a
    filter narrows them and the outbox to its learners, then counts (``roi_of_learners``).
    """
    inputs = frames.remembered("campaign-inputs", lambda: read_campaign_inputs(cache, frames))
    costs = cache.source.ruleset.campaigns.costs.by_channel()
    outbox = inputs.outbox
    if learners is not None:
        outbox = outbox[is_in(outbox["customer_id"], learners["customer_id"])]
    outbox = outbox[outbox["planned_on"] <= pd.Timestamp(end)]
    section: dict[str, Any] = {"costs": costs, "roi": None, "spend": None, "note": None}
    if outbox.empty:
        section["note"] = f"no campaign messages planned by {end}: no campaign results yet"
        return section
    section["spend"] = spend_by_channel(outbox, end, costs)
    if inputs.events is None:
        section["note"] = f"no event log at {cache.source.events_path}: uplift is not measured"
        return section
    rows = frames.remembered(
        ("campaign-learners", end),
        lambda: learner_roi(
            inputs.outbox, inputs.feedback, inputs.events, inputs.scores, end, costs
        ),
    )
    if learners is not None:
        rows = rows.loc[is_in(rows["customer_id"], outbox["customer_id"]), list(ROI_INPUTS)]
    section["roi"] = roi_of_learners(rows)
    return section


def value_page(cache: DashboardCache, filters: DashboardFilters, links: Links) -> str:
    """The value page of the filtered learners: value charts, ROI per campaign, costs used."""
    frames = cache.frames()
    days, end, learners, values, campaigns = value_parts(cache, frames, filters)
    charts = [{"id": "value-chart", **value_chart(values)}]
    roi = campaigns["roi"]
    if roi is not None and (drawn := roi_chart(roi)) is not None:
        charts.append({"id": "roi-chart", **drawn})
    spend = campaigns["spend"]
    if spend is not None and spend["sent"].sum() > 0:  # nothing sent yet: nothing to draw
        charts.append({"id": "spend-chart", **spend_chart(spend)})
    context = {
        "page": "value", "links": links, "filters": filters, "options": _options(frames),
        "days": days, "end": end, "latest_day": frames.latest_day, "learners": len(learners),
        "values": values.to_dict("records"), "campaigns": campaigns,
        "roi_rows": [] if roi is None else roi_rows(roi), "chart_ids": [c["id"] for c in charts],
        "refreshing": cache.refreshing,
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_value.html.j2")


def value_parts(
    cache: DashboardCache, frames: DashboardFrames, filters: DashboardFilters
) -> tuple[list[date], date, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The value page's figures on ``frames``, each kept per filter: the days in range, the
    range's end, the learners selected, the value by tier and tag and the campaign section
    (``warm_pages`` computes them for everyone before a refreshed history is served)."""
    days = days_in_range(frames.days, filters)
    end = days[-1] if days else frames.latest_day
    learners = frames.remembered(("learners", filters), lambda: _learners(frames, filters, end))
    chosen = learners if filters.narrows_learners else None
    values = frames.remembered(
        ("values", filters), lambda: values_of(frames, filters, end, learners)
    )
    key = ("campaigns", filters)
    campaigns = frames.remembered(key, lambda: _campaign_section(cache, frames, chosen, end))
    _options(frames)
    return days, end, learners, values, campaigns


def _options(frames: DashboardFrames) -> dict[str, list[str]]:
    return frames.remembered(("options",), lambda: filter_options(frames))


__all__ = [
    "CampaignInputs",
    "read_campaign_inputs",
    "roi_chart",
    "roi_rows",
    "spend_chart",
    "value_page",
    "value_parts",
]
