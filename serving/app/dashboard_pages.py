"""The dashboard's pages: Plotly figures (as JSON the bundled plotly.js draws) and HTML.

Three pages, each served live (``/dashboard``, ``/dashboard/calls``,
``/dashboard/learner/{id}``) and written as files by ``lstep dashboard --out DIR``:

- **overview**: status tags over time (stacked area) for the filtered learners, the six KPIs as
  trends over the batch days against their targets, and revenue at risk and projected lifetime
  value by tier and tag;
- **calls**: the latest day's call list, searched by learner id and sorted;
- **learner**: one learner's tag history (each move's rule and the facts it fired on), latest
  score and overrides.

Figures are plain Plotly JSON specs (no Python figure objects: they validate every attribute and
cost more than the page); the browser draws them with ``plotly.min.js``, which ships inside the
``plotly`` wheel and is served by the service itself: nothing comes from a network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pandas as pd

from serving.app.charts import TAG_COLORS
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_data import (
    SORTS,
    DashboardFilters,
    call_rows,
    days_in_range,
    kpi_trend,
    latest_tags,
    learners_of,
    tag_series,
    value_by_tier_tag,
)
from serving.app.kpi_targets import KPI_TARGETS
from serving.app.report import format_kpi_value, learner_anchor, render_html
from serving.app.status import learner_status
from serving.core.calllist import value_texts
from serving.core.tags import STATUS_TAGS
from serving.infra.store import StateStore

CALLS_SHOWN = 100
PLOTLY_JS = "plotly.min.js"


def plotly_js() -> bytes:
    """The plotly.js bundle of the installed ``plotly`` wheel (minified, self-contained)."""
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / PLOTLY_JS).read_bytes()


@dataclass(frozen=True)
class Links:
    """How pages link to each other: the service's routes, or files side by side (static)."""

    root: str | None  # the mount path ("/dashboard"); None for static files

    @property
    def static(self) -> bool:
        return self.root is None

    @property
    def js(self) -> str:
        return PLOTLY_JS if self.static else f"{self.root}/static/{PLOTLY_JS}"

    def overview(self, **query: Any) -> str:
        return "index.html" if self.static else self._with(f"{self.root}/", query)

    def calls(self, **query: Any) -> str:
        return "calls.html" if self.static else self._with(f"{self.root}/calls", query)

    def value(self, **query: Any) -> str:
        return "value.html" if self.static else self._with(f"{self.root}/value", query)

    def model(self) -> str:
        return "model.html" if self.static else f"{self.root}/model"

    def learner(self, customer_id: str) -> str:
        if self.static:
            return f"{learner_anchor(customer_id)}.html"
        return f"{self.root}/learner/{quote(customer_id, safe='')}"

    @staticmethod
    def _with(path: str, query: dict[str, Any]) -> str:
        kept = {name: value for name, value in query.items() if value not in (None, "")}
        return f"{path}?{urlencode(kept)}" if kept else path


def _memo(frames: DashboardFrames, key: Any, compute: Any) -> Any:
    if key not in frames.memo:
        frames.memo[key] = compute()
    return frames.memo[key]


def tag_area_chart(series: pd.DataFrame) -> dict[str, Any]:
    """Stacked areas of learners per tag at the end of each batch day."""
    days = [day.date().isoformat() for day in series["day"]]
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "stackgroup": "tags",
            "name": f"{tag} {name}",
            "x": days,
            "y": series[tag].astype(int).tolist(),
            "line": {"color": color},
        }
        for (tag, name), color in zip(STATUS_TAGS.items(), TAG_COLORS, strict=True)
    ]
    layout = {"title": {"text": "learners per status tag"}, "yaxis": {"title": "learners"}}
    return {"data": data, "layout": layout | {"height": 360}}


def kpi_charts(trend: pd.DataFrame) -> list[dict[str, Any]]:
    """One small chart per KPI: its value on each batch day and its target (dashed)."""
    charts = []
    for kpi_id, (name, comparison, target, unit) in KPI_TARGETS.items():
        rows = trend[trend["id"] == kpi_id]
        days = [day.date().isoformat() for day in rows["day"]]
        values = [None if pd.isna(value) else round(float(value), 2) for value in rows["value"]]
        data = [
            {"type": "scatter", "mode": "lines+markers", "name": name, "x": days, "y": values},
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"target {comparison} {target:g}",
                "x": days,
                "y": [target] * len(days),
                "line": {"dash": "dash", "color": "#c0392b"},
            },
        ]
        layout = {
            "title": {"text": f"{name} ({comparison} {target:g} {unit})"}, "height": 260,
            "showlegend": False, "yaxis": {"title": unit}, "margin": {"t": 40, "b": 40},
        }  # fmt: skip
        charts.append({"id": f"kpi-{kpi_id}", "data": data, "layout": layout})
    return charts


def value_chart(values: pd.DataFrame) -> dict[str, Any]:
    """Revenue at risk and projected lifetime value by tier and tag (grouped bars)."""
    labels = [f"{row.product_tag} {row.tag}" for row in values.itertuples(index=False)]
    data = [
        {"type": "bar", "name": "revenue at risk", "x": labels,
         "y": values["value_at_risk"].round(2).tolist()},
        {"type": "bar", "name": "projected lifetime value", "x": labels,
         "y": values["projected_value"].round(2).tolist()},
    ]  # fmt: skip
    layout = {"title": {"text": "value by tier and tag"}, "barmode": "group", "height": 360}
    return {"data": data, "layout": layout}


def overview_page(
    cache: DashboardCache, filters: DashboardFilters, links: Links
) -> str:  # the page's parts are each one call; together they read as the page
    """The overview page of the filtered learners."""
    frames = cache.frames()
    days = days_in_range(frames.days, filters)
    end = days[-1] if days else frames.latest_day
    learners = _memo(frames, ("learners", filters), lambda: _learners(frames, filters, end))
    chosen = learners if filters.narrows_learners else None
    series = tag_series(frames.transitions, chosen, days)
    trend = _memo(
        frames,
        ("kpis", filters),
        lambda: kpi_trend(cache.kpi_inputs(frames), frames.customers, days, chosen),
    )
    values = value_by_tier_tag(frames.latest_scores, learners)
    charts = [{"id": "tags-chart", **tag_area_chart(series)}, *kpi_charts(trend)]
    charts.append({"id": "value-chart", **value_chart(values)})
    context = {
        "page": "overview", "links": links, "filters": filters, "options": filter_options(frames),
        "days": days, "latest_day": frames.latest_day, "learners": len(learners),
        "kpis": _latest_kpis(trend), "values": values.to_dict("records"),
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_overview.html.j2")


def calls_page(
    cache: DashboardCache,
    links: Links,
    *,
    search: str | None = None,
    sort: str = "priority",
    limit: int = CALLS_SHOWN,
) -> str:
    """The latest day's call list, searched by learner id and sorted.

    Raises:
        ValueError: an unknown sort (naming the ones there are).
    """
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}: one of {', '.join(SORTS)}")
    frames = cache.frames()
    rows, matched = call_rows(frames.latest_scores, None, search=search, sort=sort, limit=limit)
    listed = [
        {
            "customer_id": str(row["customer_id"]),
            "href": links.learner(str(row["customer_id"])),
            "priority": row["priority"],
            "action": row["action"],
            "p_churn": "—" if pd.isna(row["p_churn"]) else f"{row['p_churn']:.0%}",
            **value_texts(row),
        }
        for row in rows.to_dict("records")
    ]
    context = {
        "page": "calls", "links": links, "latest_day": frames.latest_day, "rows": listed,
        "matched": matched, "search": search or "", "sort": sort, "sorts": list(SORTS),
        "charts": [], "charts_json": "[]",
    }  # fmt: skip
    return render_html(context, "dashboard_calls.html.j2")


def learner_page(store: StateStore, customer_id: str, links: Links) -> str:
    """One learner's tag history, latest score and overrides.

    Raises:
        NotFound: the store has no status for the learner.
    """
    status = learner_status(store, customer_id)
    history = status.history.assign(
        by=status.history["rule_id"]
        .astype(object)
        .where(status.history["rule_id"].notna(), status.history["actor"])
    )
    moves = [
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
    score = status.score
    overrides = store.overrides_frame(customer_id)
    charts = [{"id": "history-chart", **history_chart(history)}]
    context = {
        "page": "learner", "links": links, "status": status, "moves": moves,
        "score": None if score is None else _score_view(score),
        "overrides": overrides.astype(object).where(overrides.notna(), None).to_dict("records"),
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_learner.html.j2")


def write_dashboard(cache: DashboardCache, out: Path, *, learners: int = CALLS_SHOWN) -> list[Path]:
    """The pages as static files in ``out``, linked relatively, with plotly.js beside them.

    The overview (unfiltered: a file has no server to filter with), the call list and a page
    for each of its first ``learners`` learners.

    Returns:
        The files written.

    Raises:
        NotFound: no completed batch day yet.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    links = Links(None)
    pages = {
        "index.html": overview_page(cache, DashboardFilters(), links),
        "calls.html": calls_page(cache, links, limit=learners),
    }
    listed, _ = call_rows(cache.frames().latest_scores, None, limit=learners)
    for customer_id in listed["customer_id"].astype(str):
        pages[links.learner(customer_id)] = learner_page(cache.source.store, customer_id, links)
    written = [out / PLOTLY_JS]
    written[0].write_bytes(plotly_js())
    for name, html in pages.items():
        (out / name).write_text(html, encoding="utf-8")
        written.append(out / name)
    return written


def history_chart(history: pd.DataFrame) -> dict[str, Any]:
    """The learner's tag over time as a step line (one point per transition)."""
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
    return {
        "data": data,
        "layout": {"title": {"text": "tag history"}, "yaxis": axis, "height": 300},
    }


def filter_options(frames: DashboardFrames) -> dict[str, list[str]]:
    """What each filter can be set to: tiers, enrolment months, tags and batch days."""
    enrolled = pd.to_datetime(frames.customers["enrolled_at"], utc=True)
    months = sorted(enrolled.dt.strftime("%Y-%m").unique()) if len(enrolled) else []
    return {
        "tiers": sorted(frames.customers["product_tag"].astype(str).unique()),
        "cohorts": months,
        "tags": list(STATUS_TAGS),
        "days": [day.isoformat() for day in frames.days],
    }


def _learners(frames: DashboardFrames, filters: DashboardFilters, end: Any) -> pd.DataFrame:
    return learners_of(frames.customers, latest_tags(frames.transitions, end), filters)


def _latest_kpis(trend: pd.DataFrame) -> list[dict[str, str]]:
    if trend.empty:
        return []
    last = trend[trend["day"] == trend["day"].max()]
    return [
        {
            "name": row.name,
            "target": f"{row.comparison} {format_kpi_value(row.target, row.unit)}",
            "value": format_kpi_value(None if pd.isna(row.value) else row.value, row.unit),
        }
        for row in last.itertuples(index=False)
    ]


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


def _charts_json(charts: list[dict[str, Any]]) -> str:
    # "</" cannot close the script element the JSON sits in.
    return json.dumps(charts, separators=(",", ":")).replace("</", "<\\/")


__all__ = [
    "PLOTLY_JS",
    "Links",
    "calls_page",
    "filter_options",
    "history_chart",
    "kpi_charts",
    "learner_page",
    "overview_page",
    "plotly_js",
    "tag_area_chart",
    "value_chart",
    "write_dashboard",
]
