"""``lstep report``: one self-contained HTML page for CS leads .

The page is built from what the service already keeps, as it stood at ``as_of``:

- **KPIs** (``#kpis``): ``serving.app.kpi_inputs.kpis_at`` (the audit log, stored scores, the
  batch days' feature snapshots and the labels of the event log, all in data days), each against
  its target with its one-line definition, and treated vs control where the KPI splits by group
  (recovery).
- **Tags over time** (``#tags-over-time``): every learner's tag at the end of each completed
  batch day, rebuilt from the audit log (a learner's tag on day d is the ``to_tag`` of their last
  transition with ``as_of <= d``), drawn as a stacked area.
- **Transitions by rule** (``#transitions``): audit-log rows up to ``as_of`` counted by rule id
  (manual moves counted as ``manual``).
- **Call list** (``#call-list``, ``#learner-<id>``): the day's stored P1/P2 scores outside the
  control group, by priority then value at risk; each of the top learners gets a section with
  their reason codes and a TreeSHAP waterfall (``models.explain``).
- **Model card** (``#model-card``): the champion's run artifacts ``comparison.md`` (metrics of the
  model and its baselines on the test slice), ``model_card.md`` and ``plots/calibration.png``,
  found through the registry (the run of the version holding the ``champion`` alias).
- **Drift** (``#drift``): the population stability index of the champion's most important
  features between the EARLIEST and the LATEST batch-day feature snapshots
  (``<data_dir>/features/as_of=YYYY-MM-DD.parquet``) up to ``as_of``. This compares the first
  scored population with today's, not the training window itself: the snapshots are the
  features serving actually saw, and the page says so. PSI above 0.2 gets a warning badge.

Images are matplotlib PNGs embedded as base64 data URIs; the page loads nothing from the network
(no external CSS, JS or fonts), so it can be mailed or opened offline.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from features.windows import build_features, read_features
from models.explain import format_points
from rules import RuleSet
from serving.app.campaign_effect import effect_summary
from serving.app.campaign_inputs import measured_effect
from serving.app.charts import png_data_uri, rules_bar_figure, tag_area_figure, waterfall_uri
from serving.app.dashboard_data import tag_series
from serving.app.drift import drift_section
from serving.app.kpi_inputs import StoredEvents, kpis_at
from serving.app.kpi_targets import KPI_TARGETS
from serving.app.kpis import Kpi
from serving.app.model_card import model_card_section
from serving.core.assess import Assessment, assess
from serving.core.calllist import call_list, urgent_rows, value_texts
from serving.core.frames import empty_state
from serving.core.tags import STATUS_TAGS
from serving.infra.champion import Champion
from serving.infra.snapshots import snapshot_path
from serving.infra.store import StateStore
from serving.settings import Settings

TEMPLATE_NAME = "report.html.j2"
REPORT_NAME = re.compile(r"^report-(\d{4}-\d{2}-\d{2})\.html$")
CALL_LIST_LENGTH = 10

TAG_HISTORY_SCHEMA = pa.DataFrameSchema(
    {
        "day": pa.Column("datetime64[us]", unique=True),
        **{tag: pa.Column(int, pa.Check.ge(0)) for tag in STATUS_TAGS},
    },
    strict=True,
    coerce=True,
    name="tag history",
)


# --- public entry points --------------------------------------------------------------------------


def report_path(reports_path: Path, as_of: date) -> Path:
    """``<reports_path>/report-YYYY-MM-DD.html``: the default file of the report of ``as_of``."""
    return Path(reports_path) / f"report-{as_of.isoformat()}.html"


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads besides the store.

    Attributes:
        champion: the loaded champion; None for rules-only, in which case the call list carries
            risk indicators and the model card says so.
        ruleset: the rules ``assess`` decides with (the call list's reasons go through it).
        events: validated events (``features.validation.load_valid_inputs``), or the event
            store's parquet file proved clean (``StoredEvents``: the KPIs read their labels'
            rows of it, the campaign effect its re-engagement events, and the call list's
            features are built from it as the batch builds them); the KPIs' labels, the campaign
            effect, and the call-list features when the day has no snapshot.
        customers: validated customers (KPI cohorts, feature rebuilding).
    """

    champion: Champion | None
    ruleset: RuleSet
    events: pd.DataFrame | StoredEvents
    customers: pd.DataFrame

    @property
    def event_log(self) -> pd.DataFrame | Path:
        """The validated frame, or the proved file's path."""
        return self.events.path if isinstance(self.events, StoredEvents) else self.events


def build_report(
    store: StateStore,
    settings: Settings,
    *,
    as_of: date,
    inputs: ReportInputs,
    top: int = CALL_LIST_LENGTH,
) -> str:
    """The report of ``as_of`` as one self-contained HTML document.

    Args:
        store: the state store (audit log, scores, batch runs).
        settings: where the feature snapshots (``data_path``) and MLflow (``tracking_uri``) are.
        as_of: the day described; nothing recorded after it is used.
        inputs: champion, rules and the validated event log.
        top: how many call-list learners get a section of their own.

    Raises:
        ValueError: no completed batch run on or before ``as_of`` (nothing to report), or a
            stored frame that breaks its contract.
    """
    runs = store.runs()
    days = runs.loc[(runs["status"] == "completed") & (runs["as_of"].dt.date <= as_of), "as_of"]
    if days.empty:
        raise ValueError(
            f"report: no completed batch run on or before {as_of}; run `lstep score --as-of "
            f"{as_of}` first"
        )
    transitions = store.transitions_frame(until=as_of)
    champion = inputs.champion
    kpis = kpis_at(
        store, as_of, customers=inputs.customers, events=inputs.events, ruleset=inputs.ruleset,
        data_dir=settings.data_path,
    )  # fmt: skip
    context = {
        "as_of": as_of,
        "batch_days": len(days),
        "model_version": None if champion is None else champion.version,
        "kpis": kpi_rows(kpis),
        "tags": tags_section(tag_history(transitions, [day.date() for day in days])),
        "rules": rules_section(transitions_by_rule(transitions)),
        "call_list": call_list_section(store, settings.data_path, as_of, inputs, top),
        "campaigns": campaigns_section(store.scores_frame(as_of)),
        "campaign_effect": effect_section(
            effect_summary(measured_effect(store, inputs.event_log, as_of))
        ),
        "model_card": model_card_section(settings, champion),
        "drift": drift_section(settings.data_path, as_of, champion),
    }
    return render_html(context)


def write_report(
    store: StateStore,
    settings: Settings,
    *,
    as_of: date,
    inputs: ReportInputs,
    out: Path | None = None,
    top: int = CALL_LIST_LENGTH,
) -> Path:
    """Build the report and write it atomically (``out``, default ``report_path``).

    Returns:
        The written file. A reader (the service's page route) never sees half a file.
    """
    html = build_report(store, settings, as_of=as_of, inputs=inputs, top=top)
    target = Path(out) if out is not None else report_path(settings.reports_path, as_of)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(target)
    return target


def latest_report_html(reports_path: Path) -> str | None:
    """The newest ``report-YYYY-MM-DD.html`` under ``reports_path`` (by its date), or None.

    For the service's read-only page route: only regular files inside the folder are served;
    other names (``--out`` elsewhere, partial writes), links and anything resolving outside the
    folder are ignored, so a link planted there cannot serve another file of the machine.
    """
    directory = Path(reports_path)
    if not directory.is_dir():
        return None
    inside = directory.resolve()
    dated = [
        (match.group(1), path)
        for path in directory.iterdir()
        if (match := REPORT_NAME.match(path.name))
        and not path.is_symlink()
        and path.is_file()
        and path.resolve().parent == inside
    ]
    if not dated:
        return None
    return max(dated)[1].read_text(encoding="utf-8")


def render_html(context: dict[str, Any], template: str = TEMPLATE_NAME) -> str:
    """Render a packaged Jinja2 template (the report's by default; HTML autoescaped)."""
    return _templates().get_template(template).render(**context)


@functools.cache
def _templates() -> Any:
    """One Jinja2 environment per process: it keeps the compiled templates, which cost ~30 ms a
    page to compile again (a dashboard page is rendered per request)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("serving.app", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- KPIs -----------------------------------------------------------------------------------------


def format_kpi_value(value: float | None, unit: str) -> str:
    """A KPI figure in its unit; an em dash when there is no data."""
    if value is None:
        return "—"
    return f"{value:.1f}%" if unit == "%" else f"{value:,.1f} {unit}"


def kpi_rows(kpis: Sequence[Kpi]) -> list[dict[str, Any]]:
    """The KPI table's rows: formatted figures and a verdict (met / missed / no data)."""
    verdicts = {True: "met", False: "missed", None: "no data"}
    return [
        {
            "id": kpi.id,
            "name": kpi.name,
            "value": format_kpi_value(kpi.value, kpi.unit),
            "target": f"{kpi.comparison} {format_kpi_value(kpi.target, kpi.unit)}",
            "verdict": verdicts[kpi.meets_target],
            "treated": format_kpi_value(kpi.treated, kpi.unit),
            "control": format_kpi_value(kpi.control, kpi.unit),
            "detail": kpi.detail,
            "definition": kpi.definition,
        }
        for kpi in sorted(kpis, key=lambda kpi: list(KPI_TARGETS).index(kpi.id))
    ]


# --- tags over time and transitions by rule -------------------------------------------------------


def tag_history(transitions: pd.DataFrame, days: Sequence[date]) -> pd.DataFrame:
    """Learners per tag at the end of each batch day, rebuilt from the audit log.

    Args:
        transitions: the audit log (``StateStore.transitions_frame``), in append order.
        days: the batch days to count on.

    Returns:
        One row per day (``TAG_HISTORY_SCHEMA``): ``day`` and a count column per status tag,
        the dashboard's ``tag_series`` of every learner.
    """
    return TAG_HISTORY_SCHEMA.validate(tag_series(transitions, None, days))


def transitions_by_rule(transitions: pd.DataFrame) -> pd.Series:
    """Audit-log rows per rule id (manual moves under ``manual``), most frequent first."""
    rules = transitions["rule_id"].astype(object).where(transitions["rule_id"].notna(), "manual")
    counts = rules.astype(str).value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable").rename("transitions")


def tags_section(history: pd.DataFrame) -> dict[str, Any]:
    """The stacked-area chart of tag counts per batch day, and the latest day's counts."""
    latest = history.iloc[-1]
    return {
        "chart": png_data_uri(tag_area_figure(history)),
        "days": len(history),
        "latest": [
            {"tag": tag, "name": name, "count": int(latest[tag])}
            for tag, name in STATUS_TAGS.items()
        ],
    }


def rules_section(counts: pd.Series) -> dict[str, Any]:
    """The bar chart and table of transitions by rule (no chart when the log is empty)."""
    rows = [{"rule": str(rule), "count": int(count)} for rule, count in counts.items()]
    chart = png_data_uri(rules_bar_figure(counts)) if len(counts) else None
    return {"chart": chart, "rows": rows, "total": int(counts.sum())}


# --- call list ------------------------------------------------------------------------------------


def call_list_section(
    store: StateStore, data_dir: Path, as_of: date, inputs: ReportInputs, top: int
) -> dict[str, Any]:
    """The call-list table and one section per listed learner (reasons and waterfall).

    Who is listed, and their priority and value at risk, are the day's stored scores; their
    reasons come from ``assess`` on the day's features, the path every other caller takes. The
    decisions it makes are not used (the stored day already holds them), so it decides on an
    empty state: the state of an earlier day is not kept.
    """
    scores = store.scores_frame(as_of)
    listed = call_list(scores, top)
    urgent = urgent_rows(scores)
    features = _listed_features(data_dir, as_of, listed, inputs)
    assessment = assess(
        features, champion=inputs.champion, ruleset=inputs.ruleset, state=empty_state(),
        as_of=as_of,
    )  # fmt: skip
    moves = _last_moves(store, listed["customer_id"].tolist(), as_of)
    return {
        "learners": [
            _listed_learner(score, assessment) | {"move": moves.get(str(score["customer_id"]))}
            for score in listed.to_dict("records")
        ],
        "urgent": len(urgent),
        "control_left_out": int(urgent["control"].sum()),
        "scored": len(scores),
    }


def _last_moves(store: StateStore, customer_ids: list[str], as_of: date) -> dict[str, dict]:
    """Each listed learner's last move up to ``as_of`` from the audit log, with its why.

    The call list's assessment decides on an empty state, so its ``why`` would be a new
    learner's; the stored move is the one that put the learner where they are. One indexed
    history read per listed learner (a few dozen).
    """
    moves = {}
    for customer_id in customer_ids:
        history = store.history(customer_id)
        history = history[history["as_of"] <= pd.Timestamp(as_of)]
        if history.empty:
            continue
        last = history.iloc[-1]
        moves[customer_id] = {
            "tag": last["to_tag"],
            "since": pd.Timestamp(last["as_of"]).date().isoformat(),
            "by": last["actor"] if pd.isna(last["rule_id"]) else last["rule_id"],
            "reason": last["reason"],
            "why": None if pd.isna(last["why"]) else last["why"],
        }
    return moves


def _listed_features(
    data_dir: Path, as_of: date, listed: pd.DataFrame, inputs: ReportInputs
) -> pd.DataFrame:
    """The listed learners' features on ``as_of``: the day's snapshot, else rebuilt from events."""
    day = pd.Timestamp(as_of).as_unit("us")
    if listed.empty:
        return listed[["customer_id"]].assign(as_of=day)
    snapshot = snapshot_path(data_dir, as_of)
    if snapshot.exists():
        features = read_features(snapshot)
        return features[features["customer_id"].isin(listed["customer_id"])]
    spine = listed[["customer_id"]].assign(as_of=day)
    return build_features(inputs.event_log, inputs.customers, spine=spine)


def _listed_learner(score: dict[str, Any], assessment: Assessment) -> dict[str, Any]:
    """A call-list row: the stored score, the reason codes and a waterfall (indicators without a
    model).

    Raises:
        ValueError: the learner has no features on the day (snapshot and events both lack them).
    """
    row = _learner_row(score)
    position = assessment.positions.get(row["customer_id"])
    if position is None:
        raise ValueError(
            f"report: no features for call-list learner {row['customer_id']} on "
            f"{pd.Timestamp(score['as_of']).date()} (snapshot and events both lack them)"
        )
    if assessment.rules_only:
        flags = assessment.indicators(position)
        return row | {"reasons": [{"text": flag["text"], "points": ""} for flag in flags],
                      "waterfall": None}  # fmt: skip
    explanation = assessment.explanation(position)
    reasons = assessment.reasons([position])[0]
    return row | {
        "reasons": [{"text": r.text, "points": format_points(r.points)} for r in reasons],
        "waterfall": waterfall_uri(explanation),
        "base_rate": f"{explanation.p_base:.1%}",
        "raw_probability": f"{explanation.p_raw:.1%}",
    }


def campaigns_section(scores: pd.DataFrame) -> dict[str, Any]:
    """The day's decisions by campaign and channel, treated and control (from the stored scores).

    A store without the campaign columns (from before issue 12) gives ``stored`` False.
    """
    if "campaign_id" not in scores.columns:
        return {"stored": False, "rows": [], "none": 0}
    with_campaign = scores[scores["campaign_id"].notna()]
    counts = (
        with_campaign.assign(
            channel=with_campaign["channel"].astype(object).fillna("—"),
            control=with_campaign["control"].astype(bool),
        )
        .groupby(["campaign_id", "channel"])["control"]
        .agg(decisions="size", control="sum")
        .reset_index()
        .sort_values(["campaign_id", "channel"])
    )
    rows = [
        {
            "campaign_id": str(row.campaign_id),
            "channel": str(row.channel),
            "decisions": int(row.decisions),
            "control": int(row.control),
        }
        for row in counts.itertuples(index=False)
    ]
    return {"stored": True, "rows": rows, "none": int(scores["campaign_id"].isna().sum())}


def effect_section(summary: pd.DataFrame) -> dict[str, Any]:
    """The campaigns' measured effect (``campaign_effect.effect_summary``) as header and rows."""
    rows = [
        ["-" if pd.isna(value) else str(value) for value in row]
        for row in summary.itertuples(index=False)
    ]
    return {"header": list(summary.columns), "rows": rows}


def _learner_row(score: dict[str, Any]) -> dict[str, Any]:
    p_churn = score["p_churn"]
    campaign = score.get("campaign_id")
    return {
        "customer_id": str(score["customer_id"]),
        "anchor": learner_anchor(str(score["customer_id"])),
        "priority": str(score["priority"]),
        "action": str(score["action"]),
        # The campaign the day's decision triggered and its channel ("—": none, or not stored).
        "campaign": "—"
        if campaign is None or pd.isna(campaign)
        else (f"{campaign} ({score.get('channel') or '—'})"),
        "p_churn": "—" if pd.isna(p_churn) else f"{p_churn:.0%}",
        **value_texts(score),  # value at risk, expected months, projected value
    }


def learner_anchor(customer_id: str) -> str:
    """The section id of a learner (``learner-<id>``, characters outside [\\w-] made ``_``)."""
    return "learner-" + re.sub(r"[^\w-]", "_", customer_id)


__all__ = [
    "TAG_HISTORY_SCHEMA",
    "ReportInputs",
    "build_report",
    "call_list_section",
    "latest_report_html",
    "learner_anchor",
    "render_html",
    "report_path",
    "tag_history",
    "transitions_by_rule",
    "write_report",
]
