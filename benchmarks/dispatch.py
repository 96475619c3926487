"""Benchmark: ``lstep dispatch`` throughput (messages/s) to local webhook, SMTP and file sinks.

    .venv/bin/python benchmarks/dispatch.py [--messages 2000] [--store sqlite|postgresql]

For each sink, a fresh state store (SQLite in a temporary directory, or a fresh schema of the
PostgreSQL server at ``LSTEP_TEST_POSTGRES_URL``, default ``127.0.0.1:5432/test``) gets one
batch day planning ``--messages`` due messages on the sink's channel, one per learner (the
day's whole transaction, scores, transitions and messages, is timed: ``day_write_s``); then
``serving.app.dispatch.dispatch`` delivers them exactly as ``lstep dispatch`` does (claims of
200, one render, one send and one recorded outcome per message) to a real receiver on
127.0.0.1 in this process: ``http.server`` checking each HMAC signature (webhook), ``aiosmtpd``
parsing each mail (SMTP), or a JSONL file. Quiet hours are off and the cap is above one message
per learner, so nothing is deferred.

The receivers share the process (and its GIL) with the dispatcher, so the figures are a floor
for a dispatcher talking to a separate server. Printed: messages, seconds, messages/s per sink.

Measured here (2 cores shared with other jobs, load 4-5; 2,000 messages): SQLite store,
webhook ~740/s, SMTP ~320/s, file ~5,200/s; PostgreSQL store, webhook ~640/s, SMTP ~360/s, file
~1,900/s. Under heavier load (7 on 2 cores) the webhook fell to ~380/s and SMTP to ~190/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time as time_module
import uuid
from datetime import UTC, date, datetime, time
from pathlib import Path

import pandas as pd
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.app.dispatch import Dispatcher, DispatchOptions, dispatch
from serving.core.messages import CampaignPlan, message_key
from serving.core.planning import BatchDay
from serving.infra.sinks import build_sinks
from serving.infra.store import StateStore
from serving.settings import DispatchSettings
from tests.serving.receivers import SmtpReceiver, WebhookReceiver

DAY = date(2026, 5, 1)
NOW = datetime(2026, 5, 2, 12, tzinfo=UTC)
SECRET = "benchmark-secret"
CHANNEL_OF = {"webhook": "webhook", "email": "email", "file": "in_app"}
WRITE_SECONDS: list[float] = []
"""Seconds of each batch day's transaction (scores, transitions and the planned messages)."""
POSTGRES_URL = os.environ.get(
    "LSTEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Rendered:
    """What the stand-in renderer returns."""

    def __init__(self, subject: str, body: str) -> None:
        self.subject, self.body = subject, body


def render(template_id: str, channel: str, variant: str, context: dict) -> Rendered:
    return Rendered(f"{template_id}: we miss you, {context['name']}", f"Hi {context['name']},\n")


def planned_store(url: str, count: int, channel: str) -> StateStore:
    """A store whose one batch day planned ``count`` due messages on ``channel``."""
    store = StateStore(url)
    learners = [f"L{number:07d}" for number in range(count)]
    decisions = pd.DataFrame(
        {
            "customer_id": learners, "as_of": pd.Timestamp(DAY), "from_tag": None,
            "to_tag": "ST_001", "changed": True, "rule_id": "R01", "description": "new",
            "signal": "rules", "p_churn": 0.5, "confidence": 0.5, "priority": "P3",
            "action": "welcome", "control": False, "value_at_risk": 10.0, "held": None,
        }
    )  # fmt: skip
    messages = pd.DataFrame(
        {
            "message_id": [message_key(DAY, learner, "CP_01", 0) for learner in learners],
            "planned_on": pd.Timestamp(DAY), "due_on": pd.Timestamp(DAY),
            "customer_id": learners, "campaign_id": "CP_01", "step": 0, "channel": channel,
            "template_id": "cp01_step0", "variant": "",  "control": False,
            "context": [json.dumps({"name": learner}) for learner in learners],
        }
    )  # fmt: skip
    batch = BatchDay(DAY, "bench", None, True, NOW, False)
    started = time_module.perf_counter()
    store.apply_day(batch, decisions, None, CampaignPlan(messages=messages))
    WRITE_SECONDS.append(time_module.perf_counter() - started)
    return store


def run_sink(sink: str, url: str, count: int, work: Path) -> dict:
    """Dispatch ``count`` messages through ``sink``; return the figures."""
    store = planned_store(url, count, CHANNEL_OF[sink])
    receivers = {"webhook": WebhookReceiver(SECRET), "email": SmtpReceiver()}
    receiver = receivers.get(sink)
    try:
        if receiver is not None:
            receiver.__enter__()
        config = DispatchSettings(
            webhook_secret=SECRET,
            webhook_url=getattr(receiver, "url", "http://127.0.0.1:9/"),
            smtp_port=getattr(receiver, "port", 25),
            quiet_start=time(0), quiet_end=time(0), max_per_learner=10,
        )  # fmt: skip
        parts = Dispatcher(
            store=store, settings=config, render=render, clock=lambda: NOW,
            open_sinks=lambda channels: build_sinks(config, work / "out.jsonl", channels),
        )  # fmt: skip
        summary, due = dispatch(parts, DispatchOptions())
    finally:
        if receiver is not None:
            receiver.__exit__(None, None, None)
        store.close()
    received = {
        "webhook": lambda: len(receiver.bodies),  # type: ignore[union-attr]
        "email": lambda: len(receiver.mails),  # type: ignore[union-attr]
        "file": lambda: len((work / "out.jsonl").read_text().splitlines()),
    }[sink]()
    return {
        "sink": sink, "day_write_s": round(WRITE_SECONDS[-1], 3), "due": due,
        "sent": summary.sent, "received": received,
        "seconds": round(summary.seconds, 3), "messages_per_s": round(summary.per_second, 1),
    }  # fmt: skip


def store_url(kind: str, work: Path, sink: str) -> tuple[str, str | None]:
    """A fresh store URL (and the PostgreSQL schema to drop afterwards)."""
    if kind == "sqlite":
        return f"sqlite:///{work / f'{sink}.db'}", None
    from tests.serving.conftest import url_with_search_path

    schema = f"lstep_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return url_with_search_path(POSTGRES_URL, schema), schema


def drop_schema(schema: str | None) -> None:
    if schema is None:
        return
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sinks", nargs="+", default=["webhook", "email", "file"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for sink in args.sinks:
            work = Path(directory) / sink
            work.mkdir()
            url, schema = store_url(args.store, work, sink)
            try:
                results.append(run_sink(sink, url, args.messages, work))
            finally:
                drop_schema(schema)
    print(f"dispatch throughput, {args.store} store, {args.messages} messages per sink")
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
