"""The dashboard's pages: Plotly figures (as JSON the bundled plotly.js draws) and HTML.

Three pages, each served live (``/dashboard``, ``/dashboard/calls``,
``/dashboard/learner/{id}``) and written as files by ``lstep dashboard --out DIR``:

- **overview**: status tags over time (stacked area) for the filtered learners, the six KPIs as
  trends over the batch days against their targets (treated vs control where a KPI is split), and
  revenue at risk and projected lifetime value by tier and tag;
- **calls**: the latest day's call list, searched by learner id and sorted;
- **learner**: ``serving.app.dashboard_learner`` (why this score, tag history, campaigns received,
  overrides and the override form); ``learner_page`` and ``history_chart`` are imported here too.

The cohorts (retention grid) and flows (Sankey of tag moves) pages are
``serving.app.dashboard_flow_pages``; they link and filter as these do.

Figures are plain Plotly JSON specs (no Python figure objects: they validate every attribute and
cost more than the page); the browser draws them with ``plotly.min.js``, which ships inside the
``plotly`` wheel and is served by the service itself: nothing comes from a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pandas as pd
import pyarrow as pa

from serving.app.charts import TAG_COLORS
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_cohorts import behaviours_held, with_behaviour
from serving.app.dashboard_data import (
    SORTS,
    DashboardFilters,
    call_rows,
    days_in_range,
    kpi_trend,
    rows_of,
    tag_series,
    tag_spans,
    value_by_tier_tag,
    value_of_rows,
    with_learner,
)
from serving.app.dashboard_learner import charts_json, history_chart, learner_page
from serving.app.dashboard_selection import everyone_at, kpi_positions, prime, selected
from serving.app.dashboard_why import ReasonSource
from serving.app.kpi_targets import KPI_TARGETS
from serving.app.report import format_kpi_value, learner_anchor, render_html
from serving.core.calllist import value_texts
from serving.core.tags import STATUS_TAGS

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

    def cohorts(self, **query: Any) -> str:
        return "cohorts.html" if self.static else self._with(f"{self.root}/cohorts", query)

    def flows(self, **query: Any) -> str:
        return "flows.html" if self.static else self._with(f"{self.root}/flows", query)

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
            *_split_traces(rows, days),
        ]
        layout = {
            "title": {"text": f"{name} ({comparison} {target:g} {unit})"}, "height": 260,
            "showlegend": len(data) > 2, "yaxis": {"title": unit}, "margin": {"t": 40, "b": 40},
            "legend": {"orientation": "h", "y": -0.25},
        }  # fmt: skip
        charts.append({"id": f"kpi-{kpi_id}", "data": data, "layout": layout})
    return charts


def _split_traces(rows: pd.DataFrame, days: list[str]) -> list[dict[str, Any]]:
    """A KPI's treated and control lines (dotted), when the KPI is split on some day."""
    if rows.empty or not rows[["treated", "control"]].notna().to_numpy().any():
        return []
    styles = {"treated": "#1e8449", "control": "#7f8c8d"}
    return [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": group,
            "x": days,
            "y": [None if pd.isna(v) else round(float(v), 2) for v in rows[group]],
            "line": {"dash": "dot", "color": color},
        }
        for group, color in styles.items()
    ]


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
    days, learners, series, trend, values, options = overview_parts(cache, frames, filters)
    charts = [{"id": "tags-chart", **tag_area_chart(series)}, *kpi_charts(trend)]
    charts.append({"id": "value-chart", **value_chart(values)})
    context = {
        "page": "overview", "links": links, "filters": filters, "options": options,
        "days": days, "latest_day": frames.latest_day, "learners": len(learners),
        "kpis": _latest_kpis(trend), "values": values.to_dict("records"),
        "refreshing": cache.refreshing,
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_overview.html.j2")


def overview_parts(
    cache: DashboardCache, frames: DashboardFrames, filters: DashboardFilters
) -> tuple:
    """The overview's figures on ``frames``, each kept per filter: the days shown, the learners
    selected, the tag series, the KPI trend, the value by tier and tag, the filter options.

    A cache refreshing in the background calls it (``dashboard_warm.warm_pages``) on the frames
    it read before serving them, so the first viewer of a new history gets a render.
    """
    days = days_in_range(frames.days, filters)
    end = days[-1] if days else frames.latest_day
    learners = frames.remembered(("learners", filters), lambda: _learners(frames, filters, end))
    chosen = learners if filters.narrows_learners else None
    # Every part is kept per filter: a page seen again, by anyone, is a render.
    series = frames.remembered(
        ("tags", filters), lambda: tags_of(frames, filters, days, end, chosen)
    )
    trend = frames.remembered(
        ("kpis", filters), lambda: _trend(cache, frames, filters, days, chosen)
    )
    values = frames.remembered(
        ("values", filters), lambda: values_of(frames, filters, end, learners)
    )
    options = frames.remembered(("options",), lambda: filter_options(frames))
    if chosen is None:
        prime(cache, frames)  # with the unfiltered page (warmed): a first filter only masks
    return days, learners, series, trend, values, options


def _trend(
    cache: DashboardCache,
    frames: DashboardFrames,
    filters: DashboardFilters,
    days: list[date],
    chosen: pd.DataFrame | None,
) -> pd.DataFrame:
    """The KPI trend of the ``chosen`` learners (None: everyone), narrowed by their positions
    in the KPI history (``kpi_positions``), not by their ids."""
    positions = None
    if chosen is not None:
        end = days[-1] if days else frames.latest_day
        positions = kpi_positions(cache, frames, end)[selected(frames, filters, end)]
    history = cache.kpi_history(frames)
    inputs = cache.kpi_inputs(frames)
    return kpi_trend(inputs, frames.customers, days, chosen, history, positions)


def tags_of(
    frames: DashboardFrames,
    filters: DashboardFilters,
    days: list[date],
    end: date,
    chosen: pd.DataFrame | None,
) -> pd.DataFrame:
    """The overview's tag series (``tag_series``) of the ``chosen`` learners (None: everyone).

    Every learner's tag spans are found once per history, and joined to everyone's tier,
    cohort and tag at the latest day (the unfiltered page does both, warmed): a tier, cohort or
    tag filter then masks them. A behaviour, or a range ending earlier, semi-joins its learners.
    """
    spans = frames.remembered(("tag-spans",), lambda: tag_spans(frames.transitions))
    joined = _with_everyone(frames, "tag-spans", lambda: spans, end)
    if chosen is None or joined is None or filters.behaviour is not None:
        return tag_series(frames.transitions, chosen, days, spans)
    return tag_series(frames.transitions, None, days, rows_of(joined, filters))


VALUE_ROW_COLUMNS = ["customer_id", "value_at_risk", "projected_value"]
"""What the value table reads of a day's scores."""


def values_of(
    frames: DashboardFrames, filters: DashboardFilters, end: date, learners: pd.DataFrame
) -> pd.DataFrame:
    """``value_by_tier_tag`` of the latest scores and ``learners`` (the filters' selection at
    ``end``): the scores joined to everyone once per history, then masked, as ``tags_of``."""
    scores = frames.latest_scores
    scored = _with_everyone(frames, "latest-scores", lambda: scores[VALUE_ROW_COLUMNS], end)
    if scored is None or filters.behaviour is not None:
        return value_by_tier_tag(frames.latest_scores, learners)
    return value_of_rows(rows_of(scored, filters))


def _with_everyone(
    frames: DashboardFrames, name: str, rows: Callable[[], Any], end: date
) -> pa.Table | None:
    """``rows()`` joined to everyone at the latest day (``with_learner``), once per history;
    None for another day (a date range ending earlier: not worth a join of its own)."""
    if end != frames.latest_day:
        return None
    return frames.remembered(
        (name, "with-learner"), lambda: with_learner(rows(), everyone_at(frames, end))
    )


def calls_page(
    cache: DashboardCache,
    links: Links,
    *,
    search: str | None = None,
    sort: str = "priority",
    limit: int = CALLS_SHOWN,
    behaviour: str | None = None,
) -> str:
    """The latest day's call list, searched by learner id, narrowed to the learners holding a
    behaviour tag (BT_xxx, None: all) and sorted.

    Raises:
        ValueError: an unknown sort (naming the ones there are), or a behaviour tag no learner
            holds (naming those held).
    """
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}: one of {', '.join(SORTS)}")
    behaviour = DashboardFilters(behaviour=behaviour).behaviour  # a BT_xxx id, blank is none
    frames = cache.frames()
    holders = None
    if behaviour is not None:
        everyone = frames.latest_scores[["customer_id"]]
        holders = frames.remembered(
            ("call-learners", behaviour), lambda: with_behaviour(frames, everyone, behaviour)
        )
    rows, matched = call_rows(frames.latest_scores, holders, search=search, sort=sort, limit=limit)
    context = {
        "page": "calls", "links": links, "latest_day": frames.latest_day,
        "rows": _call_list(rows, links), "matched": matched, "search": search or "",
        "sort": sort, "sorts": list(SORTS), "behaviour": behaviour,
        "behaviours": behaviours_held(frames), "refreshing": cache.refreshing,
        "charts": [], "charts_json": "[]",
    }  # fmt: skip
    return render_html(context, "dashboard_calls.html.j2")


def _call_list(rows: pd.DataFrame, links: Links) -> list[dict[str, Any]]:
    """The call list's rows as printed, each linked to the learner's page."""
    return [
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


def write_dashboard(
    cache: DashboardCache,
    out: Path,
    *,
    learners: int = CALLS_SHOWN,
    reasons: ReasonSource | None = None,
) -> list[Path]:
    """The pages as static files in ``out``, linked relatively, with plotly.js beside them.

    The overview, the retention grid and the flows (unfiltered: a file has no server to filter
    with), the call list and a page for each of its first ``learners`` learners, with their
    reasons from ``reasons`` (none without) and no override form (a file has no service to post
    to).

    Returns:
        The files written.

    Raises:
        NotFound: no completed batch day yet.
    """
    from serving.app.dashboard_flow_pages import cohorts_page, flows_page  # it imports Links

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    links = Links(None)
    pages = {
        "index.html": overview_page(cache, DashboardFilters(), links),
        "calls.html": calls_page(cache, links, limit=learners),
        "cohorts.html": cohorts_page(cache, DashboardFilters(), links),
        "flows.html": flows_page(cache, DashboardFilters(), links),
    }
    listed, _ = call_rows(cache.frames().latest_scores, None, limit=learners)
    for customer_id in listed["customer_id"].astype(str):
        pages[links.learner(customer_id)] = learner_page(
            cache.source.store, customer_id, links, catalogue=cache.source.ruleset.campaigns,
            reasons=reasons,
        )  # fmt: skip
    written = [out / PLOTLY_JS]
    written[0].write_bytes(plotly_js())
    for name, html in pages.items():
        (out / name).write_text(html, encoding="utf-8")
        written.append(out / name)
    return written


def filter_options(frames: DashboardFrames) -> dict[str, list[str]]:
    """What each filter can be set to: tiers, enrolment months, tags, behaviour tags held on the
    latest batch day and batch days."""
    enrolled = pd.to_datetime(frames.customers["enrolled_at"], utc=True)
    months = sorted(enrolled.dt.strftime("%Y-%m").unique()) if len(enrolled) else []
    return {
        "tiers": sorted(frames.customers["product_tag"].astype(str).unique()),
        "cohorts": months,
        "tags": list(STATUS_TAGS),
        "behaviours": behaviours_held(frames),
        "days": [day.isoformat() for day in frames.days],
    }


def _learners(frames: DashboardFrames, filters: DashboardFilters, end: date) -> pd.DataFrame:
    """The learners the filters select at ``end``: everyone's rows the selection masks."""
    return everyone_at(frames, end)[selected(frames, filters, end)].reset_index(drop=True)


def _latest_kpis(trend: pd.DataFrame) -> list[dict[str, Any]]:
    if trend.empty:
        return []
    last = trend[trend["day"] == trend["day"].max()]
    split = trend.groupby("id")[["treated", "control"]].apply(lambda f: f.notna().any().any())
    return [
        {
            "name": row.name,
            "target": f"{row.comparison} {format_kpi_value(row.target, row.unit)}",
            "value": format_kpi_value(None if pd.isna(row.value) else row.value, row.unit),
            "split": bool(split[row.id]),
            "treated": format_kpi_value(None if pd.isna(row.treated) else row.treated, row.unit),
            "control": format_kpi_value(None if pd.isna(row.control) else row.control, row.unit),
        }
        for row in last.itertuples(index=False)
    ]


def _charts_json(charts: list[dict[str, Any]]) -> str:
    return charts_json(charts)


__all__ = [
    "PLOTLY_JS",
    "Links",
    "calls_page",
    "everyone_at",
    "filter_options",
    "history_chart",
    "kpi_charts",
    "learner_page",
    "overview_page",
    "overview_parts",
    "plotly_js",
    "tag_area_chart",
    "value_chart",
    "write_dashboard",
]
