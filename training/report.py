"""What a training run tells people: the comparison table (rich) and the model card (markdown)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from rich import box
from rich.table import Table

from features.catalog import load_catalog
from training.early_warning import CLAIM_LEAD_DAYS, CLAIM_PRECISION, EarlyWarning, OperatingPoint
from training.evaluate import Evaluation
from training.tuning import TuningResult

COLUMNS: dict[str, str] = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "lift_top_decile": "lift top 10%",
    "recall_at_precision_85": "recall @ precision 0.85",
    "brier": "Brier",
    "ece": "ECE",
    "log_loss": "log loss",
}
"""Metric -> header in markdown (model card, comparison.md)."""
SHORT_HEADERS: dict[str, str] = {
    "roc_auc": "ROC",
    "pr_auc": "PR",
    "lift_top_decile": "lift",
    "recall_at_precision_85": "R@P85",
    "brier": "Brier",
    "ece": "ECE",
    "log_loss": "LL",
}
"""Metric -> header in the terminal table (it must fit 80 columns); the caption spells them out."""
BASELINE_TEXT = {
    "recency": "days since the last event alone, mapped to a probability by an isotonic fit on "
    "the training slice",
    "risk_rules": "the number of the 12 risk indicators that are up (rules only), mapped the "
    "same way",
    "logistic": "logistic regression on the same features (median imputation + missing "
    "indicators, scaling, one-hot product)",
    "oracle": "the simulator's true probability p_true given the full latent state (simulated "
    "data only): the ceiling any model can reach",
}


EARLY_COLUMNS: dict[str, str] = {
    "threshold": "threshold",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
    "caught_share": "churners caught ≥N d ahead",
    "lead": "lead p25/p50/p75 (d)",
}
"""Early-warning column -> header (terminal table, model card, report)."""


def _cell(value: float, name: str = "") -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.3f}"


def _lead_cell(row: pd.Series) -> str:
    quartiles = (row["lead_q1"], row["lead_median"], row["lead_q3"])
    return "/".join("-" if pd.isna(q) else f"{q:.0f}" for q in quartiles)


def _early_cells(row: pd.Series) -> list[str]:
    cells = [_cell(row[name]) for name in EARLY_COLUMNS if name != "lead"]
    return [*cells, _lead_cell(row)]


def early_warning_caption(early: EarlyWarning) -> str:
    """What the early-warning table shows, the claim's verdict and anything left out."""
    text = (
        f"Each scorer at its own early_warning threshold, chosen on the calibration slice "
        f"(lowest with precision >= {CLAIM_PRECISION} at {CLAIM_LEAD_DAYS}+ days' lead, else its "
        "best reachable precision), measured on the test slice. A flag is right when the "
        "learner's churn becomes final (ST_006) N to 30 days later; learner-days already within "
        "N days of ST_006 are left out at that N. "
    )
    if "model" in early.points:
        text += early.claim("model") + "."
    for scorer, why in early.skipped.items():
        text += f" {scorer}: not shown, {why}."
    return text


def _compact_table(title: str) -> Table:
    """The terminal tables' common look: left title, one rule under the header, tight cells."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def early_warning_table(early: EarlyWarning, *, title: str = "Early warning") -> Table:
    """The early-warning table (scorer x N = 7/14/21) for the terminal."""
    table = _compact_table(f"{title}: is churn flagged N days before ST_006?")
    table.add_column("scorer", style="bold", no_wrap=True)
    table.add_column("N", justify="right")
    for header in ("thr", "prec", "recall", "acc", "caught", "lead q1/q2/q3"):
        table.add_column(header, justify="right", no_wrap=True)
    for (scorer, days), row in early.table.iterrows():
        style = "green" if row["precision"] >= CLAIM_PRECISION else None
        table.add_row(str(scorer), str(days), *_early_cells(row), style=style)
    table.caption = (
        "thr: the scorer's early_warning threshold; prec/recall/acc over learner-days; caught: "
        "share of churners flagged N+ days ahead; lead: quartiles of days ahead of the caught"
    )
    return table


def early_warning_markdown(early: EarlyWarning) -> str:
    """The early-warning table as markdown (model card, report)."""
    lines = [
        "| scorer | N (days) | " + " | ".join(EARLY_COLUMNS.values()) + " |",
        "|" + " --- |" * (len(EARLY_COLUMNS) + 2),
    ]
    for (scorer, days), row in early.table.iterrows():
        lines.append(f"| {scorer} | {days} | " + " | ".join(_early_cells(row)) + " |")
    return "\n".join(lines)


def operating_points_markdown(points: Mapping[str, OperatingPoint]) -> str:
    """The model's named operating points as markdown bullets (name, threshold, how chosen)."""
    return "\n".join(
        f"- `@{name}`: {point.threshold:.4f} ({point.rule})" for name, point in points.items()
    )


def comparison_table(evaluation: Evaluation, *, title: str = "Test slice") -> Table:
    """The model vs baselines (vs oracle) table, with a model/oracle ratio row when available."""
    table = _compact_table(f"{title}: {evaluation.rows} rows")
    table.add_column("scorer", style="bold", no_wrap=True)
    for header in SHORT_HEADERS.values():
        table.add_column(header, justify="right", no_wrap=True)
    for scorer, row in evaluation.table.iterrows():
        table.add_row(str(scorer), *(_cell(row.get(name, float("nan"))) for name in COLUMNS))
    if evaluation.ratios:
        ratios = [_cell(evaluation.ratios.get(name, float("nan"))) for name in COLUMNS]
        table.add_row("model/oracle", *ratios, style="italic")
    table.caption = "ROC/PR: AUCs; lift: top decile; R@P85: recall at precision 0.85; LL: log loss"
    if evaluation.ratios:
        table.caption += f"; model/oracle on the {evaluation.oracle_rows} rows the truth covers"
    return table


def markdown_table(evaluation: Evaluation) -> str:
    """The comparison table as markdown (model card, closing notes)."""
    header = "| scorer | " + " | ".join(COLUMNS.values()) + " |"
    lines = [header, "|" + " --- |" * (len(COLUMNS) + 1)]
    for scorer, row in evaluation.table.iterrows():
        cells = " | ".join(_cell(row.get(name, float("nan"))) for name in COLUMNS)
        lines.append(f"| {scorer} | {cells} |")
    if evaluation.ratios:
        cells = " | ".join(_cell(evaluation.ratios.get(name, float("nan"))) for name in COLUMNS)
        lines.append(f"| model/oracle | {cells} |")
    return "\n".join(lines)


def _key_values(values: Mapping[str, object]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in values.items())


def _label_text(data: Mapping[str, object]) -> str:
    horizon = data["data.horizon_days"]
    if data["data.label_source"] == "labels file":
        return (
            "Bring-your-own labels: the labels file's (customer_id, as_of) rows are the rows; its "
            f"`churned` column is the label. Splits purge {horizon} days between slices."
        )
    return (
        f"churned(t) = 1 iff the learner has no event in [t, t + {horizon} days) or a "
        "`subscription_cancelled` event in it (DESIGN §4). Rows are the eligible learners at "
        f"observation dates every {data['data.every_days']} days; rows whose label window is not "
        "complete are not used."
    )


def _early_warning_section(early: EarlyWarning | None) -> str:
    """The card's "Early warning" and "Operating points" sections ('' when not measured)."""
    if early is None:
        return ""
    return f"""## Early warning (the brief's "85% accuracy 14 days in advance")
Definition: for a learner-day t on the test slice, the scorer flags the learner when its
probability is at least its `early_warning` threshold. The flag is right at N days when the
learner's churn becomes final (ST_006: 30 days without events, or the day after a cancellation)
N to 30 days after t. Learner-days already within N days of ST_006 are left out at that N (a
warning cannot be N days early there). Precision = right flags / flags; recall = flagged churners
N+ days out / all of them; accuracy = right decisions / learner-days. Churners caught: share of
churn episodes whose earliest flag came N+ days before ST_006; lead: quartiles of those days.

{early_warning_markdown(early)}

{early_warning_caption(early)}

## Operating points (recorded with the model version; the rules use them by name)
{operating_points_markdown(early.operating_points)}

"""


def model_card(
    *,
    model_name: str,
    data: Mapping[str, object],
    split: Mapping[str, object],
    tuning: TuningResult,
    evaluation: Evaluation,
    feature_names: list[str],
) -> str:
    """A short markdown model card: data window, label, features, tuning, metrics, baselines."""
    catalog = load_catalog()
    features = "\n".join(f"- `{name}`: {catalog.get(name).label}" for name in feature_names)
    baselines = "\n".join(
        f"- **{name}**: {BASELINE_TEXT[name]}"
        for name in evaluation.table.index
        if name in BASELINE_TEXT
    )
    return f"""# Model card: {model_name}

LightGBM on point-in-time window features, calibrated with Venn-Abers on a later time slice;
outputs p_churn, [p_low, p_high] and a decision confidence (see `models/churn.py`).

## Data window
{_key_values(data)}

## Time split (purged by the label window)
{_key_values(split)}

## Label
{_label_text(data)}

## Features ({len(feature_names)})
{features}

## Tuning
Optuna, seeded TPE, median pruning on LightGBM iterations; objective: mean {tuning.metric} over
expanding-window purged CV folds of the training slice. Best trial {tuning.best_trial}:
{tuning.metric} {tuning.best_score:.4f} ({tuning.trials_complete} complete, {tuning.trials_pruned}
pruned, {tuning.seconds:.0f} s); {tuning.num_boost_round} boosting rounds.

## Metrics on the test slice
{markdown_table(evaluation)}

{_early_warning_section(evaluation.early_warning)}
## Baselines
{baselines}
"""
