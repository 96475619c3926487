"""What a training run tells people: the comparison table (rich) and the model card (markdown)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from rich import box
from rich.table import Table

from features.catalog import load_catalog
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
    "flagged_14d_share": "churners flagged ≥14 d ahead",
    "median_lead_days": "median lead (days)",
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
    "flagged_14d_share": "≥14d",
    "median_lead_days": "lead",
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


def _cell(value: float, name: str = "") -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.0f}" if name == "median_lead_days" else f"{value:.3f}"


def comparison_table(evaluation: Evaluation, *, title: str = "Test slice") -> Table:
    """The model vs baselines (vs oracle) table, with a model/oracle ratio row when available."""
    table = Table(
        title=f"{title}: {evaluation.rows} rows",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("scorer", style="bold", no_wrap=True)
    for header in SHORT_HEADERS.values():
        table.add_column(header, justify="right", no_wrap=True)
    for scorer, row in evaluation.table.iterrows():
        table.add_row(str(scorer), *(_cell(row.get(name, float("nan")), name) for name in COLUMNS))
    if evaluation.ratios:
        ratios = [_cell(evaluation.ratios.get(name, float("nan"))) for name in COLUMNS]
        table.add_row("model/oracle", *ratios, style="italic")
    table.caption = (
        "ROC/PR: AUCs; lift: top decile; R@P85: recall at precision 0.85; LL: log loss; "
        f"≥14d: share of churners flagged (p >= {evaluation.flag_threshold}) 14+ days before "
        "ST_006; lead: their median days ahead"
    )
    if evaluation.ratios:
        table.caption += f"; model/oracle on the {evaluation.oracle_rows} rows the truth covers"
    return table


def markdown_table(evaluation: Evaluation) -> str:
    """The comparison table as markdown (model card, closing notes)."""
    header = "| scorer | " + " | ".join(COLUMNS.values()) + " |"
    lines = [header, "|" + " --- |" * (len(COLUMNS) + 1)]
    for scorer, row in evaluation.table.iterrows():
        cells = " | ".join(_cell(row.get(name, float("nan")), name) for name in COLUMNS)
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

Lead time: days from the first test date at which a scorer's probability reached
{evaluation.flag_threshold} to the learner's ST_006 date (30 days after the last event).

## Baselines
{baselines}
"""
