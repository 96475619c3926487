"""The `lstep` command line: the data commands end to end, exit codes and readable errors."""

from __future__ import annotations

import hashlib
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.cli.common import console
from serving.infra.store import StateStore
from serving.settings import Settings

runner = CliRunner()


def _digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """A small simulated population, made once through the CLI."""
    out = tmp_path_factory.mktemp("sim") / "pop"
    result = runner.invoke(
        app, ["simulate", "--customers", "300", "--days", "100", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_simulate_twice_gives_byte_identical_files(tmp_path):
    # given the same arguments twice
    args = ["simulate", "--customers", "2000", "--days", "120", "--seed", "1", "--out"]
    # when both runs finish
    first = runner.invoke(app, [*args, str(tmp_path / "a")])
    second = runner.invoke(app, [*args, str(tmp_path / "b")])
    # then every file is the same, byte for byte
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    digests = _digest(tmp_path / "a")
    assert {"events.parquet", "customers.parquet", "truth.parquet"} <= set(digests)
    assert digests == _digest(tmp_path / "b")


def test_validate_passes_on_simulated_data(population):
    result = runner.invoke(
        app,
        ["validate", "--events", str(population / "events.parquet"),
         "--customers", str(population / "customers.parquet")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_validate_fails_naming_file_column_and_count(population, tmp_path):
    # given events with two negative durations
    events = pd.read_parquet(population / "events.parquet")
    sessions = events.index[events["event_type"] == "session"][:2]
    events.loc[sessions, "duration_s"] = -5.0
    bad = tmp_path / "bad_events.parquet"
    events.to_parquet(bad)
    # when validated
    customers = str(population / "customers.parquet")
    result = runner.invoke(app, ["validate", "--events", str(bad), "--customers", customers])
    # then exit 1 and the message names the file, the column and the row count
    assert result.exit_code == 1
    assert "bad_events.parquet" in result.output
    assert "duration_s" in result.output
    assert "2 rows" in result.output


def test_features_and_labels_commands_write_matching_frames(population, tmp_path):
    # given the simulated population
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    # when features and labels are built at the same dates
    features = runner.invoke(
        app, ["features", *inputs, "--as-of", "2026-03-01", "--as-of", "2026-03-08",
              "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    labels = runner.invoke(
        app, ["labels", *inputs, "--spine", str(tmp_path / "f.parquet"),
              "--out", str(tmp_path / "y.parquet")],
    )  # fmt: skip
    # then both succeed and the labels cover exactly the feature rows (windows complete)
    assert features.exit_code == 0, features.output
    assert labels.exit_code == 0, labels.output
    frame = pd.read_parquet(tmp_path / "f.parquet")
    churn = pd.read_parquet(tmp_path / "y.parquet")
    assert set(frame["as_of"].dt.date.astype(str)) == {"2026-03-01", "2026-03-08"}
    assert len(churn) == len(frame)
    assert churn["churned"].isin([0, 1]).all()


def test_features_requires_exactly_one_way_to_say_where(population, tmp_path):
    result = runner.invoke(
        app,
        ["features", "--events", str(population / "events.parquet"),
         "--customers", str(population / "customers.parquet"),
         "--as-of", "2026-03-01", "--every-days", "7", "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "exactly one of --as-of, --every-days, --spine" in result.output


@pytest.mark.parametrize(
    ("threads", "events", "said"),
    [
        (None, "nope.parquet", "nope.parquet"),  # a file that is not there
        ("zero", "", "LSTEP_THREADS must be a whole number of threads >= 1, got 'zero'"),
    ],
    ids=["missing file", "bad LSTEP_THREADS"],
)
def test_a_features_failure_is_one_readable_line(
    population, tmp_path, monkeypatch, threads, events, said
):
    # given a missing events file, or LSTEP_THREADS set to a word
    if threads is not None:
        monkeypatch.setenv("LSTEP_THREADS", threads)
    found = tmp_path / events if events else population / "events.parquet"
    # when the features are asked for
    result = runner.invoke(
        app,
        ["features", "--events", str(found), "--customers", str(population / "customers.parquet"),
         "--as-of", "2026-03-01", "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    # then the command fails with one line naming what was wrong, and writes nothing
    assert result.exit_code == 1
    assert said in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "f.parquet").exists()


def test_rules_check_prints_the_mermaid_graph(lstep_home):
    result = runner.invoke(app, ["rules", "check"])
    assert result.exit_code == 0, result.output
    assert "rules OK: 16 rules, 6 tags" in result.output
    assert "ST_004 -->" in result.output
    # and, without a champion, the operating points the rules name are unresolved
    assert "no champion" in result.output
    assert "R05 condition.all[0]: p_churn >= @early_warning = unresolved" in result.output


def test_rules_check_prints_the_champions_operating_points(
    lstep_home, monkeypatch, champion_tracking_uri, champion
):
    # given a registry whose champion carries operating points
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion_tracking_uri)
    points = champion.model.operating_points

    # when the rules are checked
    result = runner.invoke(app, ["rules", "check"])

    # then each rule leaf naming one shows the champion's value
    assert result.exit_code == 0, result.output
    assert f"(v{champion.version})" in result.output
    early, recovered = points["early_warning"], points["recovered"]
    assert f"R05 condition.all[0]: p_churn >= @early_warning = {early:.4f}" in result.output
    assert f"R07 condition.all[1]: p_churn <= @recovered = {recovered:.4f}" in result.output
    # and the lifetime projection reads p_churn over the champion's recorded label window
    window = champion.model.horizon_days
    assert f"p_churn over {window} days (the champion's label window)" in result.output


def test_score_without_a_champion_says_what_to_do(population, lstep_home):
    # given an empty LSTEP_HOME (no MLflow registry yet) and an event store
    result = runner.invoke(
        app,
        ["score", "--as-of", "2026-04-01", "--events", str(population / "events.parquet"),
         "--customers", str(population / "customers.parquet")],
    )  # fmt: skip
    # then one readable line tells the user to train first or run the rules alone
    assert result.exit_code == 1
    assert "no champion registered" in result.output
    assert "--rules-only" in result.output


def test_rules_only_batch_then_status_override_and_kpis(population, lstep_home):
    # given one rules-only batch day
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    scored = runner.invoke(app, ["score", "--as-of", "2026-04-01", "--rules-only", *inputs])
    assert scored.exit_code == 0, scored.output
    learner = pd.read_parquet(population / "events.parquet")["customer_id"].iloc[0]
    # when a CS lead holds a learner (the wall clock is months after the data)
    override = runner.invoke(
        app, ["override", learner, "--hold", "--actor", "kim", "--reason", "called", "--for", "3w"]
    )
    status = runner.invoke(app, ["status", learner])
    kpis = runner.invoke(app, ["kpis", "--as-of", "2026-04-01", *inputs[2:]])
    # then the hold takes effect on the next data day for 21 days, and status shows it
    assert override.exit_code == 0, override.output
    assert "(hold) from data day 2026-04-02 until 2026-04-23" in override.output
    assert status.exit_code == 0, status.output
    assert "called" in status.output and "data days from 2026-04-02" in status.output
    assert kpis.exit_code == 0, kpis.output
    assert "KPIs on 2026-04-01" in kpis.output
    assert ">= 70.0%" in kpis.output


def test_a_batch_day_stores_its_kpis_and_kpis_prints_them_as_it_computes_them(
    population, lstep_home
):
    # given the population as the workspace's event store, and one rules-only batch day
    data = lstep_home / "data"
    data.mkdir()
    for name in ("events.parquet", "customers.parquet"):
        (data / name).write_bytes((population / name).read_bytes())
    scored = runner.invoke(app, ["score", "--as-of", "2026-04-01", "--rules-only"])
    assert scored.exit_code == 0, scored.output
    assert "2026-04-01 store the day's KPIs" in scored.output  # a bar of its own, after the day
    stored = data / "kpis" / "as_of=2026-04-01.json"
    written = stored.stat().st_mtime_ns
    # when the KPIs are printed from the stored file, then again computed without it
    from_file = runner.invoke(app, ["kpis"])
    untouched = stored.stat().st_mtime_ns == written
    stored.unlink()
    computed = runner.invoke(app, ["kpis"])
    # then the batch stored them, the first print read them (the file was not rewritten), and
    # both prints are the same text; the computing one stored them again
    assert from_file.exit_code == 0 and computed.exit_code == 0, computed.output
    assert untouched
    assert "KPIs on 2026-04-01" in from_file.output
    assert from_file.output == computed.output
    assert stored.is_file()


def test_kpis_draw_a_bar_while_they_build_a_run_ledger_of_several_days(population, lstep_home):
    # given three rules-only batch days on the workspace's event store, then the stored KPIs
    # and run ledger gone (an upgrade: every stored day is computed again)
    data = lstep_home / "data"
    data.mkdir()
    for name in ("events.parquet", "customers.parquet"):
        (data / name).write_bytes((population / name).read_bytes())
    scored = runner.invoke(
        app, ["score", "--from", "2026-03-30", "--to", "2026-04-01", "--rules-only"]
    )
    assert scored.exit_code == 0, scored.output
    assert "KPI run ledger days (done 2026-04-01)" in scored.output  # the backfill's KPIs too
    shutil.rmtree(data / "kpis")
    # when the KPIs are asked for
    computed = runner.invoke(app, ["kpis"])
    # then the ledger's three days have their bar, and the KPIs follow
    assert computed.exit_code == 0, computed.output
    assert "KPI run ledger days (done 2026-04-01)" in computed.output
    assert "KPIs on 2026-04-01" in computed.output


def test_kpis_name_the_customers_file_that_breaks_the_contract(population, lstep_home, tmp_path):
    # given one rules-only batch day, then a customers file with one learner twice
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    assert (
        runner.invoke(app, ["score", "--as-of", "2026-04-01", "--rules-only", *inputs]).exit_code
        == 0
    )
    broken = tmp_path / "broken-customers.parquet"
    customers = pd.read_parquet(population / "customers.parquet")
    pd.concat([customers, customers.head(1)]).to_parquet(broken)
    # when the KPIs are asked with it
    kpis = runner.invoke(
        app, ["kpis", "--as-of", "2026-04-01", *inputs[:2], "--customers", str(broken)]
    )
    # then the command fails naming the file and the column, without a traceback
    assert kpis.exit_code == 1
    assert "broken-customers.parquet" in kpis.output and "customer_id" in kpis.output
    assert "Traceback" not in kpis.output


def test_overrides_are_listed_cleared_and_leave_earlier_days_runnable(population, lstep_home):
    # given two rules-only batch days and a hold recorded after them
    inputs = ["--rules-only", "--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    for day in ("2026-04-01", "2026-04-02"):
        assert runner.invoke(app, ["score", "--as-of", day, *inputs]).exit_code == 0
    learner = pd.read_parquet(population / "events.parquet")["customer_id"].iloc[0]
    held = ["override", learner, "--hold", "--actor", "kim", "--reason", "vip"]
    assert runner.invoke(app, held).exit_code == 0
    # when the overrides are listed, then the hold is there, from the next data day
    listed = runner.invoke(app, ["overrides", "--active"])
    assert listed.exit_code == 0, listed.output
    assert learner in listed.output and "2026-04-03" in listed.output
    # when an earlier day is run again (a dry run) and the range is replayed, then both run
    dry = runner.invoke(app, ["score", "--as-of", "2026-04-01", "--dry-run", *inputs])
    assert dry.exit_code == 0, dry.output
    replay = runner.invoke(app, ["score", "--from", "2026-04-01", "--to", "2026-04-03", *inputs])
    assert replay.exit_code == 0, replay.output
    # when the hold is cleared, then it is recorded, and clearing it again is one clear line
    clear = ["override", learner, "--clear", "--actor", "lee", "--reason", "done"]
    cleared = runner.invoke(app, clear)
    assert cleared.exit_code == 0, cleared.output
    assert "override cleared" in cleared.output
    again = runner.invoke(app, clear)
    assert again.exit_code == 1
    assert "has no open override to clear" in again.output and "Traceback" not in again.output
    # and a campaign for a learner who is not at risk is refused, naming the rule
    with StateStore.from_settings(Settings()) as store:
        state = store.state_frame()
    active = state.loc[state["tag"] == "ST_001", "customer_id"].iloc[0]
    refused = runner.invoke(
        app, ["override", active, "--tag", "ST_005", "--actor", "kim", "--reason", "x"]
    )
    assert refused.exit_code == 1
    assert "only from ST_004" in " ".join(refused.output.split())


def test_status_shows_the_intervention_the_scores_and_why_the_rule_moved_them(
    population, lstep_home, monkeypatch
):
    # given one rules-only batch day, and a learner the rules moved for reasons they recorded
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    scored = runner.invoke(app, ["score", "--as-of", "2026-04-01", "--rules-only", *inputs])
    assert scored.exit_code == 0, scored.output
    with StateStore.from_settings(Settings()) as store:
        log = store.transitions_frame()
        score = store.scores_frame(date(2026, 4, 1)).set_index("customer_id")
    moved = log[log["why"].notna()].iloc[0]
    # when a CS lead asks for the learner's status, on a terminal wide enough not to fold
    monkeypatch.setattr(console, "width", 400)
    status = runner.invoke(app, ["status", moved["customer_id"]])
    # then it shows the tag and data day, the stored intervention, the scores and the signal
    assert status.exit_code == 0, status.output
    output = status.output
    assert f"{moved['to_tag']} (" in output and "since 2026-04-01 (data day)" in output
    learner = score.loc[moved["customer_id"]]
    assert f"priority {learner['priority']}, action {learner['action']}" in output
    assert "p_churn -, confidence -" in output  # rules only: no model scores
    # and the value at risk stored; without a score nothing to project a lifetime from
    assert f"value at risk {learner['value_at_risk']:,.2f}; expected months -" in output
    assert f"signal {moved['signal']}" in output
    assert "open override: none" in output
    # and the move's rule description and the words of why it fired
    assert moved["reason"] in output
    assert f"why: {moved['why']}" in output


def test_override_with_an_unknown_tag_is_refused(population, lstep_home):
    result = runner.invoke(
        app, ["override", "C0000001", "--tag", "ST_099", "--actor", "kim", "--reason", "x"]
    )
    assert result.exit_code == 1
    assert "ST_099" in result.output


def test_score_runs_the_job_a_config_file_describes(population, lstep_home, tmp_path):
    # given a job file for a rules-only dry run of one day
    config = tmp_path / "job.yaml"
    config.write_text(
        f"as_of: 2026-04-01\nrules_only: true\ndry_run: true\n"
        f"events: {population / 'events.parquet'}\ncustomers: {population / 'customers.parquet'}\n"
    )
    # when the batch runs from it
    result = runner.invoke(app, ["score", "--config", str(config)])
    # then it is that day, rules only, and nothing was written
    assert result.exit_code == 0, result.output
    assert "2026-04-01" in result.output and "rules only" in result.output
    assert "DRY RUN" in result.output


def test_a_config_file_with_an_unknown_field_is_one_readable_line(lstep_home, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("as_of: 2026-04-01\nrules_onyl: true\n")
    result = runner.invoke(app, ["score", "--config", str(config)])
    assert result.exit_code == 1
    said = "".join(result.output.split())  # the terminal wraps long lines, even inside words
    assert "job.yaml:rules_onyl:Extrainputsarenotpermitted" in said
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql+psycopg://u:s3cret@127.0.0.1:9/test", "u:***@127.0.0.1:9/test"),
        ("nonsense://x", "nonsense://x cannot be opened"),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_1(lstep_home, monkeypatch, url, said):
    # given a state store URL that points nowhere usable
    monkeypatch.setenv("LSTEP_STATE_URL", url)
    # when a command needs the store, then one readable error line, no password, no traceback
    result = runner.invoke(app, ["status", "C0000001"])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert flat.startswith("error: state store") and said in flat
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_a_deleted_store_stops_the_batch_until_init_force(population, lstep_home):
    # given a workspace whose rules-only batch ran, then whose state.db was deleted
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    day = ["score", "--as-of", "2026-04-01", "--rules-only", *inputs]
    assert runner.invoke(app, day).exit_code == 0
    (lstep_home / "state.db").unlink()
    # when the batch runs again, then it stops: the history is gone, not silently restarted
    lost = runner.invoke(app, day)
    assert lost.exit_code == 1
    assert "now missing or empty" in " ".join(lost.output.split())
    assert "Traceback" not in lost.output
    # and after the explicit step, a new history starts
    assert runner.invoke(app, ["init", "--force"]).exit_code == 0
    assert runner.invoke(app, day).exit_code == 0


def test_rules_check_lists_the_campaigns_and_flags_unreachable_triggers(tmp_path):
    from tests.rules.test_campaigns import _edit, copy_rules_with_campaigns

    # given a rules directory whose CP_13 waits for a move into ST_005 (only a person makes it)
    rules_dir = copy_rules_with_campaigns(tmp_path / "rules")
    trigger = {"path": ["campaigns", {"id": "CP_13"}, "trigger"], "value": {"into": "ST_005"}}
    _edit(rules_dir, {"set": trigger})
    result = runner.invoke(app, ["rules", "check", "--rules", str(rules_dir)])
    # then the check passes, lists the 24 campaigns and flags CP_13 alone
    assert result.exit_code == 0, result.output
    assert "24 campaigns, 8 behaviour tags" in result.output
    assert "unreachable trigger: CP_13 (At-risk early warning): no rule moves a learner" in (
        " ".join(result.output.split())
    )
    assert result.output.count("unreachable trigger") == 1


def test_rules_check_fails_on_a_template_that_cannot_render(tmp_path):
    from tests.rules.test_campaigns import copy_rules_with_campaigns

    rules_dir = copy_rules_with_campaigns(tmp_path / "rules")
    (rules_dir / "templates" / "welcome.email.j2").write_text("{{ reasons.missing_field }}\n")
    result = runner.invoke(app, ["rules", "check", "--rules", str(rules_dir)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "rule CP_01" in output and "welcome.email.j2" in output and "missing_field" in output
    assert "Traceback" not in result.output
