"""``lstep campaigns``: the effect table from the outbox and the log, and its one-line errors."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.simulator import SimulationConfig, simulate
from serving.cli import app
from serving.cli import campaigns as campaigns_cli
from serving.cli.common import console
from serving.core.messages import SENT, SUPPRESSED, message_key
from tests.serving.app.test_campaign_effect import FrameRecords

runner = CliRunner()
CONFIG = SimulationConfig(customers=200, days=60, seed=5, truth_share=0.0)
DUE = CONFIG.start + timedelta(days=30)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("campaign-log")
    simulate(CONFIG, out)
    return out


def _row(customer: str, variant: str, control: bool, due: date = DUE) -> dict:
    return {
        "message_id": message_key(due, customer, "CP_04", 0),
        "planned_on": due,
        "due_on": due,
        "customer_id": customer,
        "campaign_id": "CP_04",
        "step": 0,
        "channel": "email",
        "template_id": "win_back",
        "variant": variant,
        "control": control,
        "context": "{}",
        "state": SUPPRESSED if control else SENT,
    }


def _inputs(log_dir: Path) -> list[str]:
    return ["--events", str(log_dir / "events.parquet"),
            "--customers", str(log_dir / "customers.parquet")]  # fmt: skip


def test_an_empty_outbox_says_no_campaign_was_planned(lstep_home, log_dir):
    # given a workspace whose state store has its outbox (migration 0003) but no message yet
    # when the campaign effect is asked for
    result = runner.invoke(app, ["campaigns", "--as-of", str(DUE), *_inputs(log_dir)])
    # then the table says there is nothing to measure, without a traceback
    assert result.exit_code == 0, result.output
    assert f"no campaign messages planned by {DUE}" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_table_reads_the_stores_outbox_and_feedback(lstep_home, log_dir, monkeypatch):
    # given a batch day that planned CP_01 for 8 learners (2 in the control), sent, one opened
    from serving.infra.workspace import open_workspace_store
    from serving.settings import Settings, utc_now
    from tests.serving.batches import apply
    from tests.serving.outbox_fixtures import apply_with_plan, messages, plan

    ids = sorted(pd.read_parquet(log_dir / "customers.parquet").customer_id)[:8]
    store = open_workspace_store(Settings(), utc_now())
    apply(store, DUE - timedelta(days=1), [(c, None, "ST_001") for c in ids])
    frame = messages(DUE, ids, control=tuple(ids[:2]))
    apply_with_plan(store, DUE, [(c, "ST_001", "ST_001") for c in ids], plan(frame))
    sent = [{"message_id": m, "state": SENT, "sent_at": utc_now()} for m in frame.message_id[2:]]
    store.claim_messages("t", data_day=DUE, now=utc_now(), channels=None, lease=timedelta(1),
                         limit=10)  # fmt: skip
    store.record_attempts("t", sent)
    store.record_feedback(frame.message_id[2], "opened", source="test", now=utc_now())
    store.close()
    # when the table is asked for on the log's last day
    monkeypatch.setattr(console, "width", 250)
    as_of = str(CONFIG.end - timedelta(days=1))
    result = runner.invoke(app, ["campaigns", "--as-of", as_of, *_inputs(log_dir)])
    # then the campaign's row counts the store's treated, control and opened learners
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "CP_01" in line).split("│")
    assert (int(row[3]), int(row[4]), int(row[5]), int(row[7])) == (6, 6, 2, 1)


def test_the_table_shows_each_variant_and_the_pending_learners(lstep_home, log_dir, monkeypatch):
    # given an A/B campaign for 40 learners (a quarter in the control) and 6 messaged later
    ids = sorted(pd.read_parquet(log_dir / "customers.parquet").customer_id)
    rows = [_row(c, "ab"[i % 2], i % 4 == 0) for i, c in enumerate(ids[:40])]
    rows += [_row(c, "a", False, CONFIG.end - timedelta(days=3)) for c in ids[40:46]]
    feedback = pd.DataFrame(
        {
            "message_id": [rows[1]["message_id"]],
            "kind": ["opened"],
            "recorded_at": [pd.Timestamp.now()],
        }
    )
    records = FrameRecords(pd.DataFrame(rows), feedback)
    monkeypatch.setattr(campaigns_cli, "store_records", lambda store: records)
    # when the table is asked for on the log's last day
    as_of = str(CONFIG.end - timedelta(days=1))
    monkeypatch.setattr(console, "width", 250)
    result = runner.invoke(app, ["campaigns", "--as-of", as_of, *_inputs(log_dir)])
    # then one row per variant and a total, with the counts the frames imply
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "CP_04" in line]
    assert len(lines) == 3
    cells = {line.split("│")[2].strip(): line.split("│") for line in lines}
    assert set(cells) == {"a", "b", "*"}
    treated, control, pending = (int(cells["*"][i]) for i in (3, 5, 6))
    assert (treated, control, pending) == (30, 10, 6)
    assert int(cells["b"][7]) == 1  # the one opened message went to a b learner
    assert "Newcombe 95% interval" in " ".join(result.output.split())


def test_a_bad_threshold_names_the_option(lstep_home, log_dir):
    result = runner.invoke(app, ["campaigns", "--min-effect", "2", *_inputs(log_dir)])
    assert result.exit_code == 1
    assert "--min-effect" in result.output and "Traceback" not in result.output


def test_the_option_defaults_are_the_effect_settings_defaults():
    # the CLI spells its defaults out (importing scipy would slow `lstep --help`); they must agree
    import inspect

    from serving.app.campaign_effect import EffectSettings

    options = inspect.signature(campaigns_cli.campaigns).parameters
    defaults = EffectSettings()
    assert options["window_days"].default == defaults.conversion_days
    assert options["min_effect"].default == defaults.min_effect
