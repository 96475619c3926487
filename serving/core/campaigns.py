"""The campaign planner: which messages a batch day plans, and which pending ones it cancels.

Pure and vectorised (no clock, no I/O): the day's decisions (with ``campaign_id`` from the rules
engine, ``rules.campaigns``), the day's features, the catalogue and the outbox rows that matter
(still pending; planned within the frequency-cap windows) go in; a :class:`CampaignPlan` comes
out, which the batch writes to the outbox in the day's transaction.

- A learner whose decision names a campaign is enrolled today unless that campaign already has
  pending steps for them, or the campaign's messages planned for them in its cap window before
  today (the ``per_days`` days up to yesterday, cancelled ones aside: ``in_window``) plus its
  cadence would exceed ``max_messages`` (a rerun of the day plans the same messages again, with
  the same ids, and the store inserts none of them twice). Enrolment plans one message per
  cadence step, due on ``as_of + delay_days``, on the step's channel personalised by the
  behaviour tags.
- The A/B variant is a stable hash of (learner, campaign) (``rules.interventions.control_draw``)
  over the variants' cumulative weights; the control flag is the decision's (the outbox keeps a
  control learner's messages as suppressed, never sends them).
- A pending message is cancelled when the learner's decision today meets its campaign's exit
  condition (``exit: {tag_not_in: [ST_005]}``: the learner left ST_005).
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd

from rules.campaign_matching import step_channels
from rules.campaigns import Campaign, Catalogue
from rules.interventions import control_draw
from serving.core.messages import (
    MESSAGE_COLUMNS,
    PAIR_COLUMNS,
    CampaignPlan,
    message_key,
    no_pairs,
)
from serving.core.tags import STATUS_TAGS

TOP_REASONS = 3
"""Reasons a message's context quotes."""
_COUNTS = ("lessons_total", "lessons_30d", "milestones_total", "milestones_30d")


def plan_campaigns(
    decisions: pd.DataFrame,
    features: pd.DataFrame,
    catalogue: Catalogue,
    as_of: date,
    *,
    pending: pd.DataFrame,
    in_window: pd.DataFrame,
) -> CampaignPlan:
    """Plan the day's campaign messages and the cancellations (see the module docstring).

    Args:
        decisions: the day's decisions: customer_id, to_tag, campaign_id, control,
            behaviour_tags, priority, action, why.
        features: the day's feature rows (customer_id, product_tag, the lesson and milestone
            counts, days_since_last_event; ``name`` when the customers file has one).
        catalogue: the campaigns (``ruleset.campaigns``).
        as_of: the batch day.
        pending: the (customer_id, campaign_id) pairs with messages still to send, planned
            before ``as_of``: one row per pair.
        in_window: per learner and campaign, the ``messages`` planned within that campaign's
            cap window before ``as_of`` (``cap_windows``), cancelled ones aside: customer_id,
            campaign_id, messages. One row per pair, not per message: at a million learners
            the messages of the windows are millions of rows a day. Only the pairs of
            ``candidate_pairs(decisions, pending)`` are read; others may be there or not.
    """
    return CampaignPlan(
        messages=_planned(decisions, features, catalogue, as_of, pending, in_window),
        cancels=_cancelled(decisions, catalogue, pending),
    )


def _planned(
    decisions: pd.DataFrame,
    features: pd.DataFrame,
    catalogue: Catalogue,
    as_of: date,
    pending: pd.DataFrame,
    in_window: pd.DataFrame,
) -> pd.DataFrame:
    """One message per cadence step of every learner enrolled today."""
    triggered = _triggered(decisions)
    triggered = _without_pending(triggered, pending)
    triggered = _under_cap(triggered, catalogue, in_window)
    if triggered.empty:
        return _empty_messages()
    contexts = _contexts(triggered, features, catalogue)
    frames = [
        _campaign_messages(catalogue.get(campaign_id), rows, contexts.loc[rows.index], as_of)
        for campaign_id, rows in triggered.groupby("campaign_id", sort=True)
    ]
    return pd.concat(frames, ignore_index=True)[list(MESSAGE_COLUMNS)]


def _triggered(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions that name a campaign, its id as a string."""
    triggered = decisions.loc[decisions["campaign_id"].notna()]
    return triggered.assign(campaign_id=triggered["campaign_id"].astype(str))


def candidate_pairs(decisions: pd.DataFrame, pending: pd.DataFrame) -> pd.DataFrame:
    """The (customer_id, campaign_id) pairs the planner may enrol today: named by the day's
    decisions, without pending steps. Only their ``in_window`` counts change the plan (a
    learner's messages of other campaigns, or of a day they trigger nothing, do not), so only
    theirs are read."""
    pairs = _without_pending(_triggered(decisions), pending)[list(PAIR_COLUMNS)]
    return pairs.astype({"customer_id": str}).reset_index(drop=True)


def _without_pending(triggered: pd.DataFrame, pending: pd.DataFrame) -> pd.DataFrame:
    """Drop learners who still have pending steps of the campaign their decision triggers."""
    if pending.empty:
        return triggered
    running = pending[list(PAIR_COLUMNS)].astype(str).drop_duplicates()
    merged = triggered.merge(running, on=["customer_id", "campaign_id"], how="left", indicator=True)
    return triggered.loc[(merged["_merge"] == "left_only").to_numpy()]


def cap_windows(catalogue: Catalogue) -> dict[str, int]:
    """Each campaign's frequency-cap window in days (``frequency_cap.per_days``): what the store
    counts a learner's earlier messages over (``in_window``)."""
    return {campaign.id: campaign.frequency_cap.per_days for campaign in catalogue.campaigns}


def _under_cap(
    triggered: pd.DataFrame, catalogue: Catalogue, in_window: pd.DataFrame
) -> pd.DataFrame:
    """Keep learners whose messages of the campaign within its window leave room for a cadence."""
    if in_window.empty or triggered.empty:
        return triggered
    counts = in_window[["customer_id", "campaign_id", "messages"]].astype(
        {"customer_id": str, "campaign_id": str}
    )
    merged = triggered.merge(counts, on=["customer_id", "campaign_id"], how="left")
    room = pd.Series(
        {c.id: c.frequency_cap.max_messages - len(c.steps) for c in catalogue.campaigns}
    )
    allowed = merged["campaign_id"].map(room).to_numpy()
    used = merged["messages"].fillna(0).to_numpy()
    return triggered.loc[used <= allowed]


def _campaign_messages(
    campaign: Campaign, rows: pd.DataFrame, contexts: pd.Series, as_of: date
) -> pd.DataFrame:
    """The messages of one campaign's enrolled learners: one block per cadence step."""
    ids = rows["customer_id"].astype(str).to_numpy(object)
    behaviours = rows["behaviour_tags"].fillna("").astype(str).to_numpy(object)
    variants = assign_variants(ids, campaign)
    blocks = []
    for number, step in enumerate(campaign.steps):
        blocks.append(
            pd.DataFrame(
                {
                    "message_id": [message_key(as_of, i, campaign.id, number) for i in ids],
                    "planned_on": as_of,
                    "due_on": as_of + timedelta(days=step.delay_days),
                    "customer_id": ids,
                    "campaign_id": campaign.id,
                    "step": number,
                    "channel": step_channels(step, behaviours),
                    "template_id": step.template,
                    "variant": variants,
                    "control": rows["control"].to_numpy(bool),
                    "context": contexts.to_numpy(object),
                }
            )
        )
    return pd.concat(blocks, ignore_index=True)


def assign_variants(customer_ids: np.ndarray, campaign: Campaign) -> np.ndarray:
    """Each learner's A/B variant of ``campaign``: a stable hash over the weights ("" for none).

    The draw is ``rules.interventions.control_draw(customer_id, campaign_id)``: uniform in
    [0, 1), the same on every run and machine; variant k takes the draws in its share of the
    cumulative weights.
    """
    if not campaign.variants:
        return np.full(len(customer_ids), "", dtype=object)
    weights = np.array([variant.weight for variant in campaign.variants], dtype=float)
    bounds = np.cumsum(weights) / weights.sum()
    draws = control_draw(customer_ids, campaign.id) if len(customer_ids) else np.array([])
    index = np.minimum(np.searchsorted(bounds, draws, side="right"), len(bounds) - 1)
    return np.array([variant.id for variant in campaign.variants], dtype=object)[index]


def _contexts(triggered: pd.DataFrame, features: pd.DataFrame, catalogue: Catalogue) -> pd.Series:
    """The template context of each triggered learner, as JSON (``rules.campaigns`` fields).

    Built from plain columns (numpy object arrays, Python lists) and joined row by row with
    ``json.dumps``: a frame's ``to_dict`` costs several times more for 100k learners.
    """
    wanted = ["customer_id", "product_tag", "days_since_last_event", *_COUNTS, "name"]
    present = [name for name in wanted if name in features.columns]
    rows = triggered.merge(features[present], on="customer_id", how="left", suffixes=("", "_f"))
    count = len(rows)
    numbers = {
        name: _whole(rows[name]) if name in rows else np.zeros(count, np.int64)
        for name in [*_COUNTS, "days_since_last_event"]
    }
    names = _texts(rows["name"]) if "name" in rows else [None] * count
    names = [None if n is None or not str(n).strip() else str(n) for n in names]
    tags = _texts(rows["to_tag"])
    products = _texts(rows["product_tag"]) if "product_tag" in rows else [None] * count
    campaign_ids = _texts(rows["campaign_id"])
    campaign_names = {c.id: c.name for c in catalogue.campaigns}
    columns = {  # in key order: the JSON is written with sorted keys
        "action": _texts(rows["action"]),
        "behaviours": [_ids(text) for text in _texts(rows["behaviour_tags"])],
        "campaign_id": campaign_ids,
        "campaign_name": [campaign_names.get(c) for c in campaign_ids],
        "customer_id": _texts(rows["customer_id"]),
        "days_inactive": numbers["days_since_last_event"].tolist(),
        "greeting": ["Hello" if name is None else f"Hi {name}" for name in names],
        "lessons_30d": numbers["lessons_30d"].tolist(),
        "lessons_total": numbers["lessons_total"].tolist(),
        "milestones_30d": numbers["milestones_30d"].tolist(),
        "milestones_total": numbers["milestones_total"].tolist(),
        "name": names,
        "next_milestone": (numbers["milestones_total"] + 1).tolist(),
        "priority": _texts(rows["priority"]),
        "product_name": [catalogue.products.get(p) if p else None for p in products],
        "product_tag": products,
        "reasons": [_reasons(text) for text in _texts(rows["why"])],
        "tag": tags,
        "tag_name": [STATUS_TAGS.get(tag) if tag else None for tag in tags],
    }
    keys = list(columns)
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    rows_of_values = zip(*columns.values(), strict=True)
    texts = [encode(dict(zip(keys, values, strict=True))) for values in rows_of_values]
    return pd.Series(texts, index=triggered.index, dtype=object)


def _texts(column: pd.Series) -> list:
    """A column as Python strings, None where null (Arrow's vectorised conversion, not a loop)."""
    values = column.astype(object).to_numpy(dtype=object, na_value=None)
    return [None if value is None else str(value) for value in values.tolist()]


def _whole(values: pd.Series) -> np.ndarray:
    """Counts as Python-friendly integers; a missing count is 0."""
    return pd.to_numeric(values, errors="coerce").fillna(0).round().astype(np.int64).to_numpy()


def _reasons(why: object) -> list[str]:
    """The first reasons of a decision's ``why`` ("a; b; c"), none when it has none."""
    if not isinstance(why, str) or not why.strip():
        return []
    return [part.strip() for part in why.split(";") if part.strip()][:TOP_REASONS]


def _ids(tags: object) -> list[str]:
    return [part for part in tags.split(",") if part] if isinstance(tags, str) else []


def _cancelled(
    decisions: pd.DataFrame, catalogue: Catalogue, pending: pd.DataFrame
) -> pd.DataFrame:
    """Pending (learner, campaign) pairs whose learner's tag today meets the campaign's exit."""
    if pending.empty or decisions.empty:
        return no_pairs()
    today = decisions[["customer_id", "to_tag"]].astype({"customer_id": str})
    rows = pending.astype({"customer_id": str, "campaign_id": str}).merge(
        today, on="customer_id", how="inner"
    )
    cancel = np.zeros(len(rows), bool)
    tags = rows["to_tag"].astype(object)
    for campaign in catalogue.campaigns:
        if campaign.exit is None:
            continue
        mine = (rows["campaign_id"] == campaign.id).to_numpy()
        if mine.any():
            cancel |= mine & campaign.exit.met(tags)
    pairs = rows.loc[cancel, list(PAIR_COLUMNS)].drop_duplicates()
    return pairs.sort_values(list(PAIR_COLUMNS), ignore_index=True)


def _empty_messages() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in MESSAGE_COLUMNS})
    return frame.astype({"step": np.int64, "control": bool})


__all__ = [
    "CampaignPlan",
    "assign_variants",
    "candidate_pairs",
    "cap_windows",
    "plan_campaigns",
]
