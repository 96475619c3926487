"""The value page's figures: what the at-risk learners are worth, and what each campaign earned.

Pure over frames, the day asked (``as_of``) passed in; the store, the outbox and the event log are
read at the edge (``serving.app.dashboard_value_page``).

**Intervention ROI** of a campaign = value saved / what its messages cost, where

- the **uplift** is the campaign's measured effect (``serving.app.campaign_effect``: treated vs
  control re-engagement per learner's first run, Newcombe's interval), never recomputed here; a
  campaign whose sample cannot tell (``enough`` false: the minimum detectable effect is above the
  smallest effect worth knowing) is **not measured yet**: its ROI is left out, not guessed;
- the **value saved** = uplift x the sum of the treated learners' value at risk on the run's
  trigger day (``planned_on``). Value at risk is the monthly value x the months the learner's
  risk costs against a healthy learner (``rules.lifetime``): the money the call list ranks by, so
  the ROI is in the priority's currency, and each learner re-engaged beyond the control's rate is
  counted as brought back to a healthy learner's lifetime (no more: a re-engaged learner may slip
  again). The uplift's interval is carried through: saved low/high = ci_low/ci_high x that sum;
- the **cost** = every message of the treated learners' first runs that was sent, at its
  channel's cost per contact (``rules.costs``, ``campaigns.yaml``). Suppressed (control), pending
  and dead messages cost nothing. A campaign on free channels has no ROI (nothing spent), only a
  value saved.

Only treated learners whose conversion window is complete are counted, as in the uplift.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from serving.app.campaign_effect import (
    ALL_VARIANTS,
    EffectSettings,
    effect_table,
    learner_outcomes,
)
from serving.app.dashboard_data import query_connection
from serving.core.messages import SENT

ROI_COLUMNS: tuple[str, ...] = (
    "campaign_id",
    "treated",  # treated learners with a complete window
    "control",  # control learners with a complete window
    "pending",  # learners of either arm whose window is not complete yet
    "contacts",  # messages sent to the treated learners' first runs
    "cost",
    "value_at_risk",  # sum over the treated learners, on their trigger day
    "uplift",
    "ci_low",
    "ci_high",
    "value_saved",
    "saved_low",
    "saved_high",
    "roi",  # value saved / cost; NaN when nothing was spent or the uplift is not measured
    "roi_low",
    "roi_high",
    "measured",  # campaign_effect's verdict: the sample is large enough to tell
)
"""Columns of ``campaign_roi``, one row per campaign."""

ROI_INPUTS: tuple[str, ...] = (
    "campaign_id", "variant", "control", "complete", "sent", "opened", "clicked",
    "feedback_converted", "log_converted", "contacts", "cost", "value_at_risk",
)  # fmt: skip
"""The columns of ``learner_roi`` that ``roi_of_learners`` counts (a segment's rows are narrowed
to these: the learner ids and days are the bulk of a take)."""


def run_costs(outbox: pd.DataFrame, as_of: date, costs: Mapping[str, float]) -> pd.DataFrame:
    """Each learner's first run of each campaign: its trigger day, contacts and cost.

    The run is ``campaign_effect.first_runs``' (every message of the campaign planned for the
    learner on their earliest trigger day), found in DuckDB: ``first_runs`` also gathers each
    run's message ids as lists, a Python pass per run the cost does not need.

    Args:
        outbox: outbox rows (``campaign_effect.OUTBOX_COLUMNS``).
        as_of: the day asked; runs planned later are not counted (as ``first_runs``).
        costs: cost per contact by channel (``ChannelCosts.by_channel``).

    Returns:
        customer_id, campaign_id, planned_on, contacts (messages sent), cost (their cost).

    Raises:
        ValueError: a sent message's channel has no cost (naming the channels).
    """
    columns = ["customer_id", "campaign_id", "planned_on", "channel", "state"]
    messages = outbox.loc[pd.to_datetime(outbox["planned_on"]) <= pd.Timestamp(as_of), columns]
    sent = messages["state"] == SENT
    unpriced = sorted(set(messages.loc[sent, "channel"]) - set(costs))
    if unpriced:
        raise ValueError(f"no cost per contact for channel(s) {unpriced}: set them in costs")
    priced = messages.assign(
        planned_on=pd.to_datetime(messages["planned_on"]),
        contacts=sent.astype("int64"),
        cost=messages["channel"].map(dict(costs)).where(sent, 0.0).astype(float),
    )
    con = query_connection()
    con.register("messages", priced.drop(columns=["channel", "state"]))
    return con.execute(
        """
        SELECT customer_id, campaign_id, planned_on, sum(contacts)::BIGINT AS contacts,
               sum(cost)::DOUBLE AS cost
        FROM messages SEMI JOIN (
            SELECT customer_id, campaign_id, min(planned_on) AS planned_on
            FROM messages GROUP BY customer_id, campaign_id
        ) USING (customer_id, campaign_id, planned_on)
        GROUP BY ALL ORDER BY customer_id, campaign_id
        """
    ).df()


def learner_roi(
    outbox: pd.DataFrame,
    feedback: pd.DataFrame,
    events: pd.DataFrame,
    scores: pd.DataFrame,
    as_of: date,
    costs: Mapping[str, float],
    settings: EffectSettings | None = None,
) -> pd.DataFrame:
    """One row per learner and campaign (the first run): what the ROI counts of them.

    Each learner's row depends on that learner's messages alone (and on the log's end, which
    ``events`` carries for everyone), so the rows of a segment of learners are these rows
    narrowed to them: the dashboard finds them once per day asked, and a filter only narrows.

    Args:
        outbox, feedback, events, as_of, settings: as ``campaign_roi``'s.
        scores: stored scores (``as_of``, ``customer_id``, ``value_at_risk``) of the trigger
            days; a learner without one counts as 0 value.
        costs: cost per contact by channel.

    Returns:
        ``campaign_effect.learner_outcomes``' columns plus ``contacts`` and ``cost`` of the run
        (``run_costs``) and ``value_at_risk`` on its trigger day.
    """
    outcomes = learner_outcomes(outbox, feedback, events, as_of, settings)
    runs = run_costs(outbox, as_of, costs)
    con = query_connection()
    con.register("outcomes", outcomes.astype({"customer_id": str, "campaign_id": str}))
    con.register("runs", runs.astype({"customer_id": str, "campaign_id": str}))
    con.register("scores", scores[["as_of", "customer_id", "value_at_risk"]])
    return con.execute(
        """
        SELECT o.*, coalesce(r.contacts, 0)::BIGINT AS contacts,
               coalesce(r.cost, 0)::DOUBLE AS cost,
               coalesce(v.value_at_risk, 0)::DOUBLE AS value_at_risk
        FROM outcomes o LEFT JOIN runs r USING (customer_id, campaign_id)
        LEFT JOIN (
            SELECT s.customer_id, r.campaign_id, sum(s.value_at_risk) AS value_at_risk
            FROM runs r JOIN scores s ON s.customer_id = r.customer_id
                AND s.as_of::DATE = r.planned_on::DATE
            GROUP BY ALL
        ) v USING (customer_id, campaign_id)
        ORDER BY customer_id, campaign_id
        """
    ).df()


def treated_totals(rows: pd.DataFrame) -> pd.DataFrame:
    """Per campaign, the complete treated learners' count, contacts, cost and value at risk.

    Args:
        rows: ``learner_roi`` (or a segment of it; ``ROI_INPUTS`` are enough).
    """
    treated = rows[rows["complete"].to_numpy(bool) & ~rows["control"].to_numpy(bool)]
    totals = treated.groupby("campaign_id", sort=True).agg(
        treated=("campaign_id", "size"), contacts=("contacts", "sum"), cost=("cost", "sum"),
        value_at_risk=("value_at_risk", "sum"),
    )  # fmt: skip
    return totals.reset_index().astype({"contacts": "int64", "cost": float})


def campaign_rows(effect: pd.DataFrame) -> pd.DataFrame:
    """One effect row per campaign: its all-variants total when it has one, else its only row."""
    total = effect[effect["variant"] == ALL_VARIANTS]
    single = effect[~effect["campaign_id"].isin(total["campaign_id"])]
    return pd.concat([total, single]).sort_values("campaign_id", ignore_index=True)


def roi_table(effect: pd.DataFrame, totals: pd.DataFrame) -> pd.DataFrame:
    """``ROI_COLUMNS`` from the measured effect and the treated learners' totals.

    Args:
        effect: ``campaign_effect.effect_table`` (uplift, interval, ``enough``).
        totals: ``treated_totals``.
    """
    rows = campaign_rows(effect)[
        ["campaign_id", "suppressed", "pending", "uplift", "ci_low", "ci_high", "enough"]
    ]
    frame = rows.rename(columns={"suppressed": "control", "enough": "measured"}).merge(
        totals, on="campaign_id", how="left"
    )
    frame[["treated", "contacts"]] = frame[["treated", "contacts"]].fillna(0).astype("int64")
    frame[["cost", "value_at_risk"]] = frame[["cost", "value_at_risk"]].fillna(0.0)
    frame["measured"] = frame["measured"].astype(bool)
    for rate, saved, roi in (
        ("uplift", "value_saved", "roi"),
        ("ci_low", "saved_low", "roi_low"),
        ("ci_high", "saved_high", "roi_high"),
    ):
        frame[saved] = frame[rate] * frame["value_at_risk"]
        spent = frame["cost"].where(frame["cost"] > 0)  # nothing spent: no ratio
        frame[roi] = (frame[saved] / spent).where(frame["measured"], np.nan)
    return frame[list(ROI_COLUMNS)]


def campaign_roi(
    outbox: pd.DataFrame,
    feedback: pd.DataFrame,
    events: pd.DataFrame,
    scores: pd.DataFrame,
    as_of: date,
    costs: Mapping[str, float],
    settings: EffectSettings | None = None,
) -> pd.DataFrame:
    """The ROI of each campaign at ``as_of`` (``ROI_COLUMNS``; see the module docstring).

    Args:
        outbox: outbox rows (``campaign_effect.OUTBOX_COLUMNS``).
        feedback: feedback rows (``campaign_effect.FEEDBACK_COLUMNS``).
        events: the event log (``customer_id``, ``ts``, ``event_type``).
        scores: stored scores of the trigger days (``as_of``, ``customer_id``, ``value_at_risk``).
        as_of: the day asked (data time).
        costs: cost per contact by channel.
        settings: how the campaign effect is judged.
    """
    rows = learner_roi(outbox, feedback, events, scores, as_of, costs, settings)
    return roi_of_learners(rows, settings)


def roi_of_learners(rows: pd.DataFrame, settings: EffectSettings | None = None) -> pd.DataFrame:
    """``ROI_COLUMNS`` of the learners in ``rows`` (``learner_roi``, or a segment of it, its
    ``ROI_INPUTS`` enough): the measured effect (``campaign_effect.effect_table``) and the
    treated learners' totals."""
    return roi_table(effect_table(rows, settings), treated_totals(rows))


def spend_by_channel(outbox: pd.DataFrame, as_of: date, costs: Mapping[str, float]) -> pd.DataFrame:
    """Messages sent and their cost per channel, planned by ``as_of`` (every run, not only the
    first: what the campaigns cost in all).

    Returns:
        channel, cost_per_contact, sent, cost; one row per priced channel, in ``costs``' order.
    """
    planned = outbox[pd.to_datetime(outbox["planned_on"]) <= pd.Timestamp(as_of)]
    sent = planned.loc[planned["state"] == SENT, "channel"].value_counts()
    frame = pd.DataFrame({"channel": list(costs), "cost_per_contact": list(costs.values())})
    frame["sent"] = frame["channel"].map(sent).fillna(0).astype("int64")
    frame["cost"] = frame["sent"] * frame["cost_per_contact"]
    return frame


__all__ = [
    "ROI_COLUMNS",
    "ROI_INPUTS",
    "campaign_roi",
    "campaign_rows",
    "learner_roi",
    "roi_of_learners",
    "roi_table",
    "run_costs",
    "spend_by_channel",
    "treated_totals",
]
