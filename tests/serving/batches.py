"""Builders of decision frames and batches for the serving tests, and a child batch process."""

from __future__ import annotations

import functools
import time
import traceback
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

import serving.infra.store as store_module
from serving.core.frames import RunRecord
from serving.core.overrides import OverridePolicy, OverrideRequest
from serving.core.tags import STATUS_TAGS
from serving.infra.rulesets import load_rules
from serving.infra.store import StateStore


@functools.cache
def packaged_policy() -> OverridePolicy:
    """The override rules of the packaged ``tags.yaml``."""
    return OverridePolicy.of(load_rules())


def set_override(
    store: StateStore,
    customer_id: str,
    tag: str | None,
    *,
    actor: str,
    reason: str,
    now: datetime,
    **when: date | int | None,
) -> dict:
    """``store.set_override`` of the packaged policy; ``when``: effective, expires, days."""
    request = OverrideRequest(customer_id=customer_id, actor=actor, reason=reason, tag=tag, **when)  # type: ignore[arg-type]
    return store.set_override(request, policy=packaged_policy(), now=now)


FIRST_DAY = [("a", None, "ST_001"), ("b", None, "ST_001"), ("c", None, "ST_001")]


def at(day: date, hour: int = 2) -> datetime:
    """An aware instant on ``day``: batches run at 02:00 UTC, people act later in the day."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def decisions(day: date, moves: list[tuple[str, str | None, str]]) -> pd.DataFrame:
    """A decision frame shaped like ``rules.decide``'s (categorical columns, held reasons).

    Each move is (customer_id, from_tag, to_tag); it is a change when the tags differ.
    """
    rows = []
    for customer_id, from_tag, to_tag in moves:
        changed = from_tag != to_tag
        rows.append(
            {
                "customer_id": customer_id,
                "as_of": pd.Timestamp(day),
                "from_tag": from_tag,
                "to_tag": to_tag,
                "changed": changed,
                "rule_id": "R07" if changed else None,
                "description": f"moves to {to_tag}" if changed else "no rule fired",
                "signal": "rules" if changed else None,
                "p_churn": 0.4,
                "confidence": 0.8,
                "priority": "P2",
                "action": "call",
                "control": customer_id.endswith("z"),
                "value_at_risk": 12.0,
                "expected_months": 2.5,
                "projected_value": 75.0,
                "held": None,
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("from_tag", "to_tag"):
        frame[column] = pd.Categorical(frame[column], categories=list(STATUS_TAGS))
    for column in ("rule_id", "description", "signal", "priority", "action", "held"):
        frame[column] = frame[column].astype("category")
    return frame


def tag_learner(store, customer_id: str, tag: str, as_of: date) -> None:
    """Give a learner of an empty store a tag on ``as_of`` (a move written as the API writes it)."""
    store.apply_learners(
        as_of,
        decisions(as_of, [(customer_id, None, tag)]),
        run_id="api-test",
        model_version=None,
        now=at(as_of, 10),
    )


def apply(
    store: StateStore, day: date, moves, *, run_id: str | None = None, **options
) -> RunRecord:
    """Apply a rules-only batch of ``moves`` on ``day`` at 02:00 UTC."""
    return store.apply_batch(
        day,
        decisions(day, moves),
        None,
        run_id=run_id or f"run-{day}",
        model_version=None,
        rules_only=True,
        now=at(day),
        **options,
    )


def run_paused_batch(
    url: str, work_dir: str, pause_s: float, scores_dir: str | None = None
) -> None:
    """Child process body: apply the batch in ``job.pkl`` as run ``child``, pausing midway.

    The pause comes inside the batch transaction, after scores and transitions are written and
    before the status rows: the child touches ``inside``, then waits up to ``pause_s`` for ``go``
    (and half a second more, so the parent's writer is already waiting for the lock). A failure
    is written to ``error.txt`` for the parent to show.
    """
    work = Path(work_dir)
    write_status = store_module.update_status_from_run

    def paused_write_status(conn, run_id: str) -> None:
        (work / "inside").touch()
        deadline = time.monotonic() + pause_s
        while time.monotonic() < deadline and not (work / "go").exists():
            time.sleep(0.02)
        time.sleep(0.5)
        write_status(conn, run_id)

    store_module.update_status_from_run = paused_write_status  # this process only
    job = pd.read_pickle(work / "job.pkl")
    try:
        store = store_module.StateStore(url, scores_dir=scores_dir, auto_migrate=False)
        store.apply_batch(
            job["as_of"],
            job["decisions"],
            None,
            run_id="child",
            model_version=None,
            rules_only=True,
            now=job["now"],
        )
    except BaseException:
        (work / "error.txt").write_text(traceback.format_exc())
        raise
