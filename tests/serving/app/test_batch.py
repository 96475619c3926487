"""The daily batch job: idempotent days, backfills, R09 for silent learners, modes and summaries."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date, timedelta

import pandas as pd
import pytest
from rich.console import Console

import serving.app.batch_inputs as batch_inputs_module
from features.carry import CARRY_SUBDIR
from features.kept_proof import LATE_DAYS
from features.validation_report import InputError
from serving.app.batch import BatchContext, BatchInputs, Models, run_day, run_range
from serving.cli.render import batch_summary
from serving.core.problems import NoChampionError
from serving.core.state import state_after_moves
from serving.infra.champion import require_champion
from serving.infra.snapshots import latest_feature_snapshot
from tests.features.event_frames import customers_frame, events_frame, time_ordered_log
from tests.serving.fixtures import FIRST_DAY, NOW

RULES_ONLY_NOTE = "[no model score: decided on rules only]"
BACKFILL_DAYS = 10


def context_of(store, champion, ruleset, *, rules_only=False, **fields) -> BatchContext:
    """What the jobs build: the champion as ``require_champion`` lets it through."""
    fields.setdefault("run_id", "run")
    champion = require_champion(champion, rules_only=rules_only)
    return BatchContext(store=store, models=Models(champion, ruleset), now=NOW, **fields)


def run(store, log, champion, ruleset, day=FIRST_DAY, *, rules_only=False, **options):
    """One batch day on the simulated log (validated once per session)."""
    fields = {"run_id": options.pop("run_id", f"run-{day.isoformat()}")}
    if "data_dir" in options:
        fields["data_dir"] = options.pop("data_dir")
    context = context_of(store, champion, ruleset, rules_only=rules_only, **fields)
    inputs = BatchInputs(events=log.events, customers=log.customers, validated=True)
    return run_day(day, inputs, context, **options)


def store_contents(store) -> dict[str, pd.DataFrame]:
    """Everything the store holds that a batch writes."""
    return {
        "state": store.state_frame(),
        "transitions": store.transitions_frame().drop(columns="created_at"),
        "scores": store.scores_frame(),
        "runs": store.runs().drop(columns=["started_at", "finished_at"]),
    }


@pytest.fixture(scope="module")
def backfill(simulated_log, champion, ruleset, tmp_path_factory):
    """Ten days run in order on one SQLite store, with feature snapshots."""
    from serving.infra.store import StateStore

    home = tmp_path_factory.mktemp("backfill")
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    context = context_of(store, champion, ruleset, run_id="backfill", data_dir=home / "data")
    inputs = BatchInputs(events=simulated_log.events, customers=simulated_log.customers)
    results = run_range(FIRST_DAY, FIRST_DAY + timedelta(days=BACKFILL_DAYS - 1), inputs, context)
    yield store, results, home / "data"
    store.close()


# --- idempotency, order, replace ------------------------------------------------------------------


def test_the_same_day_twice_changes_nothing(store, simulated_log, champion, ruleset):
    # Given a day that ran (on SQLite and on PostgreSQL)
    first = run(store, simulated_log, champion, ruleset)
    before = store_contents(store)
    # When the same day runs again under another run id
    again = run(store, simulated_log, champion, ruleset, run_id="second-try")
    # Then it reports the first run, and the store holds the same rows, none duplicated
    assert again.already_done and again.run.run_id == first.run.run_id
    after = store_contents(store)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, check_like=True)
    assert not after["scores"].duplicated(["customer_id", "as_of"]).any()
    assert first.transitions == len(after["transitions"]) > 0


def test_an_earlier_day_is_refused_after_a_later_one(sqlite_store, simulated_log, ruleset):
    # Given a completed day (rules only: no model needed for the order check)
    run(sqlite_store, simulated_log, None, ruleset, rules_only=True)
    # When the day before runs, Then it is refused and says why
    with pytest.raises(ValueError, match="is before the latest completed batch day 2026-05-10"):
        earlier = FIRST_DAY - timedelta(days=1)
        run(sqlite_store, simulated_log, None, ruleset, day=earlier, rules_only=True)


def test_replacing_the_latest_day_decides_it_again_from_the_state_before_it(
    sqlite_store, simulated_log, champion, ruleset
):
    # Given two completed days
    run(sqlite_store, simulated_log, champion, ruleset)
    second_day = FIRST_DAY + timedelta(days=1)
    first = run(sqlite_store, simulated_log, champion, ruleset, day=second_day)
    moves = sqlite_store.transitions_frame()
    # When the second day is replaced with the same inputs
    replaced = run(
        sqlite_store, simulated_log, champion, ruleset, day=second_day, run_id="redo", replace=True
    )
    # Then it makes the same moves (none skipped as stale) and the log holds them once
    assert replaced.transitions_by_rule == first.transitions_by_rule
    assert sum(replaced.skipped.values()) == 0
    columns = ["customer_id", "as_of", "from_tag", "to_tag", "rule_id"]
    redone = sqlite_store.transitions_frame()
    assert len(redone) == len(moves)
    pd.testing.assert_frame_equal(
        redone[columns].sort_values(columns, ignore_index=True),
        moves[columns].sort_values(columns, ignore_index=True),
    )
    assert set(redone.loc[redone["as_of"] == pd.Timestamp(second_day), "run_id"]) == {"redo"}


def test_the_answers_are_decided_on_the_state_a_whole_read_gives(
    store, simulated_log, champion, ruleset, tmp_path, monkeypatch
):
    # Given the store's state_with and the answers' moves_match watched: each call held to a
    # whole read of the same day (the state after, and whether the day's moves predicted it)
    from serving.app import batch_write
    from serving.infra.store import StateChanges, StateStore

    shortcut, match, calls = StateStore.state_with, batch_write.moves_match, []

    def state_with(self, as_of, before, changes):
        after = shortcut(self, as_of, before, changes)
        pd.testing.assert_frame_equal(after, self.state_frame(as_of))
        calls.append(("read", as_of))
        return after

    def moves_match(before, decisions, as_of, changed, fresh):
        matched = match(before, decisions, as_of, changed, fresh)
        whole = store.state_frame(as_of)
        pd.testing.assert_frame_equal(StateChanges(changed, fresh).applied_to(before), whole)
        assert matched == state_after_moves(before, decisions, as_of).equals(whole)
        calls.append(("matched" if matched else "unmatched", as_of))
        return matched

    monkeypatch.setattr(StateStore, "state_with", state_with)
    monkeypatch.setattr(batch_write, "moves_match", moves_match)
    # When a first day, a second one and a replace of the second run (on SQLite and PostgreSQL)
    second_day = FIRST_DAY + timedelta(days=1)
    days = [(FIRST_DAY, "one", False), (second_day, "two", False), (second_day, "redo", True)]
    for day, run_id, replace in days:
        run(store, simulated_log, champion, ruleset, day=day, run_id=run_id,
            data_dir=tmp_path / "data", replace=replace)  # fmt: skip
    # Then the first day (an empty store before it) reads the whole state after it, the second
    # day's predicted state is the store's (its learners compared only), and the replace (which
    # decides no answers ahead) reads the state after it
    assert calls == [("read", FIRST_DAY), ("matched", second_day), ("read", second_day)]


# --- backfill -------------------------------------------------------------------------------------


def test_backfill_runs_every_day_in_order(backfill):
    # Given a ten-day backfill
    store, results, _ = backfill
    # Then every day completed once, in order, and each day starts from the tags the day before left
    runs = store.runs()
    expected_days = [FIRST_DAY + timedelta(days=offset) for offset in range(BACKFILL_DAYS)]
    assert [result.as_of for result in results] == expected_days
    assert runs["as_of"].dt.date.tolist() == expected_days
    assert (runs["status"] == "completed").all()
    for previous, current in itertools.pairwise(results):
        assert current.tags_before == previous.tags_after


def test_backfill_moves_learners_by_several_rules(backfill):
    # Given a ten-day backfill
    store, results, _ = backfill
    # Then after the first day (which tags everyone new) learners keep moving, by several rules,
    # and the log holds exactly the moves the results report
    later_rules = set().union(*(result.transitions_by_rule for result in results[1:]))
    assert len(later_rules) >= 3
    log = store.transitions_frame()
    for result in results:
        day_log = log[log["as_of"] == pd.Timestamp(result.as_of)]
        assert day_log["rule_id"].value_counts().to_dict() == result.transitions_by_rule
    assert log.groupby("customer_id")["as_of"].nunique().max() >= 2  # someone moved twice


def test_silent_learners_are_decided_and_churn(backfill, simulated_log):
    # Given a ten-day backfill
    store, results, _ = backfill
    # Then learners no longer eligible but still live were decided on, and every R09 move is a
    # learner with no event in the 30 days before its day
    assert sum(result.live_inactive for result in results) > 0
    log = store.transitions_frame()
    churned = log[log["rule_id"] == "R09"]
    assert len(churned) > 0
    events = simulated_log.events
    for move in churned.itertuples():
        day = pd.Timestamp(move.as_of, tz="UTC")
        mine = events[(events["customer_id"] == move.customer_id) & (events["ts"] < day)]
        assert mine["ts"].max() <= day - pd.Timedelta(days=30)


def test_backfill_writes_feature_snapshots_and_the_latest_is_found(backfill):
    # Given a ten-day backfill with a data directory
    _, results, data_dir = backfill
    # When the latest snapshot is looked up
    as_of, frame = latest_feature_snapshot(data_dir)
    # Then it is the last day's, with one row per learner decided that day
    last = results[-1]
    assert as_of == last.as_of
    assert len(frame) == last.learners
    assert (frame["as_of"] == pd.Timestamp(last.as_of)).all()
    assert len(list((data_dir / "features").glob("as_of=*.parquet"))) == BACKFILL_DAYS


def test_no_snapshot_yet_is_none(tmp_path):
    # Given an empty data directory, Then there is no snapshot
    assert latest_feature_snapshot(tmp_path) is None


def test_top_learners_are_urgent_outside_the_control_group_with_three_reasons(backfill):
    # Given the backfill's last day
    store, results, _ = backfill
    last = results[-1]
    scores = store.scores_frame(last.as_of).set_index("customer_id")
    # Then the call list holds P1/P2 learners outside the control group, most value first,
    # each with three model reasons
    assert 0 < len(last.top_learners) <= 20
    values = [learner.value_at_risk for learner in last.top_learners]
    priorities = [learner.priority for learner in last.top_learners]
    assert priorities == sorted(priorities)
    for learner in last.top_learners:
        assert learner.priority in {"P1", "P2"}
        assert not scores.loc[learner.customer_id, "control"]
        assert len(learner.reasons) == 3 and all(" pts" in text for text in learner.reasons)
    assert values[: priorities.count("P1")] == sorted(
        values[: priorities.count("P1")], reverse=True
    )


def test_summary_renders_tags_rules_and_the_call_list(backfill):
    # Given the backfill's last day
    _, results, _ = backfill
    last = results[-1]
    console = Console(record=True, width=200)
    # When its summary is rendered
    console.print(batch_summary(last))
    text = console.export_text()
    # Then it shows every tag, every rule that moved someone and the first learner to call
    for tag in ("ST_001", "ST_004", "ST_006"):
        assert tag in text
    for rule in last.transitions_by_rule:
        assert rule in text
    assert last.top_learners[0].customer_id in text


# --- inputs: files proved clean, or the full validation ------------------------------------------


def test_a_day_on_proved_files_equals_the_day_on_validated_frames(
    sqlite_store, simulated_log, champion, ruleset, tmp_path, monkeypatch
):
    # Given the day run on the validated frames, and a second store
    from serving.infra.store import StateStore
    from tests.serving.conftest import FINISHED_AT

    run(sqlite_store, simulated_log, champion, ruleset, run_id="day")
    on_files = StateStore(f"sqlite:///{tmp_path / 'files.db'}", clock=lambda: FINISHED_AT)
    # When the same day runs on the files, with the pandas validation made to fail if called
    monkeypatch.setattr(batch_inputs_module, "load_valid_inputs", _not_called)
    inputs = BatchInputs(events=simulated_log.events_path, customers=simulated_log.customers_path)
    context = context_of(on_files, champion, ruleset, run_id="day")
    result = run_day(FIRST_DAY, inputs, context)
    # Then DuckDB proved them clean, read them as they are, and the day is the same to the row
    assert result.transitions > 0
    expected, actual = store_contents(sqlite_store), store_contents(on_files)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(actual[name], frame, check_like=True)
    on_files.close()


def test_days_carried_from_the_day_before_are_the_days_aggregated_from_the_log(
    simulated_log, champion, ruleset, tmp_path
):
    # Given the simulated log in time order, and two stores: one keeps each day's window
    from serving.infra.store import StateStore
    from tests.serving.conftest import FINISHED_AT

    events = time_ordered_log(simulated_log.events_path, tmp_path)
    inputs = BatchInputs(events=events, customers=simulated_log.customers_path)
    days = [FIRST_DAY + timedelta(days=offset) for offset in range(3)]
    contents, results = {}, {}
    # When three days run on each, the window carried from the day before or aggregated
    for carried in (True, False):
        store = StateStore(f"sqlite:///{tmp_path / f'{carried}.db'}", clock=lambda: FINISHED_AT)
        context = context_of(
            store, champion, ruleset, run_id="days", data_dir=tmp_path / f"data-{carried}",
            carry_window=carried,
        )  # fmt: skip
        results[carried] = run_range(days[0], days[-1], inputs, context)
        contents[carried] = store_contents(store)
        store.close()
    # Then the carrying run aggregated its first day and carried the two others, and says so
    windows = [result.window for result in results[True]]
    assert windows == [
        f"aggregated: no state of {days[0] - timedelta(days=1)}",
        f"carried from {days[0]}",
        f"carried from {days[1]}",
    ]
    assert [result.window for result in results[False]] == ["", "", ""]
    console = Console(record=True, width=200)
    console.print(batch_summary(results[True][-1]))
    assert f"window: carried from {days[1]}" in console.export_text()
    # and the stores hold the same rows, and only the carrying run kept its last two windows
    assert sum(result.transitions for result in results[True]) > 0
    for name, frame in contents[False].items():
        pd.testing.assert_frame_equal(contents[True][name], frame, check_like=True)
    kept = sorted(path.name for path in (tmp_path / "data-True" / CARRY_SUBDIR).glob("window.*"))
    assert kept == [
        f"window.as_of={day.isoformat()}.{kind}" for day in days[1:] for kind in ("json", "parquet")
    ]
    assert not list((tmp_path / "data-False" / CARRY_SUBDIR).glob("window.*"))


@pytest.mark.parametrize("kept", [True, False], ids=["proof kept", "proof not kept"])
def test_a_day_checks_the_events_since_the_proof_the_day_before_kept(
    simulated_log, champion, ruleset, tmp_path, kept
):
    # Given the simulated log up to the first day, and a store with a data directory
    from serving.infra.store import StateStore
    from tests.serving.conftest import FINISHED_AT

    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: FINISHED_AT)
    context = context_of(
        store, champion, ruleset, data_dir=tmp_path / "data", carry_proof=kept
    )  # fmt: skip
    days = [FIRST_DAY, FIRST_DAY + timedelta(days=1)]
    results = []
    # When each day runs as `lstep score` runs it (new inputs, checked), on the log appended
    # with the day before
    for day in days:
        time_ordered_log(simulated_log.events_path, tmp_path, until=pd.Timestamp(day, tz="UTC"))
        inputs = BatchInputs(
            events=tmp_path / "events.parquet", customers=simulated_log.customers_path
        )
        results.append(run_day(day, inputs, dataclasses.replace(context, run_id=f"run-{day}")))
    store.close()
    # Then the first day proved the whole log, and the second only the events since the kept
    # bound (the first day's log ends the day before it; a day late is new) when the proof was
    # kept, and it says so in its summary
    whole = "proved in full: no kept proof" if kept else "proved in full"
    assert results[0].inputs == whole
    if kept:
        since = f"proved since {days[0] - timedelta(days=1 + LATE_DAYS)}: "
        assert results[1].inputs.startswith(since) and " kept" in results[1].inputs
    else:
        assert results[1].inputs == whole
    assert (tmp_path / "data" / CARRY_SUBDIR / "inputs.json").exists() == kept
    console = Console(record=True, width=200)
    console.print(batch_summary(results[1]))
    assert f"inputs: {results[1].inputs}" in console.export_text()


def _not_called(*args, **kwargs):
    raise AssertionError("load_valid_inputs ran on inputs DuckDB proved clean")


def test_a_log_the_proof_refuses_is_validated_in_full_and_fails_with_its_report(
    sqlite_store, champion, ruleset, tmp_path, simulated_log
):
    # Given the simulated log with one event of a type outside the vocabulary
    events = pd.read_parquet(simulated_log.events_path)
    events.loc[events.index[10], "event_type"] = "login"
    events.to_parquet(tmp_path / "events.parquet", index=False)
    inputs = BatchInputs(events=tmp_path / "events.parquet", customers=simulated_log.customers_path)
    # When the day runs, then it stops with the validation's report, naming the file and type
    with pytest.raises(InputError, match=r"(?s)events\.parquet.*event_type.*login"):
        run_day(FIRST_DAY, inputs, context_of(sqlite_store, champion, ruleset))
    assert sqlite_store.runs().empty


def test_proved_files_that_changed_since_are_proved_again(tmp_path, simulated_log):
    # Given the simulated files, proved clean
    events = pd.read_parquet(simulated_log.events_path)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    inputs = BatchInputs(events=tmp_path / "events.parquet", customers=simulated_log.customers_path)
    proved = inputs.checked(NOW)
    assert proved.validated and proved.proved and proved.events == inputs.events
    assert proved.checked(NOW) is proved  # unchanged: not proved again
    # When the log is rewritten with an event in the future
    events.loc[events.index[0], "ts"] = pd.Timestamp(NOW) + pd.Timedelta(days=1)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    # Then the next check proves it again and the validation reports the event
    with pytest.raises(InputError, match=r"ts in the future"):
        proved.checked(NOW)


# --- modes: rules only, no champion, dry run ------------------------------------------------------


def test_rules_only_runs_are_recorded_as_such(sqlite_store, simulated_log, ruleset):
    # When a day runs in rules-only mode
    result = run(sqlite_store, simulated_log, None, ruleset, rules_only=True)
    # Then the run, every score row and every transition say the model was left out
    assert result.rules_only and result.model_version is None
    runs = sqlite_store.runs()
    assert runs["rules_only"].tolist() == [True]
    assert runs["model_version"].isna().all()
    scores = sqlite_store.scores_frame()
    assert len(scores) == result.learners
    assert scores["p_churn"].isna().all() and scores["model_version"].isna().all()
    transitions = sqlite_store.transitions_frame()
    assert len(transitions) > 0
    assert transitions["reason"].str.endswith(RULES_ONLY_NOTE).all()


def test_a_champion_is_ignored_when_rules_only_is_asked(
    sqlite_store, simulated_log, champion, ruleset
):
    # When a day runs with a champion at hand but rules_only
    result = run(sqlite_store, simulated_log, champion, ruleset, rules_only=True)
    # Then no score comes from the model
    assert result.rules_only
    assert sqlite_store.scores_frame()["p_churn"].isna().all()


def test_without_a_champion_the_job_stops_with_a_clear_message(
    sqlite_store, simulated_log, ruleset
):
    # When a day runs with no champion and without rules_only
    with pytest.raises(NoChampionError) as raised:
        run(sqlite_store, simulated_log, None, ruleset)
    # Then the message says what is missing and both ways out, and nothing was written
    assert str(raised.value) == (
        "no champion registered under models:/lstep-churn@champion: run `lstep train` first, "
        "or pass --rules-only"
    )
    assert sqlite_store.runs().empty


def test_a_dry_run_writes_nothing(sqlite_store, simulated_log, champion, ruleset, tmp_path):
    # When a day runs dry with a data directory
    result = run(
        sqlite_store, simulated_log, champion, ruleset, dry_run=True, data_dir=tmp_path / "data"
    )
    # Then it reports the moves it would make, but the store and the data directory stay empty
    assert result.dry_run and result.run is None and result.transitions > 0
    assert sum(result.tags_after.values()) == result.learners
    contents = store_contents(sqlite_store)
    assert all(frame.empty for frame in contents.values())
    assert not (tmp_path / "data").exists()


def test_a_multi_day_dry_run_is_refused(sqlite_store, simulated_log, champion, ruleset):
    # When a dry backfill of two days is asked for, Then it is refused before any work
    with pytest.raises(ValueError, match="a dry run covers one day"):
        run_range(
            FIRST_DAY,
            FIRST_DAY + timedelta(days=1),
            BatchInputs(events=simulated_log.events, customers=simulated_log.customers),
            context_of(sqlite_store, champion, ruleset, run_id="dry"),
            dry_run=True,
        )


# --- a hand-built learner who goes silent ---------------------------------------------------------


def test_a_live_learner_who_goes_silent_churns_by_r09(sqlite_store, ruleset):
    # Given "quiet", active until 2024-03-01, and "busy", active every few days
    busy_days = pd.date_range("2024-02-01", "2024-04-05", freq="3D")
    events = events_frame(
        [["quiet", "2024-03-01 10:00:00", "session", 600.0, "web", None, 3]]
        + [["busy", f"{day.date()} 09:00:00", "session", 900.0, "web"] for day in busy_days]
    )
    customers = customers_frame([["quiet"], ["busy"]])
    day_one, day_two = date(2024, 3, 10), date(2024, 4, 1)
    inputs = BatchInputs(events=events, customers=customers)
    # When a day runs while both are active, then a day 30+ days after quiet's last event
    first = run_day(
        day_one, inputs, context_of(sqlite_store, None, ruleset, rules_only=True, run_id="one")
    )
    second = run_day(
        day_two, inputs, context_of(sqlite_store, None, ruleset, rules_only=True, run_id="two")
    )
    # Then quiet, no longer eligible but live, was decided on and moved to ST_006 by R09
    assert first.eligible == 2 and first.live_inactive == 0
    assert second.eligible == 1 and second.live_inactive == 1
    state = sqlite_store.state_frame().set_index("customer_id")
    assert state.loc["quiet", "tag"] == "ST_006"
    assert state.loc["busy", "tag"] != "ST_006"
    history = sqlite_store.history("quiet")
    assert history["rule_id"].tolist()[-1] == "R09"
    assert second.transitions_by_rule.get("R09") == 1


def test_a_day_whose_commit_failed_has_its_snapshot_and_a_rerun_completes_it(
    sqlite_store, simulated_log, ruleset, tmp_path, monkeypatch
):
    # given a day whose store write fails (a crash at the commit), with a data directory
    real = sqlite_store.apply_day

    def crash(*args, **kwargs):
        raise OSError("disk gone at the commit")

    monkeypatch.setattr(sqlite_store, "apply_day", crash)
    data_dir = tmp_path / "data"
    with pytest.raises(OSError, match="disk gone"):
        run(sqlite_store, simulated_log, None, ruleset, rules_only=True, data_dir=data_dir)
    # then the snapshot was written before the commit, and nothing else is left behind
    snapshot = latest_feature_snapshot(data_dir)
    assert snapshot is not None and snapshot[0] == FIRST_DAY
    assert [path.name for path in (data_dir / "features").iterdir()] == [
        f"as_of={FIRST_DAY}.parquet"
    ]
    assert sqlite_store.runs().empty
    # and when the day runs again it completes, with its snapshot
    monkeypatch.setattr(sqlite_store, "apply_day", real)
    again = run(sqlite_store, simulated_log, None, ruleset, rules_only=True, data_dir=data_dir)
    assert again.run.status == "completed" and again.feature_snapshot.exists()
