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
  behaviour tags. A ``spread`` campaign (a recurring digest) enrols a learner only on their own
  day in every ``per_days`` (``rules.spread``), so that a population tagged on one day does not
  get it as one wave.
- The A/B variant is a stable hash of (learner, campaign) (``rules.interventions.control_draw``)
  over the variants' cumulative weights; the control flag is the decision's (the outbox keeps a
  control learner's messages as suppressed, never sends them).
- A pending message is cancelled when the learner's decision today meets its campaign's exit
  condition (``exit: {tag_not_in: [ST_005]}``: the learner left ST_005).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rules.campaign_matching import step_channels
from rules.campaigns import Campaign, Catalogue
from rules.codes import codes_of, one_array
from rules.interventions import control_draw
from rules.spread import on_their_day
from serving.core.frames import repeats_in
from serving.core.messages import PAIR_COLUMNS, CampaignPlan, no_pairs
from serving.core.planned import (
    ContextField,
    PlannedMessages,
    StepMessages,
    coded_texts,
    planned_messages,
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
    candidates: pd.DataFrame | None = None,
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
            ``candidate_pairs(decisions, pending, catalogue, as_of)`` are read; others may be
            there or not.
        candidates: ``candidate_pairs(decisions, pending, catalogue, as_of)`` when the caller
            holds it (the pairs are not matched against ``pending`` again); None works them out.
    """
    enrollable = _enrollable(decisions, pending, catalogue, as_of, candidates)
    return CampaignPlan(
        _planned(enrollable, features, catalogue, as_of, in_window),
        _cancelled(decisions, catalogue, pending),
    )


def _planned(
    enrollable: pd.DataFrame,
    features: pd.DataFrame,
    catalogue: Catalogue,
    as_of: date,
    in_window: pd.DataFrame,
) -> PlannedMessages:
    """One message per cadence step of every learner enrolled today (of the ``enrollable``
    decisions, those under the cap), campaign by campaign (in id order), step by step,
    learners in decision order."""
    triggered = _under_cap(enrollable, catalogue, in_window)
    customer_ids = _texts(triggered["customer_id"])
    codes, campaign_ids = pd.factorize(triggered["campaign_id"], sort=True)
    steps = [
        block
        for index, campaign_id in enumerate(campaign_ids)
        for block in _campaign_steps(
            catalogue.get(campaign_id), triggered, np.flatnonzero(codes == index), as_of
        )
    ]
    contexts = _context_fields(triggered, features, catalogue) if steps else {}
    return planned_messages(as_of, customer_ids, contexts, steps)


def _triggered(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions that name a campaign, its id as a string."""
    triggered = decisions.loc[decisions["campaign_id"].notna()]
    return triggered.assign(campaign_id=triggered["campaign_id"].astype(str))


def candidate_pairs(
    decisions: pd.DataFrame, pending: pd.DataFrame, catalogue: Catalogue, as_of: date
) -> pd.DataFrame:
    """The (customer_id, campaign_id) pairs the planner may enrol today: named by the day's
    decisions, without pending steps, and for a ``spread`` campaign on the learner's own day
    (``_on_their_days``). Only their ``in_window`` counts change the plan (a learner's
    messages of other campaigns, of a day they trigger nothing, or of a spread campaign's day
    not theirs, do not), so only theirs are read: at 1M learners 227k pairs of the 489k
    without pending steps, the digests' learners being a seventh or a fourteenth each day.

    Indexed by their decisions' row positions: ``plan_campaigns`` takes those rows back
    (``candidates``) instead of matching a million pairs against the pending ones again.
    """
    # the pair columns only: filtering every decision column copied ~0.28 s at 1M learners
    positions = decisions[list(PAIR_COLUMNS)].reset_index(drop=True)
    pairs = _on_their_days(_without_pending(_triggered(positions), pending), catalogue, as_of)
    return pairs.astype({"customer_id": str})


def _enrollable(
    decisions: pd.DataFrame,
    pending: pd.DataFrame,
    catalogue: Catalogue,
    as_of: date,
    candidates: pd.DataFrame | None,
) -> pd.DataFrame:
    """The decisions that name a campaign without pending steps, on their day of a spread one
    (``_triggered`` rows): those of ``candidate_pairs``, the caller's when it holds them."""
    if candidates is None:
        candidates = candidate_pairs(decisions, pending, catalogue, as_of)
    return _triggered(decisions.iloc[candidates.index.to_numpy()])


def _without_pending(triggered: pd.DataFrame, pending: pd.DataFrame) -> pd.DataFrame:
    """Drop learners who still have pending steps of the campaign their decision triggers."""
    if pending.empty:
        return triggered
    return triggered.loc[_pair_rows(triggered, pending) < 0]


def _pair_rows(pairs: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """The row of ``table`` holding each (customer_id, campaign_id) pair of ``pairs`` (the
    first such row), -1 where none does; ids compared as text (``str``), nulls equal.

    Pairs that name each learner once (a day's decisions, every caller's) are found by learner:
    each table row's learner is looked up among the pairs' (``codes_of``) and kept where its
    campaign is the pair's too. Coding both sides' ids and campaigns on one dictionary
    (``_pair_rows_coded``, still the way for pairs that repeat a learner) cost ~2 s of a 1M
    steady day's plan: two dictionary encodings of ~2.3M texts.
    """
    learners = _arrow_texts(pairs["customer_id"])
    if repeats_in(learners):
        return _pair_rows_coded(pairs, table)
    at = codes_of(_arrow_texts(table["customer_id"]), learners)  # each row's pair, or -1
    rows = np.flatnonzero(at >= 0)
    campaigns = _arrow_texts(pairs["campaign_id"]).take(pa.array(at[rows]))
    theirs = _arrow_texts(table["campaign_id"]).take(pa.array(rows))
    equal = pc.or_kleene(
        pc.equal(campaigns, theirs), pc.and_(campaigns.is_null(), theirs.is_null())
    )
    rows = rows[equal.fill_null(False).to_numpy(zero_copy_only=False)]
    found = np.full(len(pairs), -1, dtype=np.int64)
    matched, first = np.unique(at[rows], return_index=True)  # a pair's first row, if several
    found[matched] = rows[first]
    return found


def _pair_rows_coded(pairs: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """``_pair_rows`` of any pairs: each column's texts of both sides are coded on one
    dictionary, a pair becomes one integer and Arrow's hash table looks them up (the pandas
    merges on the two text columns this replaced cost a third of a steady day's plan)."""
    left = len(pairs)
    keys = np.zeros(left + len(table), np.int64)
    for name in PAIR_COLUMNS:
        texts = pa.concat_arrays([_arrow_texts(pairs[name]), _arrow_texts(table[name])])
        coded = pc.dictionary_encode(texts, null_encoding="encode")
        keys = keys * len(coded.dictionary) + coded.indices.to_numpy().astype(np.int64)
    return codes_of(keys[:left], keys[left:])


def _arrow_texts(column: pd.Series) -> pa.LargeStringArray:
    """A column's ``astype(str)`` as Arrow text: a ``str`` or categorical column's own Arrow
    data (no Python string made), anything else through ``astype(str)``. One array even when
    the column's Arrow data comes in chunks (a frame fetched from DuckDB in batches)."""
    if isinstance(column.dtype, pd.StringDtype | pd.CategoricalDtype) or column.dtype == object:
        try:
            texts = one_array(pa.array(column, from_pandas=True))
            if pa.types.is_dictionary(texts.type):
                texts = texts.dictionary_decode()
            if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
                return texts.cast(pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # mixed objects: astype(str) says what each one is
    values = column.astype(str).to_numpy(object)
    return pa.array(values, pa.large_string(), from_pandas=True)


def cap_windows(catalogue: Catalogue) -> dict[str, int]:
    """Each campaign's frequency-cap window in days (``frequency_cap.per_days``): what the store
    counts a learner's earlier messages over (``in_window``)."""
    return {campaign.id: campaign.frequency_cap.per_days for campaign in catalogue.campaigns}


def _on_their_days(triggered: pd.DataFrame, catalogue: Catalogue, as_of: date) -> pd.DataFrame:
    """Keep, of each ``spread`` campaign's learners, those whose own day ``as_of`` is in its
    cap window (``rules.spread``); other campaigns' as they are."""
    spread = [campaign for campaign in catalogue.campaigns if campaign.spread]
    if not spread or triggered.empty:
        return triggered
    campaign_ids = triggered["campaign_id"].to_numpy(object)
    customer_ids = _arrow_texts(triggered["customer_id"])
    keep = np.ones(len(triggered), dtype=bool)
    for campaign in spread:
        rows = np.flatnonzero(campaign_ids == campaign.id)
        if rows.size:
            ids = customer_ids.take(pa.array(rows))
            per_days = campaign.frequency_cap.per_days
            keep[rows] = on_their_day(ids, campaign.id, per_days, as_of)
    return triggered.loc[keep]


def _under_cap(
    triggered: pd.DataFrame, catalogue: Catalogue, in_window: pd.DataFrame
) -> pd.DataFrame:
    """Keep learners whose messages of the campaign within its window leave room for a cadence."""
    if in_window.empty or triggered.empty:
        return triggered
    at = _pair_rows(triggered, in_window)
    messages = in_window["messages"].to_numpy(dtype=float, na_value=np.nan)
    used = np.where(at >= 0, messages[np.maximum(at, 0)], np.nan)
    used = np.nan_to_num(used, nan=0.0)  # no row in the window (or a null count): none used
    room = pd.Series(
        {c.id: c.frequency_cap.max_messages - len(c.steps) for c in catalogue.campaigns}
    )
    allowed = triggered["campaign_id"].map(room).to_numpy()
    return triggered.loc[used <= allowed]


def _campaign_steps(
    campaign: Campaign, triggered: pd.DataFrame, learners: np.ndarray, as_of: date
) -> list[StepMessages]:
    """The messages of one campaign's enrolled learners (``learners``: their positions in
    ``triggered``): one block per cadence step."""
    rows = triggered[["customer_id", "behaviour_tags", "control"]].iloc[learners]  # not 20 more
    ids = rows["customer_id"].astype(str).to_numpy(object)
    behaviours = rows["behaviour_tags"].fillna("").astype(str).to_numpy(object)
    variants = assign_variants(ids, campaign)
    control = rows["control"].to_numpy(bool)
    return [
        StepMessages(
            campaign_id=campaign.id,
            step=number,
            due_on=as_of + timedelta(days=step.delay_days),
            template_id=step.template,
            learners=learners,
            channels=step_channels(step, behaviours),
            variants=variants,
            control=control,
        )
        for number, step in enumerate(campaign.steps)
    ]


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


def _context_fields(
    triggered: pd.DataFrame, features: pd.DataFrame, catalogue: Catalogue
) -> dict[str, ContextField]:
    """The template context of each triggered learner (``rules.campaigns`` fields), by field.

    Each field comes coded (``ContextField``): most have few distinct values (tags, counts,
    the reasons of a ``why`` many learners share), which are worked out and written once each.
    """
    wanted = ["product_tag", "days_since_last_event", *_COUNTS, "name"]
    rows = _with_features(triggered, features, [name for name in wanted if name in features])
    count = len(rows)
    numbers = {
        name: _whole(rows[name]) if name in rows else np.zeros(count, np.int64)
        for name in [*_COUNTS, "days_since_last_event"]
    }
    names = _names(rows["name"] if "name" in rows else pd.Series([None] * count, dtype=object))
    tags = _coded(rows["to_tag"])
    products = _coded(rows["product_tag"] if "product_tag" in rows else pd.Series([None] * count))
    campaigns = _coded(rows["campaign_id"])
    campaign_names = {c.id: c.name for c in catalogue.campaigns}
    return {  # in key order: the JSON is written with sorted keys
        "action": _coded(rows["action"]),
        "behaviours": _coded(rows["behaviour_tags"], _ids),
        "campaign_id": campaigns,
        "campaign_name": _mapped(campaigns, campaign_names.get),
        "customer_id": ContextField.each(_texts(rows["customer_id"])),
        "days_inactive": _counted(numbers["days_since_last_event"]),
        "greeting": _mapped(names, lambda name: "Hello" if name is None else f"Hi {name}"),
        "lessons_30d": _counted(numbers["lessons_30d"]),
        "lessons_total": _counted(numbers["lessons_total"]),
        "milestones_30d": _counted(numbers["milestones_30d"]),
        "milestones_total": _counted(numbers["milestones_total"]),
        "name": names,
        "next_milestone": _counted(numbers["milestones_total"] + 1),
        "priority": _coded(rows["priority"]),
        "product_name": _mapped(products, lambda p: catalogue.products.get(p) if p else None),
        "product_tag": products,
        "reasons": _mapped(_coded(rows["why"]), _reasons),
        "tag": tags,
        "tag_name": _mapped(tags, lambda tag: STATUS_TAGS.get(tag) if tag else None),
    }


def _with_features(
    triggered: pd.DataFrame, features: pd.DataFrame, names: list[str]
) -> pd.DataFrame:
    """``triggered`` with each learner's feature ``names`` (null where ``features`` lacks the
    learner; a decision's own column of the same name is kept), as a left merge on customer_id
    gives them.

    The triggered ids are looked up among the day's (sorted: searched, ``codes_of``) rather
    than merged: the merge's hash table over every learner of the day was ~1.5 s of a 1M
    steady day's plan, for the ~75k learners it enrols.
    """
    at = codes_of(triggered["customer_id"].array, features["customer_id"].array)
    taken = {
        name: pd.api.extensions.take(features[name].array, at, allow_fill=True)
        for name in names
        if name not in triggered.columns
    }
    return triggered.reset_index(drop=True).assign(**taken)


def _coded(column: pd.Series, read: Callable[[str | None], object] | None = None) -> ContextField:
    """A text column's field: each distinct text (None where missing), or ``read`` of it."""
    codes, texts = coded_texts(column)
    return ContextField(codes, texts if read is None else [read(text) for text in texts])


def _mapped(field: ContextField, read: Callable[[Any], object]) -> ContextField:
    """Another field of the same learners' values: ``read`` of each distinct value, once."""
    return ContextField(field.codes, [read(value) for value in field.values])


def _counted(numbers: np.ndarray) -> ContextField:
    """Whole numbers' field: each distinct number as a Python int."""
    codes, distinct = pd.factorize(numbers)
    return ContextField(codes, distinct.tolist())


def _names(column: pd.Series) -> ContextField:
    """Learners' names: None where missing or blank."""
    named = _coded(column)
    return _mapped(named, lambda name: None if name is None or not name.strip() else name)


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
    exits = {campaign.id: campaign.exit for campaign in catalogue.campaigns if campaign.exit}
    rows = pending[list(PAIR_COLUMNS)].astype(str)
    rows = rows.loc[rows["campaign_id"].isin(list(exits)).to_numpy()]  # none else is cancelled
    # Each pending learner's decision today (decisions hold one row per learner), by hash.
    today = codes_of(_arrow_texts(rows["customer_id"]), _arrow_texts(decisions["customer_id"]))
    rows = rows.loc[today >= 0]
    tags = pd.Series(decisions["to_tag"].astype(object).to_numpy()[today[today >= 0]])
    cancel = np.zeros(len(rows), bool)
    for campaign_id, exit_condition in exits.items():
        mine = (rows["campaign_id"] == campaign_id).to_numpy()
        if mine.any():
            cancel |= mine & exit_condition.met(tags)
    pairs = rows.loc[cancel].drop_duplicates()
    return pairs.sort_values(list(PAIR_COLUMNS), ignore_index=True)


__all__ = [
    "CampaignPlan",
    "assign_variants",
    "candidate_pairs",
    "cap_windows",
    "plan_campaigns",
]
