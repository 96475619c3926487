"""The dashboard's learner page: why this score, tag history, campaigns received, overrides.

``GET /dashboard/learner/{id}`` (and a file per listed learner of ``lstep dashboard --out``):

- **why this score**: the latest batch day's reason codes and a SHAP waterfall
  (``serving.app.dashboard_why``: the batch's snapshot row explained as ``/explain`` explains);
- **tag history**: a step line and the moves with each rule and the facts it fired on;
- **campaigns received**: the learner's outbox messages (``campaign_rows``), control ones marked;
- **overrides**: the table, and a form that posts to the service's own ``POST /override`` with
  the bearer token the user types (never kept: not in the page, not in a cookie). The form is
  absent from static files, which have no service to post to.

Every store read is keyed by the learner (the status, history, latest score, overrides and outbox
rows are indexed by ``customer_id``). The reasons' feature row is a binary search in the service's
day answers, else a read of the snapshot's row group (which grows with the day's learners);
``benchmarks/dashboard_learner.py`` times the page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from rules.campaigns import Catalogue
from serving.app.dashboard_why import ReasonSource, Why, waterfall_chart
from serving.app.report import render_html
from serving.app.status import learner_status
from serving.core.calllist import value_texts
from serving.core.messages import CANCELLED, DEAD, FAILED, PENDING, SENT, SUPPRESSED
from serving.core.tags import STATUS_TAGS
from serving.infra.store import StateStore

if TYPE_CHECKING:
    from serving.app.dashboard_pages import Links

OUTBOX_COLUMNS = (
    "message_id", "campaign_id", "channel", "step", "planned_on", "due_on", "state", "variant",
    "control", "sent_at",
)  # fmt: skip
"""The outbox columns the campaigns table reads."""
STATE_WORDS = {
    PENDING: "planned",
    FAILED: "planned (retrying after a failed try)",
    SENT: "sent",
    CANCELLED: "cancelled",
    SUPPRESSED: "control: recorded, never sent",
    DEAD: "failed (gave up)",
}
"""How the page names each outbox state."""
NO_MODEL = Why(note="no reasons: no champion to explain with")


def campaign_rows(outbox: pd.DataFrame, catalogue: Catalogue) -> pd.DataFrame:
    """The learner's campaign messages as the page lists them, latest planned first.

    Args:
        outbox: their outbox rows (``OUTBOX_COLUMNS``).
        catalogue: the campaign catalogue, for the campaigns' names (an id it does not know,
            from a catalogue since edited, shows as its id).

    Returns:
        campaign_id, campaign (name), channel, step (1 = the first), planned, due, state (in
        words), variant ("—" without A/B variants), control ("yes"/"no"), sent (day or "—").
    """
    names = {campaign.id: campaign.name for campaign in catalogue.campaigns}
    order = ["planned_on", "step", "message_id"]
    ordered = outbox.sort_values(order, ascending=[False, True, True])
    sent = pd.to_datetime(ordered["sent_at"], utc=True)
    return pd.DataFrame(
        {
            "campaign_id": ordered["campaign_id"].astype(str),
            "campaign": ordered["campaign_id"].map(names).fillna(ordered["campaign_id"]),
            "channel": ordered["channel"].astype(str),
            "step": ordered["step"].astype(int) + 1,
            "planned": pd.to_datetime(ordered["planned_on"]).dt.strftime("%Y-%m-%d"),
            "due": pd.to_datetime(ordered["due_on"]).dt.strftime("%Y-%m-%d"),
            "state": ordered["state"].map(STATE_WORDS).fillna(ordered["state"]),
            "variant": ordered["variant"].replace("", "—").fillna("—"),
            "control": ordered["control"].astype(bool).map({True: "yes", False: "no"}),
            "sent": sent.dt.strftime("%Y-%m-%d").fillna("—"),
        }
    ).reset_index(drop=True)


def learner_page(
    store: StateStore,
    customer_id: str,
    links: Links,
    *,
    catalogue: Catalogue | None = None,
    reasons: ReasonSource | None = None,
    override_url: str | None = None,
) -> str:
    """One learner's page.

    Args:
        store: the state store.
        customer_id: the learner.
        links: how pages link (the service's routes, or static files).
        catalogue: the campaign catalogue, for campaign names (ids only without it).
        reasons: where reason codes come from (None: the section says there is none).
        override_url: where the override form posts (the service's ``/override``); None: no
            form (static files).

    Raises:
        NotFound: the store has no status for the learner.
    """
    status = learner_status(store, customer_id)
    history = status.history.assign(
        by=status.history["rule_id"]
        .astype(object)
        .where(status.history["rule_id"].notna(), status.history["actor"])
    )
    why = NO_MODEL if reasons is None else reasons.why(customer_id, status.score)
    charts = [{"id": "history-chart", **history_chart(history)}]
    if why.note is None:
        charts.insert(0, {"id": "waterfall-chart", **waterfall_chart(why)})
    outbox = store.outbox_frame(customer_ids=[customer_id], columns=OUTBOX_COLUMNS)
    overrides = store.overrides_frame(customer_id)
    context = {
        "page": "learner", "links": links, "status": status, "moves": _moves(history),
        "score": None if status.score is None else _score_view(status.score),
        "why": _why_view(why), "override_url": override_url, "tags": STATUS_TAGS,
        "campaigns": campaign_rows(outbox, catalogue or Catalogue()).to_dict("records"),
        "overrides": override_rows(overrides).to_dict("records"),
        "charts": charts, "charts_json": charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_learner.html.j2")


def override_rows(overrides: pd.DataFrame) -> pd.DataFrame:
    """The overrides table: data days as days, "—" where a field is empty (``OVERRIDES_SCHEMA``
    in, tag, kind, actor, reason, from, expires, cleared out)."""

    def day(column: str) -> pd.Series:
        return pd.to_datetime(overrides[column]).dt.strftime("%Y-%m-%d").fillna("—")

    cleared = pd.to_datetime(overrides["cleared_as_of"]).dt.strftime("%Y-%m-%d")
    by = overrides["cleared_by"].astype(object).fillna("")
    return pd.DataFrame(
        {
            "tag": overrides["tag"], "kind": overrides["kind"], "actor": overrides["actor"],
            "reason": overrides["reason"], "from": day("effective_as_of"),
            "expires": day("expires"), "cleared": (cleared + " " + by).str.strip().fillna("—"),
        }
    )  # fmt: skip


def history_chart(history: pd.DataFrame) -> dict[str, Any]:
    """The learner's tag over time as a step line (one point per transition).

    A single move gets a week around it: plotly would otherwise zoom a lone day to milliseconds.
    """
    tags = list(STATUS_TAGS)
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "line": {"shape": "hv"},
            "name": "tag",
            "x": [pd.Timestamp(day).date().isoformat() for day in history["as_of"]],
            "y": [tags.index(tag) for tag in history["to_tag"]],
            "text": history["to_tag"].astype(str).tolist(),
        }
    ]
    axis = {"tickvals": list(range(len(tags))), "ticktext": tags, "range": [-0.5, len(tags) - 0.5]}
    days = pd.to_datetime(history["as_of"])
    xaxis: dict[str, Any] = {"type": "date"}
    if len(days) and days.min() == days.max():
        week = [days.min() - pd.Timedelta(days=3), days.min() + pd.Timedelta(days=3)]
        xaxis["range"] = [day.date().isoformat() for day in week]
    layout = {"title": {"text": "tag history"}, "yaxis": axis, "xaxis": xaxis, "height": 300}
    return {"data": data, "layout": layout}


def charts_json(charts: list[dict[str, Any]]) -> str:
    """The page's chart specs as JSON for a ``<script type="application/json">`` element."""
    import json

    # "</" cannot close the script element the JSON sits in.
    return json.dumps(charts, separators=(",", ":")).replace("</", "<\\/")


def _moves(history: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "as_of": pd.Timestamp(row["as_of"]).date().isoformat(),
            "from_tag": row["from_tag"] if pd.notna(row["from_tag"]) else "new",
            "to_tag": row["to_tag"],
            "by": row["by"],
            "reason": row["reason"],
            "why": None if pd.isna(row["why"]) else row["why"],
        }
        for row in history.to_dict("records")
    ]


def _why_view(why: Why) -> dict[str, Any]:
    """The reasons as the page prints them (points with the sign, probabilities in %)."""
    from models.explain import format_points

    def percent(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    return {
        "note": why.note, "as_of": None if why.as_of is None else why.as_of.isoformat(),
        "version": why.version, "p_base": percent(why.p_base), "p_raw": percent(why.p_raw),
        "p_churn": percent(why.p_churn), "indicators": list(why.indicators),
        "reasons": [{"text": r.text, "points": format_points(r.points)} for r in why.reasons],
        "rest": f"{why.rest_count} other features: {format_points(why.rest_points)}"
        if why.rest_count else None,
    }  # fmt: skip


def _score_view(score: dict[str, Any]) -> dict[str, Any]:
    p_churn = score.get("p_churn")
    confidence = score.get("confidence")
    return {
        "as_of": pd.Timestamp(score["as_of"]).date().isoformat(),
        "p_churn": "—" if p_churn is None or pd.isna(p_churn) else f"{p_churn:.1%}",
        "confidence": "—" if confidence is None or pd.isna(confidence) else f"{confidence:.2f}",
        "priority": score.get("priority"),
        "action": score.get("action"),
        "control": bool(score.get("control")),
        **value_texts(score),
    }


__all__ = [
    "OUTBOX_COLUMNS",
    "STATE_WORDS",
    "campaign_rows",
    "charts_json",
    "history_chart",
    "learner_page",
    "override_rows",
]
