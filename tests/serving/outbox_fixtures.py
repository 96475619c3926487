"""Builders of campaign plans for the outbox tests, and a child batch killed mid-write.

The plans are hand-made frames of ``MESSAGE_COLUMNS`` (the planner of ``serving.core.campaigns``
is another package's); the renderer is a tiny function of the template id and context.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

import serving.infra.outbox_store as outbox_store_module
from rules.campaigns import SAMPLE_CONTEXT
from serving.core.messages import PAIR_COLUMNS, SHARED_CONTEXT, CampaignPlan, message_key
from serving.core.planning import BatchDay
from serving.infra.store import StateStore
from tests.serving.batches import at, decisions


def messages(
    day: date,
    learners: list[str],
    *,
    channel: str = "email",
    campaign: str = "CP_01",
    steps: tuple[int, ...] = (0,),
    delay_days: int = 0,
    control: tuple[str, ...] = (),
    template: str | None = None,
) -> pd.DataFrame:
    """One message per learner and step, planned on ``day``, due ``delay_days`` x step later."""
    rows = [
        {
            "message_id": message_key(day, learner, campaign, step),
            "planned_on": pd.Timestamp(day),
            "due_on": pd.Timestamp(day + timedelta(days=delay_days * step)),
            "customer_id": learner,
            "campaign_id": campaign,
            "step": step,
            "channel": channel,
            "template_id": template or f"{campaign.lower()}_step{step}",
            "variant": "",
            "control": learner in control,
            "context": json.dumps(
                {**SAMPLE_CONTEXT, "customer_id": learner, "name": learner.upper()}
            ),
        }
        for learner in learners
        for step in steps
    ]
    return pd.DataFrame(rows)


def plan(frame: pd.DataFrame, cancels: list[tuple[str, str]] | None = None) -> CampaignPlan:
    """A plan of ``frame``'s messages, cancelling the (customer_id, campaign_id) ``cancels``."""
    pairs = pd.DataFrame(cancels or [], columns=list(PAIR_COLUMNS))
    return CampaignPlan(messages=frame, cancels=pairs)


def batch_day(day: date, run_id: str | None = None, *, replace: bool = False) -> BatchDay:
    return BatchDay(day, run_id or f"run-{day}", None, True, at(day), replace)


def apply_with_plan(store: StateStore, day: date, moves, day_plan: CampaignPlan | None, **options):
    """A rules-only batch of ``moves`` on ``day`` with its campaign plan."""
    run_id = options.pop("run_id", None)
    return store.apply_day(batch_day(day, run_id, **options), decisions(day, moves), None, day_plan)


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def render(template_id: str, channel: str, variant: str, context: dict) -> Rendered:
    """A renderer as small as can be: the template id and the learner's name."""
    return Rendered(subject=f"[{template_id}] for {context['name']}", body=f"Hi {context['name']}")


def run_paused_planned_batch(url: str, work_dir: str, pause_s: float) -> None:
    """Child process body: apply the day in ``job.pkl`` with its plan, pausing right after the
    messages are inserted (inside the batch transaction) until ``go`` or ``pause_s``."""
    work = Path(work_dir)
    insert = outbox_store_module.insert_messages

    def paused_insert(conn, rows) -> int:
        inserted = insert(conn, rows)
        (work / "inside").touch()
        deadline = time.monotonic() + pause_s
        while time.monotonic() < deadline and not (work / "go").exists():
            time.sleep(0.02)
        return inserted

    outbox_store_module.insert_messages = paused_insert  # this process only
    job = pd.read_pickle(work / "job.pkl")
    try:
        store = StateStore(url, auto_migrate=False)
        store.apply_day(batch_day(job["as_of"], "child"), job["decisions"], None, job["plan"])
    except BaseException:
        (work / "error.txt").write_text(traceback.format_exc())
        raise


def assert_contexts_once(rows: pd.DataFrame) -> None:
    """Each (learner, campaign)'s context is on its first step only, SHARED_CONTEXT after."""
    first = ~rows.duplicated(["customer_id", "campaign_id"])
    assert (rows.loc[first, "context"] != SHARED_CONTEXT).all()
    assert (rows.loc[~first, "context"] == SHARED_CONTEXT).all()
