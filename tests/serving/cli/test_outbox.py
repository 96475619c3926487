"""``lstep dispatch`` and ``lstep outbox`` on a workspace whose outbox has a planned day."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings, utc_now
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.outbox_fixtures import apply_with_plan, messages, plan
from tests.serving.receivers import SmtpReceiver

runner = CliRunner()
DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)
MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_004"), ("c", "ST_001", "ST_001")]


@pytest.fixture
def planned(lstep_home):
    """A workspace whose day 2 planned an email for a and b (z in the control) and a push for c.

    The frozen wall clock (02:00 UTC) is inside the default quiet hours: they are switched off.
    """
    store = open_workspace_store(Settings(), utc_now())
    apply(store, DAY1, FIRST_DAY)
    frame = pd.concat(
        [
            messages(DAY2, ["a", "b", "z"], control=("z",), template="welcome"),
            messages(DAY2, ["c"], channel="push", template="comeback_nudge"),
        ]
    )
    apply_with_plan(store, DAY2, MOVES, plan(frame))
    store.close()
    return lstep_home


def test_outbox_counts_messages_by_state_and_channel(planned):
    result = runner.invoke(app, ["outbox"])
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[1]: line.split()[2:] for line in result.output.splitlines() if "│" in line
    }
    # pending: email 2, push 1; suppressed: email 1
    assert lines["pending"] == ["│", "2", "│", "1", "│", "3", "│"]
    assert lines["suppressed"] == ["│", "1", "│", "0", "│", "1", "│"]
    earlier = runner.invoke(app, ["outbox", "--as-of", "2024-03-01"])
    assert "(no messages)" in earlier.output


def test_dispatch_sends_through_smtp_and_the_file_and_says_what_it_did(planned, monkeypatch):
    with SmtpReceiver() as smtp:
        monkeypatch.setenv("LSTEP_DISPATCH__SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("LSTEP_DISPATCH__QUIET_END", "21:00")  # no quiet hours
        # When a dry run, then a run of the email channel, then of the rest
        dry = runner.invoke(app, ["dispatch", "--dry-run"])
        email = runner.invoke(app, ["dispatch", "--channel", "email"])
        rest = runner.invoke(app, ["dispatch"])
    # Then the dry run counted and sent nothing; the runs sent each message once
    assert dry.exit_code == 0, dry.output
    said = [" ".join(result.output.split()) for result in (dry, email, rest)]
    assert "3 would be sent (email 2, push 1)" in said[0] and "nothing written" in said[0]
    assert "sent 2 (email 2), failed 0, dead 0, deferred 0" in said[1]
    assert "sent 1 (push 1)" in said[2]
    # rendered by the campaign templates (rules/templates/welcome.email.j2)
    assert sorted(mail["Subject"] for mail in smtp.mails) == ["Welcome to PPAL Pro"] * 2
    lines = (planned / "outbox" / "messages.jsonl").read_text().splitlines()
    assert [json.loads(line)["customer_id"] for line in lines] == ["c"]
    counts = runner.invoke(app, ["outbox"]).output
    assert "sent" in counts and "pending" not in counts


def test_dispatch_to_a_webhook_without_a_secret_is_one_clear_line(planned, monkeypatch):
    monkeypatch.setenv("LSTEP_DISPATCH__SINKS", '{"email": "webhook"}')
    monkeypatch.setenv("LSTEP_DISPATCH__QUIET_END", "21:00")
    result = runner.invoke(app, ["dispatch", "--channel", "email"])
    assert result.exit_code == 1
    assert "LSTEP_DISPATCH__WEBHOOK_SECRET" in result.output
    assert "Traceback" not in result.output
    # And nothing was claimed or sent: the messages are still pending
    assert "pending" in runner.invoke(app, ["outbox"]).output


def test_a_dry_run_names_a_template_that_cannot_render(lstep_home, monkeypatch):
    # given a planned message whose template does not exist
    store = open_workspace_store(Settings(), utc_now())
    apply(store, DAY1, FIRST_DAY)
    apply_with_plan(store, DAY2, MOVES, plan(messages(DAY2, ["a"], template="no_such")))
    store.close()
    monkeypatch.setenv("LSTEP_DISPATCH__QUIET_END", "21:00")
    # when dry-run, then it says which template failed, and nothing is written
    result = runner.invoke(app, ["dispatch", "--dry-run"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "0 would be sent" in said and "1 could not be rendered (first: no_such" in said
    assert "pending" in runner.invoke(app, ["outbox"]).output
