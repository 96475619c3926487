"""``lstep report``: one self-contained HTML page for CS leads (issue 6, item 2).

The page is built from what the service already keeps, as it stood at ``as_of``:

- **KPIs** (``#kpis``): ``serving.kpis.compute_kpis`` on the audit log and stored scores, each
  against its target, with treated vs control where the KPI splits by group (recovery).
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

import base64
import io
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.catalog import load_catalog
from features.windows import build_features, read_features
from models.explain import Explanation, explain_frame, format_points, waterfall_plot
from serving.batch import snapshot_path
from serving.kpis import KPI_TARGETS, Kpi, compute_kpis
from serving.scoring import Champion
from serving.settings import Settings
from serving.store import StateStore
from serving.store_models import STATUS_TAGS

TEMPLATE_NAME = "report.html.j2"
REPORT_NAME = re.compile(r"^report-(\d{4}-\d{2}-\d{2})\.html$")
PSI_WARNING = 0.2
"""PSI above this is flagged: the usual "significant shift" threshold."""
CALL_LIST_LENGTH = 10
DRIFT_FEATURES = 8
WATERFALL_REASONS = 8
LISTED_REASONS = 3
URGENT_PRIORITIES: tuple[str, ...] = ("P1", "P2")
MODEL_CARD_FILE = "model_card.md"
COMPARISON_FILE = "comparison.md"
CALIBRATION_PLOT = "plots/calibration.png"
_PSI_BINS = 10
_PSI_FLOOR = 1e-4  # an empty bin would make the log ratio infinite
_TAG_COLORS = ("#2e86c1", "#28b463", "#7d3c98", "#e67e22", "#f1c40f", "#7f8c8d")

TAG_HISTORY_SCHEMA = pa.DataFrameSchema(
    {
        "day": pa.Column("datetime64[us]", unique=True),
        **{tag: pa.Column(int, pa.Check.ge(0)) for tag in STATUS_TAGS},
    },
    strict=True,
    coerce=True,
    name="tag history",
)
DRIFT_SCHEMA = pa.DataFrameSchema(
    {
        "feature": pa.Column(str, unique=True),
        "label": pa.Column(str),
        "psi": pa.Column(float, pa.Check.ge(0.0)),
        "warning": pa.Column(bool),
    },
    strict=True,
    coerce=True,
    name="feature drift",
)


# --- public entry points --------------------------------------------------------------------------


def report_path(reports_path: Path, as_of: date) -> Path:
    """``<reports_path>/report-YYYY-MM-DD.html``: the default file of the report of ``as_of``."""
    return Path(reports_path) / f"report-{as_of.isoformat()}.html"


def build_report(
    store: StateStore,
    settings: Settings,
    *,
    as_of: date,
    champion: Champion | None,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    top: int = CALL_LIST_LENGTH,
) -> str:
    """The report of ``as_of`` as one self-contained HTML document.

    Args:
        store: the state store (audit log, scores, batch runs).
        settings: where the feature snapshots (``data_path``) and MLflow (``tracking_uri``) are.
        as_of: the day described; nothing recorded after it is used.
        champion: the loaded champion (``serving.scoring.load_champion``); None for rules-only,
            in which case the call list carries risk indicators and the model card says so.
        events: validated events (``features.validation.load_valid_inputs``), used to rebuild
            call-list features when the day has no snapshot.
        customers: validated customers (KPI cohorts, feature rebuilding).
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
    context = {
        "as_of": as_of,
        "batch_days": len(days),
        "model_version": None if champion is None else champion.version,
        "kpis": kpi_rows(compute_kpis(transitions, store.scores_frame(), customers, as_of=as_of)),
        "tags": tags_section(tag_history(transitions, [day.date() for day in days])),
        "rules": rules_section(transitions_by_rule(transitions)),
        "call_list": call_list_section(store, settings, as_of, champion, events, customers, top),
        "model_card": model_card_section(settings, champion),
        "drift": drift_section(settings.data_path, as_of, champion),
    }
    return render_html(context)


def write_report(
    store: StateStore,
    settings: Settings,
    *,
    as_of: date,
    champion: Champion | None,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    out: Path | None = None,
    top: int = CALL_LIST_LENGTH,
) -> Path:
    """Build the report and write it atomically (``out``, default ``report_path``).

    Returns:
        The written file. A reader (the service's page route) never sees half a file.
    """
    html = build_report(
        store, settings, as_of=as_of, champion=champion, events=events, customers=customers,
        top=top,
    )  # fmt: skip
    target = Path(out) if out is not None else report_path(settings.reports_path, as_of)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(target)
    return target


def latest_report_html(reports_path: Path) -> str | None:
    """The newest ``report-YYYY-MM-DD.html`` under ``reports_path`` (by its date), or None.

    For the service's read-only page route: files with other names (``--out`` elsewhere,
    partial writes) are ignored.
    """
    directory = Path(reports_path)
    if not directory.is_dir():
        return None
    dated = [
        (match.group(1), path)
        for path in directory.iterdir()
        if (match := REPORT_NAME.match(path.name)) and path.is_file()
    ]
    if not dated:
        return None
    return max(dated)[1].read_text(encoding="utf-8")


def render_html(context: dict[str, Any]) -> str:
    """Render the packaged Jinja2 template (HTML autoescaped) with ``context``."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("serving", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE_NAME).render(**context)


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
        One row per day (``TAG_HISTORY_SCHEMA``): ``day`` and a count column per status tag.
    """
    log = transitions.sort_values("id")
    rows = []
    for day in sorted(days):
        known = log[log["as_of"] <= pd.Timestamp(day)]
        latest = known.drop_duplicates("customer_id", keep="last")["to_tag"].astype(str)
        counts = latest.value_counts()
        rows.append({"day": pd.Timestamp(day), **{t: int(counts.get(t, 0)) for t in STATUS_TAGS}})
    frame = pd.DataFrame(rows, columns=["day", *STATUS_TAGS])
    return TAG_HISTORY_SCHEMA.validate(frame)


def transitions_by_rule(transitions: pd.DataFrame) -> pd.Series:
    """Audit-log rows per rule id (manual moves under ``manual``), most frequent first."""
    rules = transitions["rule_id"].astype(object).where(transitions["rule_id"].notna(), "manual")
    counts = rules.astype(str).value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable").rename("transitions")


def tags_section(history: pd.DataFrame) -> dict[str, Any]:
    """The stacked-area chart of tag counts per batch day, and the latest day's counts."""
    latest = history.iloc[-1]
    return {
        "chart": png_data_uri(_tag_area_figure(history)),
        "days": len(history),
        "latest": [
            {"tag": tag, "name": name, "count": int(latest[tag])}
            for tag, name in STATUS_TAGS.items()
        ],
    }


def rules_section(counts: pd.Series) -> dict[str, Any]:
    """The bar chart and table of transitions by rule (no chart when the log is empty)."""
    rows = [{"rule": str(rule), "count": int(count)} for rule, count in counts.items()]
    chart = png_data_uri(_rules_bar_figure(counts)) if len(counts) else None
    return {"chart": chart, "rows": rows, "total": int(counts.sum())}


def _tag_area_figure(history: pd.DataFrame) -> Any:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.6))
    days = history["day"].to_numpy()
    counts = [history[tag].to_numpy() for tag in STATUS_TAGS]
    labels = [f"{tag} {name}" for tag, name in STATUS_TAGS.items()]
    if len(history) == 1:  # one day has no area: widen it to a visible band
        days = np.array([days[0] - np.timedelta64(12, "h"), days[0] + np.timedelta64(12, "h")])
        counts = [np.repeat(column, 2) for column in counts]
    axes.stackplot(days, *counts, labels=labels, colors=_TAG_COLORS, alpha=0.9)
    axes.set_ylabel("learners")
    axes.set_title("learners per status tag at the end of each batch day")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def _rules_bar_figure(counts: pd.Series) -> Any:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(counts) + 1.4))
    axes.barh(list(counts.index), counts.to_numpy(), color="#2e86c1")
    axes.invert_yaxis()
    axes.set_xlabel("transitions in the audit log")
    axes.set_title("transitions by rule")
    figure.tight_layout()
    return figure


# --- call list ------------------------------------------------------------------------------------


def call_list(scores: pd.DataFrame, top: int) -> pd.DataFrame:
    """The day's P1/P2 learners outside the control group: P1 first, then by value at risk."""
    urgent = scores[scores["priority"].isin(URGENT_PRIORITIES) & ~scores["control"]]
    ordered = urgent.sort_values(
        ["priority", "value_at_risk", "customer_id"], ascending=[True, False, True]
    )
    return ordered.head(top).reset_index(drop=True)


def call_list_section(
    store: StateStore,
    settings: Settings,
    as_of: date,
    champion: Champion | None,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    top: int,
) -> dict[str, Any]:
    """The call-list table and one section per listed learner (reasons and waterfall)."""
    scores = store.scores_frame(as_of)
    listed = call_list(scores, top)
    urgent = scores[scores["priority"].isin(URGENT_PRIORITIES)]
    features = _listed_features(settings.data_path, as_of, listed, events, customers)
    if champion is not None and not features.empty:
        learners = _explained_learners(listed, features, champion)
    else:
        learners = _flagged_learners(listed, features)
    return {
        "learners": learners,
        "urgent": len(urgent),
        "control_left_out": int(urgent["control"].sum()),
        "scored": len(scores),
    }


def _listed_features(
    data_dir: Path,
    as_of: date,
    listed: pd.DataFrame,
    events: pd.DataFrame,
    customers: pd.DataFrame,
) -> pd.DataFrame:
    """The listed learners' features on ``as_of``: the day's snapshot, else rebuilt from events."""
    if listed.empty:
        return listed.iloc[:0]
    snapshot = snapshot_path(data_dir, as_of)
    if snapshot.exists():
        features = read_features(snapshot)
        return features[features["customer_id"].isin(listed["customer_id"])]
    spine = listed[["customer_id"]].assign(as_of=pd.Timestamp(as_of).as_unit("us"))
    return build_features(events, customers, spine=spine)


def _learner_row(score: dict[str, Any]) -> dict[str, Any]:
    p_churn = score["p_churn"]
    return {
        "customer_id": str(score["customer_id"]),
        "anchor": learner_anchor(str(score["customer_id"])),
        "priority": str(score["priority"]),
        "action": str(score["action"]),
        "p_churn": "—" if pd.isna(p_churn) else f"{p_churn:.0%}",
        "value_at_risk": f"{float(score['value_at_risk'] or 0.0):,.2f}",
    }


def learner_anchor(customer_id: str) -> str:
    """The section id of a learner (``learner-<id>``, characters outside [\\w-] made ``_``)."""
    return "learner-" + re.sub(r"[^\w-]", "_", customer_id)


def _explained_learners(
    listed: pd.DataFrame, features: pd.DataFrame, champion: Champion
) -> list[dict[str, Any]]:
    """Call-list rows with SHAP reason codes and a waterfall each."""
    explanations = {e.customer_id: e for e in explain_frame(champion.model, features)}
    learners = []
    for score in listed.to_dict("records"):
        row = _learner_row(score)
        explanation = explanations.get(row["customer_id"])
        if explanation is None:
            raise ValueError(
                f"report: no features for call-list learner {row['customer_id']} on "
                f"{pd.Timestamp(score['as_of']).date()} (snapshot and events both lack them)"
            )
        row["reasons"] = [_reason_row(reason) for reason in explanation.top(LISTED_REASONS)]
        row["waterfall"] = _waterfall_uri(explanation)
        row["base_rate"] = f"{explanation.p_base:.1%}"
        row["raw_probability"] = f"{explanation.p_raw:.1%}"
        learners.append(row)
    return learners


def _reason_row(reason: Any) -> dict[str, str]:
    return {"text": reason.text, "points": format_points(reason.points)}


def _flagged_learners(listed: pd.DataFrame, features: pd.DataFrame) -> list[dict[str, Any]]:
    """Rules-only call-list rows: the risk indicators that are on stand in for reason codes."""
    catalog = load_catalog()
    flags = [name for name in catalog.risk_indicators if name in features.columns]
    by_id = features.set_index("customer_id") if not features.empty else features
    learners = []
    for score in listed.to_dict("records"):
        row = _learner_row(score)
        values = by_id.loc[row["customer_id"]] if row["customer_id"] in by_id.index else None
        on = [] if values is None else [name for name in flags if bool(values[name])]
        row["reasons"] = [{"text": catalog.get(name).label, "points": ""} for name in on]
        row["waterfall"] = None
        learners.append(row)
    return learners


def _waterfall_uri(explanation: Explanation) -> str:
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


# --- model card -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChampionArtifacts:
    """What the champion's training run logged that the report shows.

    Attributes:
        version: the registered version holding the alias.
        run_id: the MLflow run that produced it (looked up, never configured).
        comparison: the metrics table of the model and its baselines (``comparison.md``).
        card: the model card markdown (``model_card.md``).
        calibration_png: the calibration plot (``plots/calibration.png``).
    """

    version: str
    run_id: str
    comparison: str
    card: str
    calibration_png: bytes


def champion_artifacts(settings: Settings, champion: Champion) -> ChampionArtifacts:
    """Download the champion run's card, comparison table and calibration plot from MLflow.

    Raises:
        FileNotFoundError: the run lacks one of the artifacts (naming the run and the file).
    """
    import mlflow

    client = mlflow.MlflowClient(
        tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
    )
    run_id = str(client.get_model_version(settings.model_name, champion.version).run_id)
    logged = {item.path for item in client.list_artifacts(run_id)}
    logged |= {item.path for item in client.list_artifacts(run_id, "plots")}
    for name in (MODEL_CARD_FILE, COMPARISON_FILE, CALIBRATION_PLOT):
        if name not in logged:
            raise FileNotFoundError(
                f"report: the champion v{champion.version}'s run {run_id} has no artifact {name} "
                "(train it with `lstep train`)"
            )
    with tempfile.TemporaryDirectory(prefix="lstep-report-") as scratch:
        files = {
            n: Path(client.download_artifacts(run_id, n, scratch))
            for n in (MODEL_CARD_FILE, COMPARISON_FILE, CALIBRATION_PLOT)
        }
        return ChampionArtifacts(
            version=champion.version,
            run_id=run_id,
            comparison=files[COMPARISON_FILE].read_text(encoding="utf-8"),
            card=files[MODEL_CARD_FILE].read_text(encoding="utf-8"),
            calibration_png=files[CALIBRATION_PLOT].read_bytes(),
        )


def model_card_section(settings: Settings, champion: Champion | None) -> dict[str, Any] | None:
    """Metrics with baselines, the calibration plot and the card's text; None without a model."""
    if champion is None:
        return None
    artifacts = champion_artifacts(settings, champion)
    header, rows = markdown_table(artifacts.comparison)
    return {
        "version": artifacts.version,
        "run_id": artifacts.run_id,
        "metrics_header": header,
        "metrics_rows": rows,
        "baselines": markdown_bullets(markdown_section(artifacts.card, "Baselines")),
        "data_window": markdown_bullets(markdown_section(artifacts.card, "Data window")),
        "calibration": "data:image/png;base64,"
        + base64.b64encode(artifacts.calibration_png).decode("ascii"),
        "card": artifacts.card,
    }


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table in markdown ``text``: (header cells, body rows of cells).

    Raises:
        ValueError: when the text holds no pipe table.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError("report: expected a markdown table (| a | b |), found none")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    body = [row for row in cells[1:] if not all(set(cell) <= set("-: ") for cell in row)]
    return cells[0], body


def markdown_section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown document ('' when absent)."""
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1).strip() if match else ""


def markdown_bullets(text: str) -> list[str]:
    """The ``- item`` lines of a markdown block, without the dash and the ``**``/backticks."""
    items = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    return [item.replace("**", "").replace("`", "") for item in items]


# --- drift ----------------------------------------------------------------------------------------


def population_stability_index(
    expected: pd.Series, actual: pd.Series, *, bins: int = _PSI_BINS
) -> float:
    """PSI = sum over bins of (a - e) * ln(a / e), a and e the bins' shares in each sample.

    Numbers are binned on the deciles of ``expected`` (ties merged); flags, text and numbers with
    few distinct values are compared category by category. Missing values form a bin of their
    own, so a feature that starts going missing shows up as drift. Empty bins are floored at
    1e-4 so that the log stays finite.

    Raises:
        ValueError: when either sample is empty.
    """
    if expected.empty or actual.empty:
        raise ValueError(
            f"PSI of {expected.name!r}: needs two non-empty samples "
            f"(got {len(expected)} and {len(actual)} rows)"
        )
    expected_bins, actual_bins = _psi_bins(expected, actual, bins)
    categories = sorted(set(expected_bins) | set(actual_bins))
    e = expected_bins.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    a = actual_bins.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    e, a = np.maximum(e.to_numpy(), _PSI_FLOOR), np.maximum(a.to_numpy(), _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _psi_bins(expected: pd.Series, actual: pd.Series, bins: int) -> tuple[pd.Series, pd.Series]:
    """Both samples as bin labels (strings); missing values labelled ``missing``."""
    numeric = pd.api.types.is_numeric_dtype(expected) and not pd.api.types.is_bool_dtype(expected)
    values = expected.dropna()
    if numeric and values.nunique() > bins:
        inner = np.unique(np.quantile(values.astype(float), np.linspace(0, 1, bins + 1))[1:-1])
        edges = np.concatenate([[-np.inf], inner, [np.inf]])

        def label(series: pd.Series) -> pd.Series:
            cut = pd.cut(series.astype(float), edges, labels=False, include_lowest=True)
            return cut.map(lambda b: "missing" if pd.isna(b) else f"bin{int(b):02d}")

        return label(expected), label(actual)
    return _category_labels(expected), _category_labels(actual)


def _category_labels(series: pd.Series) -> pd.Series:
    return series.astype(object).map(lambda value: "missing" if pd.isna(value) else str(value))


def batch_snapshots(data_dir: Path, until: date) -> list[tuple[date, Path]]:
    """Batch-day feature snapshots (``features/as_of=...``) on or before ``until``, oldest first."""
    directory = snapshot_path(data_dir, until).parent
    if not directory.is_dir():
        return []
    named = re.compile(r"^as_of=(\d{4}-\d{2}-\d{2})\.parquet$")
    dated = [
        (date.fromisoformat(match.group(1)), path)
        for path in directory.iterdir()
        if (match := named.match(path.name))
    ]
    return sorted((day, path) for day, path in dated if day <= until)


def feature_drift(
    baseline: pd.DataFrame, current: pd.DataFrame, features: Sequence[str]
) -> pd.DataFrame:
    """PSI of each named feature between two feature frames (``DRIFT_SCHEMA``), largest first.

    Raises:
        ValueError: a named feature is missing from either frame (naming it and the frame).
    """
    for name, frame in (("baseline", baseline), ("current", current)):
        missing = [feature for feature in features if feature not in frame.columns]
        if missing:
            raise ValueError(f"drift: the {name} feature snapshot lacks columns {missing}")
    catalog = load_catalog()
    rows = []
    for feature in features:
        psi = population_stability_index(baseline[feature], current[feature])
        label = catalog.get(feature).label if feature in catalog.names else feature
        rows.append({"feature": feature, "label": label, "psi": psi, "warning": psi > PSI_WARNING})
    frame = pd.DataFrame(rows, columns=["feature", "label", "psi", "warning"])
    return DRIFT_SCHEMA.validate(frame.sort_values("psi", ascending=False, ignore_index=True))


def drift_features(champion: Champion | None, snapshot: pd.DataFrame) -> tuple[list[str], str]:
    """Which features to watch and why: the champion's top by gain, else every catalog feature."""
    if champion is not None:
        gains = champion.model.booster.feature_importance(importance_type="gain")
        names = champion.model.booster.feature_name()
        ranked = [name for _, name in sorted(zip(gains, names, strict=True), reverse=True)]
        chosen = ranked[:DRIFT_FEATURES]
        return chosen, f"the champion v{champion.version}'s {len(chosen)} features of most gain"
    present = [name for name in load_catalog().names if name in snapshot.columns]
    return present, "every catalog feature (no champion to rank them)"


def drift_section(data_dir: Path, as_of: date, champion: Champion | None) -> dict[str, Any]:
    """PSI of the top features between the earliest and the latest batch-day snapshots."""
    snapshots = batch_snapshots(data_dir, as_of)
    if len(snapshots) < 2:
        return {"rows": [], "note": f"{len(snapshots)} batch-day feature snapshot(s) under "
                f"{snapshot_path(data_dir, as_of).parent} by {as_of}: drift needs two"}  # fmt: skip
    (first_day, first_path), (last_day, last_path) = snapshots[0], snapshots[-1]
    baseline, current = read_features(first_path), read_features(last_path)
    features, why = drift_features(champion, current)
    drift = feature_drift(baseline, current, features)
    if champion is None:
        drift = drift.head(DRIFT_FEATURES)
    return {
        "rows": [{**row, "psi": f"{row['psi']:.3f}"} for row in drift.to_dict("records")],
        "first_day": first_day,
        "last_day": last_day,
        "first_rows": len(baseline),
        "last_rows": len(current),
        "features_from": why,
        "warnings": int(drift["warning"].sum()),
        "threshold": PSI_WARNING,
        "note": None,
    }


# --- images ---------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: figures only become PNG bytes
    import matplotlib.pyplot as plt

    return plt


def png_data_uri(figure: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = [
    "DRIFT_SCHEMA",
    "PSI_WARNING",
    "TAG_HISTORY_SCHEMA",
    "ChampionArtifacts",
    "batch_snapshots",
    "build_report",
    "call_list",
    "champion_artifacts",
    "feature_drift",
    "latest_report_html",
    "learner_anchor",
    "markdown_table",
    "population_stability_index",
    "render_html",
    "report_path",
    "tag_history",
    "transitions_by_rule",
    "write_report",
]
