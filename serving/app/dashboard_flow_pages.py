"""The dashboard's cohort and flow pages: a retention heatmap and a Sankey of tag moves.

- **cohorts** (``/dashboard/cohorts``): enrolment month x weeks since enrolment, the share of the
  cohort's known learners still live at each week's end (a Plotly heatmap, the tag mix in each
  cell's hover text and in a table below); filtered by tier, cohort and behaviour tag.
- **flows** (``/dashboard/flows``): the moves between tags over a period (a Plotly Sankey, from
  the tags on the left to the tags on the right, onboarding as "new") and a table of the moves by
  rule; narrowed to one rule, and filtered by tier, cohort and behaviour tag.

The figures come from ``serving.app.dashboard_cohorts`` (DuckDB over the cached frames) and are
kept in the frames' memo per filter, as the overview's are.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from serving.app.charts import TAG_COLORS
from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_cohorts import (
    NEW,
    grid_of_weeks,
    known_rules,
    moves_by_rule,
    tag_flows,
    week_spans,
)
from serving.app.dashboard_data import DashboardFilters, narrowing
from serving.app.dashboard_pages import Links, _charts_json, filter_options
from serving.app.dashboard_selection import everyone_at, holding
from serving.app.report import render_html
from serving.core.tags import STATUS_TAGS

NEW_COLOR = "#aab7b8"
COLORS = dict(zip(STATUS_TAGS, TAG_COLORS, strict=True)) | {NEW: NEW_COLOR}
LIVE_SCALE = [[0.0, "#c0392b"], [0.5, "#f4d03f"], [1.0, "#1e8449"]]
"""0 % live red, half yellow, all live green (plotly.js knows no "RdYlGn" by name)."""


def selected_learners(frames: DashboardFrames, filters: DashboardFilters) -> pd.DataFrame | None:
    """The learners the tier, cohort and behaviour filters select; None when none is set.

    Raises:
        ValueError: a behaviour tag no learner holds on the latest batch day (naming those held).
    """
    if not _selects(filters):
        return None
    everyone = everyone_at(frames, frames.latest_day).assign(tag=None)
    return everyone[_kept(frames, filters)].reset_index(drop=True)


def _selects(filters: DashboardFilters) -> bool:
    return not (filters.tier is None and filters.cohort is None and filters.behaviour is None)


def _kept(frames: DashboardFrames, filters: DashboardFilters) -> np.ndarray:
    """Whether the tier, cohort and behaviour filters select each of everyone at the latest
    day, kept per filter.

    Everyone's tier and cohort are the overview's (found once per history, warmed): masking
    them costs milliseconds where joining the customers again cost ~1 s at 300k learners.
    Their tag is dropped: these pages select no learner by tag (``learners_of`` with no tags).
    """

    def mask() -> np.ndarray:
        latest = frames.latest_day
        keep = narrowing(everyone_at(frames, latest).assign(tag=None), filters)
        if filters.behaviour is not None:  # the holders found once per history, as a mask
            keep &= holding(frames, latest, filters.behaviour)
        return keep

    # The tag is in the key: a tag masks everyone out here (its column is dropped above).
    key = ("flow-kept", filters.tier, filters.cohort, filters.tag, filters.behaviour)
    return frames.remembered(key, mask)


def retention_heatmap(grid: pd.DataFrame) -> dict[str, Any]:
    """The grid as a heatmap: cohorts (rows) x weeks, % live; unknown cells left blank."""
    cohorts = sorted(grid["cohort"].unique())
    weeks = list(range(int(grid["week"].max()) + 1))
    cells = grid.set_index(["cohort", "week"])
    share = (cells["share_live"] * 100).round(1)
    z = share.unstack("week").reindex(index=cohorts, columns=weeks)
    text = _cell_texts(grid).set_axis(cells.index).unstack("week")
    text = text.reindex(index=cohorts, columns=weeks).fillna("")
    data = [
        {
            "type": "heatmap", "x": weeks, "y": cohorts,
            "z": z.astype(object).where(z.notna(), None).values.tolist(),
            "text": text.values.tolist(), "hovertemplate": "%{text}<extra></extra>",
            "colorscale": LIVE_SCALE, "zmin": 0, "zmax": 100, "hoverongaps": False,
            "colorbar": {"title": {"text": "% live"}},
        }
    ]  # fmt: skip
    layout = {
        "title": {"text": "share of each enrolment cohort still live, by week since enrolment"},
        "xaxis": {"title": {"text": "weeks since enrolment"}, "dtick": 1},
        "yaxis": {"title": {"text": "enrolment month"}, "type": "category"},
        "height": max(320, 60 + 32 * len(cohorts)),
    }
    return {"data": data, "layout": layout}


def _cell_texts(grid: pd.DataFrame) -> pd.Series:
    """Each cell's hover text: live share of the known learners and the tag mix."""
    known = grid["known"].where(grid["known"] > 0)
    text = (
        grid["cohort"] + ", week " + grid["week"].astype(str) + ": "
        + (grid["share_live"] * 100).map("{:.1f}% live".format) + " of "
        + grid["known"].astype(str) + " known (cohort " + grid["cohort_size"].astype(str) + ")"
    )  # fmt: skip
    for tag, name in STATUS_TAGS.items():
        text = text + f"<br>{tag} {name}: " + (grid[tag] / known * 100).map("{:.1f}%".format)
    return text.where(grid["known"] > 0, "")


def flows_sankey(flows: pd.DataFrame) -> dict[str, Any]:
    """The moves as a Sankey: from-tags on the left, to-tags on the right, links sized by count."""
    order = [NEW, *STATUS_TAGS]
    sources = [tag for tag in order if tag in set(flows["from_tag"])]
    targets = [tag for tag in order if tag in set(flows["to_tag"])]
    labels = [_label(tag) for tag in sources] + [f"→ {_label(tag)}" for tag in targets]
    colors = [COLORS[tag] for tag in sources] + [COLORS[tag] for tag in targets]
    link = {
        "source": [sources.index(tag) for tag in flows["from_tag"]],
        "target": [len(sources) + targets.index(tag) for tag in flows["to_tag"]],
        "value": flows["moves"].astype(int).tolist(),
        "color": [_translucent(COLORS[tag]) for tag in flows["to_tag"]],
    }
    node = {"label": labels, "color": colors, "pad": 18, "thickness": 18}
    data = [{"type": "sankey", "arrangement": "snap", "node": node, "link": link}]
    layout = {"title": {"text": "moves between status tags"}, "height": 460}
    return {"data": data, "layout": layout}


def _label(tag: str) -> str:
    return tag if tag == NEW else f"{tag} {STATUS_TAGS[tag]}"


def _translucent(color: str) -> str:
    red, green, blue = (int(color[index : index + 2], 16) for index in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.4)"


def cohorts_page(cache: DashboardCache, filters: DashboardFilters, links: Links) -> str:
    """The retention grid of the learners the tier, cohort and behaviour filters select.

    Raises:
        NotFound: no completed batch day yet.
        ValueError: a behaviour tag no learner holds.
    """
    frames = cache.frames()
    chosen, known, charts = cohorts_parts(frames, filters)
    context = {
        "page": "cohorts", "links": links, "filters": filters, "latest_day": frames.latest_day,
        "first_day": frames.days[0], "options": _options(frames),
        "learners": len(frames.customers) if chosen is None else len(chosen),
        "cells": known.to_dict("records"), "tags": list(STATUS_TAGS),
        "refreshing": cache.refreshing,
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_cohorts.html.j2")


def cohorts_parts(
    frames: DashboardFrames, filters: DashboardFilters
) -> tuple[pd.DataFrame | None, pd.DataFrame, list[dict[str, Any]]]:
    """The cohorts page's figures on ``frames``, each kept per filter: the learners selected
    (None: everyone), the grid's known cells and its heatmap (``warm_pages`` computes them
    for everyone before a refreshed history is served)."""
    latest = frames.latest_day
    chosen = frames.remembered(_selection(filters), lambda: selected_learners(frames, filters))
    key = ("grid", *_selection(filters)[1:])
    known, charts = frames.remembered(key, lambda: _grid(frames, latest, filters))
    _options(frames)
    everyone_at(frames, latest)  # with the unfiltered page (warmed): a first filter only masks
    return chosen, known, charts


def flows_page(
    cache: DashboardCache, filters: DashboardFilters, links: Links, *, rule: str | None = None
) -> str:
    """The moves between tags over the filters' period (default: the whole stored history).

    Raises:
        NotFound: no completed batch day yet.
        ValueError: an unknown rule (naming the known ones) or a behaviour tag no learner holds.
    """
    frames = cache.frames()
    rules, rule, (start, end), flows, by_rule = flows_parts(cache, frames, filters, rule)
    charts = [] if flows.empty else [{"id": "flows-chart", **flows_sankey(flows)}]
    context = {
        "page": "flows", "links": links, "filters": filters, "rule": rule, "rules": rules,
        "start": start, "end": end, "latest_day": frames.latest_day,
        "options": _options(frames), "moves": int(flows["moves"].sum()),
        "flows": flows.to_dict("records"), "by_rule": by_rule.to_dict("records"),
        "refreshing": cache.refreshing,
        "charts": charts, "charts_json": _charts_json(charts),
    }  # fmt: skip
    return render_html(context, "dashboard_flows.html.j2")


def flows_parts(
    cache: DashboardCache, frames: DashboardFrames, filters: DashboardFilters, rule: str | None
) -> tuple[list[str], str | None, tuple[date, date], pd.DataFrame, pd.DataFrame]:
    """The flows page's figures on ``frames``, each kept per filter and rule: the rules known,
    the rule asked (blank: None), the period, the flows and the moves by rule.

    Raises:
        NotFound: no completed batch day yet.
        ValueError: an unknown rule or a behaviour tag no learner holds.
    """
    latest = frames.latest_day  # NotFound before any other question
    rules = frames.remembered(("rules",), lambda: _known_rules(cache, frames))
    rule = rule.strip() if rule and rule.strip() else None
    if rule is not None and rule not in rules:
        raise ValueError(f"unknown rule {rule!r}: one of {', '.join(rules)}")
    start, end = filters.start or frames.days[0], filters.end or latest
    chosen = frames.remembered(_selection(filters), lambda: selected_learners(frames, filters))
    key = ("flows", filters, rule)
    flows, by_rule = frames.remembered(key, lambda: _flows(frames, start, end, rule, chosen))
    _options(frames)
    everyone_at(frames, latest)  # as the cohorts page
    return rules, rule, (start, end), flows, by_rule


def _grid(
    frames: DashboardFrames, latest: date, filters: DashboardFilters
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The grid's known cells and its heatmap (none when no cell is known): everyone's week
    spans found once per history (with the unfiltered page, warmed), a filter's rows of them
    counted (``retention_grid`` of its learners, without the window over the log again)."""
    everyone = everyone_at(frames, latest)
    weeks = frames.remembered(
        ("week-spans",),
        lambda: week_spans(frames.transitions, frames.customers, latest, everyone),
    )
    cohorts = everyone["cohort"]
    if _selects(filters):
        keep = _kept(frames, filters)
        weeks = weeks.filter(pa.array(keep[weeks["row"].to_numpy()]))
        cohorts = cohorts[keep]
    grid = grid_of_weeks(weeks, cohorts)
    known = grid[grid["known"] > 0]
    return known, [] if known.empty else [{"id": "retention-chart", **retention_heatmap(grid)}]


def _options(frames: DashboardFrames) -> dict[str, list[str]]:
    # The months of a million enrolments cost a tenth of a second: once per history.
    return frames.remembered(("options",), lambda: filter_options(frames))


def _selection(filters: DashboardFilters) -> tuple[str, str | None, str | None, str | None]:
    """The memo key of the learners the tier, cohort and behaviour filters select."""
    return ("flow-learners", filters.tier, filters.cohort, filters.behaviour)


def _flows(
    frames: DashboardFrames, start: date, end: date, rule: str | None, chosen: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    log = frames.transitions
    flows = tag_flows(log, start, end, rule=rule, learners=chosen)
    return flows, moves_by_rule(log, start, end, rule=rule, learners=chosen)


def _known_rules(cache: DashboardCache, frames: DashboardFrames) -> list[str]:
    return known_rules(frames.transitions, [rule.id for rule in cache.source.ruleset.rules])


__all__ = [
    "cohorts_page",
    "cohorts_parts",
    "flows_page",
    "flows_parts",
    "flows_sankey",
    "retention_heatmap",
    "selected_learners",
]
