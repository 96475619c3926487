"""The value and model-health pages' server time on ``benchmarks/dashboard_pages.py``'s store.

What the synthetic store lacks for these pages is added (fast, no simulation):

- an event log of sessions (~12 per learner over the 60 days before the batch days and the
  batch days), so that campaign conversions and churn labels can be read;
- campaign runs in the outbox: 30% of the learners get one of six campaigns on a random batch
  day (10% of them control, suppressed), an e-mail sent, a CSM task for a fifth of the treated;
- the latest batch day's feature snapshot (``build_features`` over that log);
- a stand-in champion: the model page's figures need the champion's feature names, label window
  and training window, not a trained booster; its card (read from MLflow once per version, not
  per page) is a fixed table here. Its label window is 7 days, so that the 14 batch days have
  seven labelled days to calibrate on, as a 30-day model has after 37 batch days.

The pages are timed as ``dashboard_pages.py`` times the others: cold (reads), then warm.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from features.catalog import load_catalog
from features.windows import build_features
from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_model_page import ChampionView, model_page
from serving.app.dashboard_pages import Links
from serving.app.dashboard_value_page import value_page
from serving.core.messages import message_key
from serving.infra.snapshots import write_feature_snapshot

CAMPAIGNS = np.array(["CP_01", "CP_04", "CP_09", "CP_12", "CP_20", "CP_22"])
CARD = {
    "version": "bench", "run_id": "bench", "metrics_header": ["scorer", "ROC-AUC"],
    "metrics_rows": [["model", "0.88"]], "early_warning": None, "data_window": [],
    "calibration": "data:image/png;base64,", "card": "",
}  # fmt: skip


def add_events(root: Path, ids: np.ndarray, first, end, rng: np.random.Generator) -> None:
    """~12 sessions per learner between 60 days before ``first`` and ``end`` (a day)."""
    counts = rng.poisson(12, len(ids))
    who = np.repeat(ids, counts)
    start = pd.Timestamp(first - timedelta(days=60), tz="UTC")
    span = (pd.Timestamp(end, tz="UTC") - start).total_seconds()
    seconds = rng.uniform(0, span - 1, len(who))
    events = pd.DataFrame(
        {
            "customer_id": who, "ts": start + pd.to_timedelta(seconds, unit="s"),
            "event_type": "session", "duration_s": rng.uniform(60, 1800, len(who)),
            "channel": "web", "item": None,
        }
    )  # fmt: skip
    events["ts"] = events["ts"].astype("datetime64[us, UTC]")  # the event store's unit
    events.sort_values(["customer_id", "ts"]).to_parquet(root / "events.parquet", index=False)


def add_outbox(root: Path, ids: np.ndarray, first, days: int, rng: np.random.Generator) -> int:
    """Campaign runs for 30% of the learners; returns the rows written."""
    chosen = ids[rng.random(len(ids)) < 0.3]
    planned = [first + timedelta(days=int(d)) for d in rng.integers(0, days, len(chosen))]
    campaign = rng.choice(CAMPAIGNS, len(chosen))
    control = rng.random(len(chosen)) < 0.1
    task = ~control & (rng.random(len(chosen)) < 0.2)
    rows = [
        _row(who, day, cp, 0, "email", bool(ctl))
        for who, day, cp, ctl in zip(chosen, planned, campaign, control, strict=True)
    ]
    rows += [
        _row(who, day, cp, 1, "csm_task", False)
        for who, day, cp, t in zip(chosen, planned, campaign, task, strict=True)
        if t
    ]
    columns = "message_id, planned_on, due_on, customer_id, campaign_id, step, channel, "
    columns += "template_id, variant, control, context, state, tries, run_id, created_at"
    with sqlite3.connect(root / "state.db") as conn:
        conn.executemany(f"INSERT INTO outbox ({columns}) VALUES ({', '.join('?' * 15)})", rows)
    return len(rows)


def _row(who: str, day, campaign: str, step: int, channel: str, control: bool) -> tuple:
    due = day + timedelta(days=2 * step)
    state = "suppressed" if control else "sent"
    return (
        message_key(day, who, campaign, step), day.isoformat(), due.isoformat(), who, campaign,
        step, channel, "t", "", control, "{}", state, 0, f"run-{day}", "2026-07-01 00:00:00",
    )  # fmt: skip


def stand_in(first) -> SimpleNamespace:
    """A ChampionSource whose champion has the catalog's features and a 7-day label window."""
    model = SimpleNamespace(feature_names=load_catalog().names, horizon_days=7)
    champion = SimpleNamespace(model=model, version="bench")
    params = {
        "split.train.first_as_of": (first - timedelta(days=60)).isoformat(),
        "split.train.last_as_of": (first - timedelta(days=30)).isoformat(),
    }
    view = ChampionView(champion, CARD, params)  # type: ignore[arg-type]
    return SimpleNamespace(current=lambda: view)


def add_value_inputs(source: DashboardSource, root: Path) -> None:
    """Add what the value and model pages read to the store ``build`` wrote at ``root``."""
    from dashboard_pages import FIRST  # run as a script: benchmarks/ is on the path

    rng = np.random.default_rng(11)
    customers = pd.read_parquet(root / "customers.parquet")
    customers["enrolled_at"] = customers["enrolled_at"].astype("datetime64[us, UTC]")
    customers.to_parquet(root / "customers.parquet", index=False)  # the event store's unit
    ids = customers["customer_id"].to_numpy()
    days = len(source.store.runs())
    add_events(root, ids, FIRST, FIRST + timedelta(days=days), rng)
    rows = add_outbox(root, ids, FIRST, days, rng)
    last = FIRST + timedelta(days=days - 1)
    snapshot = build_features(root / "events.parquet", root / "customers.parquet", as_of=[last])
    write_feature_snapshot(snapshot, root, last)
    print(f"added {rows:,} outbox rows, the event log and the {last} snapshot")


def time_value_and_model(
    source: DashboardSource, root: Path, timed: Callable[[str, Callable], float], now
) -> None:
    """Add what the two pages read to the store, then time them cold and warm."""
    from dashboard_pages import FIRST  # run as a script: benchmarks/ is on the path

    add_value_inputs(source, root)
    cache, champions = DashboardCache(source, lambda: now), stand_in(FIRST)
    links = Links("/dashboard")
    pro = DashboardFilters(tier="PT_001")
    timed(
        "value, cold (outbox, events, scores)", lambda: value_page(cache, DashboardFilters(), links)
    )
    timed("value, warm", lambda: value_page(cache, DashboardFilters(), links))
    timed("value, tier filter, first", lambda: value_page(cache, pro, links))
    timed("value, tier filter, again", lambda: value_page(cache, pro, links))
    timed("model, cold (labels, training features)", lambda: model_page(cache, champions, links))
    timed("model, warm", lambda: model_page(cache, champions, links))
