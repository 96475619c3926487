"""The state store on SQLite and PostgreSQL: schema, batches, overrides, crashes and concurrency."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

import rules
import serving.infra.store as store_module
from features.catalog import load_catalog
from serving.core.frames import DECISIONS_SCHEMA
from serving.core.problems import Invalid, Unavailable
from serving.core.records import rule_wording
from serving.infra.store import ApplyRefused, StateStore
from serving.infra.tables import Base
from tests.rules.casebook import with_casebook_points
from tests.serving.batches import (
    FIRST_DAY,
    apply,
    at,
    decisions,
    run_paused_batch,
    set_override,
)

DAY1 = date(2024, 3, 1)
DAY2 = date(2024, 3, 2)
DAY3 = date(2024, 3, 3)
DAY4 = date(2024, 3, 4)
TABLES = {
    "status",
    "transitions",
    "overrides",
    "scores",
    "batch_runs",
    "outbox",
    "campaign_feedback",
}


def tags(store: StateStore) -> dict[str, str]:
    """customer_id -> current tag."""
    state = store.state_frame()
    return dict(zip(state["customer_id"], state["tag"], strict=True))


def row_counts(store: StateStore) -> dict[str, int]:
    """Rows in each table a batch writes."""
    return {
        "status": len(store.state_frame()),
        "transitions": len(store.transitions_frame()),
        "scores": len(store.scores_frame()),
        "runs": len(store.runs()),
    }


# ---- schema ------------------------------------------------------------------------------------


def test_migrations_create_the_schema_the_models_describe(store_url):
    # Given a store opened without migrating
    store = StateStore(store_url, auto_migrate=False)
    engine = create_engine(store_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
        # When migrating, twice (the second is a no-op)
        store.migrate()
        store.migrate()
        # Then the tables exist and match the models exactly
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
        store.close()


def test_a_store_is_at_head_once_migrated_to_alembics_head(store_url):
    # Given Alembic's head revision of the migrations
    config = Config()
    config.set_main_option("script_location", store_module.MIGRATIONS_LOCATION)
    head = ScriptDirectory.from_config(config).get_current_head()
    # When a store is opened without migrating, then migrated
    with StateStore(store_url, auto_migrate=False) as store:
        before = store.at_head()
        store.migrate()
        # Then it is at head only once migrated, the head the store skips migrating at
        assert (before, store.at_head()) == (False, True)
    assert head == store_module.HEAD_REVISION


def test_decision_columns_are_the_rules_engines():
    # Given the engine's documented output columns / When compared with the store's input contract
    # Then they are the same columns, and the flag the day's capacity adds, which is optional
    assert list(DECISIONS_SCHEMA.columns) == [*rules.DECISION_COLUMNS, rules.OVER_CAPACITY]
    assert not DECISIONS_SCHEMA.columns[rules.OVER_CAPACITY].required


@pytest.fixture(scope="module")
def ruleset() -> rules.RuleSet:
    """The packaged rules, as the batch job loads them."""
    return with_casebook_points(
        rules.load_ruleset(
            known_features=[*load_catalog().names, *sorted(rules.MODEL_SCORE_COLUMNS)]
        )
    )


def scored(ruleset: rules.RuleSet, learners: dict[str, float]) -> pd.DataFrame:
    """Rules-only inputs of learners with no activity signal but ``days_since_last_event``."""
    frame = pd.DataFrame(
        {
            "customer_id": list(learners),
            "product_tag": "PT_001",
            "mrr": 30.0,
            "p_churn": float("nan"),
            "confidence": float("nan"),
            "risk_indicator_count": 0.0,
        }
    )
    for feature in ruleset.features_used:
        if feature not in frame:
            frame[feature] = 0.0
    return frame.assign(days_since_last_event=list(learners.values()))


def decide_and_apply(store: StateStore, ruleset: rules.RuleSet, day: date, learners) -> None:
    """One day of the batch job: read the state, let the engine decide, write the decisions."""
    state = store.state_frame(as_of=day)
    decided = rules.decide(ruleset, state, scored(ruleset, learners), day)
    store.apply_batch(
        day, decided, None, run_id=f"job-{day}", model_version=None, rules_only=True, now=at(day)
    )


def test_the_rules_engine_reads_the_state_and_the_store_takes_its_decisions(store, ruleset):
    # Given three learners started by the engine on day 1, and b pinned to ST_004 by a person
    decide_and_apply(store, ruleset, DAY1, {"a": 0.0, "b": 0.0, "c": 0.0})
    set_override(store, "b", "ST_004", actor="kim", reason="call", expires=None, now=at(DAY1, 9))
    # When a and b have been inactive 30 days by day 2 (a fact: it passes overrides)
    decide_and_apply(store, ruleset, DAY2, {"a": 30.0, "b": 30.0, "c": 1.0})
    # Then both churn, b's override is closed, and c stays
    assert tags(store) == {"a": "ST_006", "b": "ST_006", "c": "ST_001"}
    assert store.current("b")["override"] is None
    # And the engine accepts the state the store now holds
    decide_and_apply(store, ruleset, DAY3, {"c": 2.0})
    assert store.runs()["status"].tolist() == ["completed"] * 3


def test_the_store_keeps_the_words_of_why_a_rule_moved_a_learner(scores_store, ruleset):
    # Given two learners started on day 1, and on day 2 one of them inactive for 31 days
    decide_and_apply(scores_store, ruleset, DAY1, {"a": 0.0, "b": 0.0})
    day2 = scored(ruleset, {"a": 31.0, "b": 2.0})
    decided = rules.decide(
        ruleset, scores_store.state_frame(DAY2), day2, DAY2, wording=rule_wording()
    )
    # When the engine's decisions, with their why, are applied
    scores_store.apply_batch(
        DAY2, decided, None, run_id="job-2", model_version=None, rules_only=True, now=at(DAY2)
    )
    # Then the move's words come back from the audit log, and the day-1 entry move has none
    history = scores_store.history("a")
    assert history["rule_id"].tolist() == ["R01", "R09"]
    assert history["why"].iloc[-1] == "no activity for 31 days"
    assert pd.isna(history["why"].iloc[0])
    log = scores_store.transitions_frame()
    assert log.loc[log["customer_id"] == "b", "why"].isna().all()
    # And the latest score row is day 2's, with its priority and action
    latest = scores_store.latest_score("a")
    assert latest["as_of"] == DAY2 and latest["priority"] is not None
    assert scores_store.latest_score("nobody") is None


# ---- batches -----------------------------------------------------------------------------------


def test_first_batch_writes_status_transitions_scores_and_run(scores_store, finished_at):
    # Given four new learners and model scores for two of them
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "p_churn": [0.1, 0.9],
            "p_low": [0.05, 0.8],
            "p_high": [0.2, 0.95],
            "confidence": [0.7, 0.6],
        }
    )
    # When the batch is applied
    record = scores_store.apply_batch(
        DAY1,
        decisions(DAY1, [*FIRST_DAY, ("dz", None, "ST_001")]),
        scores,
        run_id="r1",
        model_version="v3",
        rules_only=False,
        now=at(DAY1),
    )
    # Then the run completed, with counts, and each learner has a status and a transition
    assert (record.run_id, record.status, record.finished_at) == ("r1", "completed", finished_at)
    assert (record.summary["transitions"], record.summary["scores"]) == (4, 4)
    assert tags(scores_store) == {"a": "ST_001", "b": "ST_001", "c": "ST_001", "dz": "ST_001"}
    log = scores_store.transitions_frame()
    assert log["run_id"].eq("r1").all() and log["model_version"].eq("v3").all()
    assert log["reason"].eq("moves to ST_001").all() and log["actor"].isna().all()
    assert log["created_at"].eq(pd.Timestamp(at(DAY1))).all()
    # And every learner has a score; the interval comes from the model frame
    stored = scores_store.scores_frame(DAY1).set_index("customer_id")
    assert stored.loc["b", "p_high"] == 0.95 and pd.isna(stored.loc["c", "p_low"])
    assert bool(stored.loc["dz", "control"]) and not bool(stored.loc["a", "control"])


def test_a_narrow_scores_read_equals_those_columns_of_the_full_read(scores_store):
    # Given two days of scores
    apply(scores_store, DAY1, FIRST_DAY)
    apply(scores_store, DAY2, [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_001")])
    columns = ["customer_id", "as_of", "control", "p_low"]
    # When only some columns are read
    narrow = scores_store.scores_frame(columns=columns)
    # Then they come in that order, with the same rows, values and dtypes as in the full read
    assert list(narrow.columns) == columns
    pd.testing.assert_frame_equal(narrow, scores_store.scores_frame()[columns])


@pytest.mark.parametrize("columns", [None, ["control", "p_low"]])
def test_a_read_of_each_days_learners_keeps_only_their_rows(scores_store, columns):
    # Given two days of scores
    apply(scores_store, DAY1, FIRST_DAY)
    apply(scores_store, DAY2, [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_001")])
    wanted = {DAY1: ["b", "dz", "nobody"], DAY2: ["a"]}
    # When each day is read for its own learners only (with all columns, or two without keys)
    kept = scores_store.scores_frame(
        columns=columns, learners=lambda day: pa.array(wanted[day], pa.string())
    )
    # Then the rows are the full read's rows of those learners on those days, in its order
    full = scores_store.scores_frame()
    rows = [
        customer in wanted[day.date()]
        for customer, day in zip(full["customer_id"], full["as_of"], strict=True)
    ]
    expected = full[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected if columns is None else expected[columns])
    assert len(kept) == 2  # b on day 1, a on day 2


def test_unchanged_decisions_are_scored_but_not_logged(scores_store):
    # Given day 1
    apply(scores_store, DAY1, FIRST_DAY)
    # When day 2 moves only a
    record = apply(
        scores_store,
        DAY2,
        [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_001"), ("c", "ST_001", "ST_001")],
    )
    # Then three scores and one transition are written for day 2
    assert len(scores_store.scores_frame(DAY2)) == 3
    assert scores_store.transitions_frame()["as_of"].eq(pd.Timestamp(DAY2)).sum() == 1
    assert record.summary["changed_decisions"] == 1
    state = scores_store.state_frame().set_index("customer_id")
    assert state.loc["b", "since"] == pd.Timestamp(DAY1)


def test_same_as_of_twice_is_a_no_op_returning_the_first_run(scores_store):
    # Given a completed day
    first = apply(scores_store, DAY1, FIRST_DAY, run_id="r1")
    before = row_counts(scores_store)
    # When the same day runs again, even with other decisions
    again = apply(scores_store, DAY1, [("a", None, "ST_001"), ("x", None, "ST_001")], run_id="r2")
    # Then nothing is written and the first run's record comes back
    assert again == first
    assert row_counts(scores_store) == before
    assert "x" not in tags(scores_store)


def test_replace_rewrites_the_latest_day_and_keeps_manual_transitions(scores_store):
    # Given day 1, day 2 moving a and b, and a person's override of c after day 2
    apply(scores_store, DAY1, FIRST_DAY)
    apply(scores_store, DAY2, [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_004")], run_id="old")
    set_override(
        scores_store,
        "c",
        "ST_004",
        actor="kim",
        reason="call went badly",
        expires=None,
        now=at(DAY2, 15),
    )
    # When day 2 is replaced by decisions that move only b, elsewhere
    record = apply(
        scores_store,
        DAY2,
        [("a", "ST_001", "ST_001"), ("b", "ST_001", "ST_002")],
        run_id="new",
        replace=True,
    )
    # Then day 2's old automatic moves are gone, a is back where day 1 left it
    assert record.run_id == "new"
    assert tags(scores_store) == {"a": "ST_001", "b": "ST_002", "c": "ST_004"}
    state = scores_store.state_frame().set_index("customer_id")
    assert state.loc["a", "since"] == pd.Timestamp(DAY1)
    log = scores_store.transitions_frame()
    assert "old" not in set(log["run_id"].dropna())
    assert log[log["actor"].notna()]["customer_id"].tolist() == ["c"]
    assert set(scores_store.scores_frame(DAY2)["run_id"]) == {"new"}
    assert scores_store.runs()["run_id"].tolist() == ["run-2024-03-01", "new"]


def test_replace_removes_learners_the_replaced_day_created(store):
    # Given a day that created learner n
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("n", None, "ST_001")])
    # When the day is replaced without n
    apply(store, DAY2, [("a", "ST_001", "ST_001")], run_id="again", replace=True)
    # Then n has no status and no transition left
    assert "n" not in tags(store)
    assert store.history("n").empty


def test_runs_must_move_forward_and_replace_only_the_latest_day(store):
    # Given days 1 and 2 completed
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    before = row_counts(store)
    # When an earlier, new day or a replace of day 1 is asked for, Then both are refused
    with pytest.raises(ValueError, match="before the latest completed batch"):
        apply(store, date(2024, 2, 28), FIRST_DAY)
    with pytest.raises(ValueError, match="only for the latest completed as_of"):
        apply(store, DAY1, FIRST_DAY, run_id="again", replace=True)
    # And nothing was written
    assert row_counts(store) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(as_of=pd.Timestamp(DAY2)), "as_of other than 2024-03-01"),
        (lambda f: f.assign(rule_id=None), "changed rows have no rule_id"),
        (lambda f: f.assign(to_tag="ST_005"), "ST_005, which only a person may set"),
        (lambda f: f.assign(to_tag="ST_009"), "to_tag"),
        (lambda f: pd.concat([f, f]), "customer_id"),
    ],
    ids=["other-day", "no-rule", "auto-st005", "unknown-tag", "duplicate-customer"],
)
def test_invalid_decisions_are_refused_before_anything_is_written(store, change, message):
    # Given a decision frame broken in one way
    broken = change(decisions(DAY1, FIRST_DAY))
    # When applied, Then a ValueError names the problem and the store stays empty
    with pytest.raises(ValueError, match=message):
        store.apply_batch(
            DAY1, broken, None, run_id="r", model_version=None, rules_only=True, now=at(DAY1)
        )
    assert row_counts(store) == {"status": 0, "transitions": 0, "scores": 0, "runs": 0}


def test_scores_without_a_decision_are_refused(store):
    # Given a model frame scoring a learner the rules did not decide on
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "ghost"],
            "p_churn": [0.1, 0.2],
            "p_low": [0.0, 0.1],
            "p_high": [0.2, 0.3],
            "confidence": [0.9, 0.9],
        }
    )
    # When applied, Then the error names the learner
    with pytest.raises(ValueError, match=r"1 customers have a score but no decision.*ghost"):
        store.apply_batch(
            DAY1,
            decisions(DAY1, FIRST_DAY),
            scores,
            run_id="r",
            model_version="v1",
            rules_only=False,
            now=at(DAY1),
        )


def test_a_failure_inside_the_batch_marks_the_run_failed_and_keeps_the_state(
    scores_store, monkeypatch
):
    # Given day 1 and a transitions insert that breaks on day 2
    apply(scores_store, DAY1, FIRST_DAY)
    before = row_counts(scores_store)
    real_insert = store_module.bulk_insert

    def failing_insert(conn, table, frame):
        real_insert(conn, table, frame)
        if table.name == "transitions":
            raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "bulk_insert", failing_insert)
    # When day 2 runs, Then the error propagates
    with pytest.raises(RuntimeError, match="disk full"):
        apply(scores_store, DAY2, [("a", "ST_001", "ST_002")])
    # And the run is recorded as failed while the state is as before
    runs = scores_store.runs().set_index("as_of")
    assert runs.loc[pd.Timestamp(DAY2), "status"] == "failed"
    assert "disk full" in runs.loc[pd.Timestamp(DAY2), "summary"]["error"]
    assert {**row_counts(scores_store), "runs": before["runs"]} == before
    # And a rerun completes the day
    monkeypatch.setattr(store_module, "bulk_insert", real_insert)
    assert (
        apply(scores_store, DAY2, [("a", "ST_001", "ST_002")], run_id="retry").status == "completed"
    )
    assert tags(scores_store)["a"] == "ST_002"


def test_a_decision_made_on_a_stale_state_is_skipped_and_counted(store):
    # Given a learner in ST_001
    apply(store, DAY1, FIRST_DAY)
    # When a decision claims they were in ST_002
    record = apply(store, DAY2, [("a", "ST_002", "ST_003"), ("b", "ST_001", "ST_002")])
    # Then that move is skipped, counted with an example, and the other applies
    assert record.summary["skipped"]["stale_from_tag"] == 1
    assert record.summary["skipped_examples"]["stale_from_tag"] == ["a"]
    assert tags(store) == {"a": "ST_001", "b": "ST_002", "c": "ST_001"}


def test_naive_now_is_refused(store):
    # Given a naive datetime / When used as now / Then a ValueError says so
    with pytest.raises(ValueError, match="naive"):
        store.apply_batch(
            DAY1,
            decisions(DAY1, FIRST_DAY),
            None,
            run_id="r",
            model_version=None,
            rules_only=True,
            now=datetime(2024, 3, 1),
        )


# ---- overrides ---------------------------------------------------------------------------------


def test_override_writes_override_transition_and_status_together_on_the_next_data_day(store):
    # Given a learner in ST_004 after the batch of day 2, and a wall clock months later
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_004")])
    later = datetime(2024, 9, 1, 15, tzinfo=UTC)
    # When a person starts a retention campaign for them (no dates given)
    set_override(store, "a", "ST_005", actor=" kim ", reason="retention call booked", now=later)
    # Then it takes effect on the data day after the latest batch day, for the default 28 days
    current = store.current("a")
    assert (current["tag"], current["since"], current["run_id"]) == ("ST_005", DAY3, None)
    held = current["override"]
    assert (held["kind"], held["actor"], held["effective_as_of"]) == ("campaign", "kim", DAY3)
    assert held["expires"] == DAY3 + timedelta(days=28)
    # And the audit log dates the move on the data day and records the wall-clock instant
    last = store.history("a").iloc[-1]
    assert (last["from_tag"], last["to_tag"], last["actor"]) == ("ST_004", "ST_005", "kim")
    assert last["as_of"] == pd.Timestamp(DAY3)
    assert pd.isna(last["rule_id"]) and last["reason"] == "retention call booked"
    assert last["created_at"] == pd.Timestamp(later)


def test_a_new_override_clears_the_previous_one(store):
    # Given an override of a
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "a", "ST_004", actor="kim", reason="first", expires=None, now=at(DAY1, 9))
    # When another person overrides a again
    set_override(store, "a", "ST_002", actor="lee", reason="second", expires=None, now=at(DAY1, 10))
    # Then only the second is open
    state = store.state_frame().set_index("customer_id")
    assert state.loc["a", "override_tag"] == "ST_002"
    assert store.current("a")["override"]["reason"] == "second"


OVERRIDE_ERRORS = [
    ({"tag": "ST_009"}, "unknown tag 'ST_009'"),
    ({"actor": "  "}, "needs an actor"),
    ({"reason": ""}, "needs a reason"),
    ({"reason": "  "}, "needs a reason"),
    ({"expires": DAY3}, "expires 2024-03-03 is not after the effective day 2024-03-03"),
    ({"effective": DAY2}, "effective day 2024-03-02 is already decided .* from 2024-03-03 on"),
    ({"expires": DAY4, "days": 3}, "not both"),
    ({"days": 0}, "at least one day"),
    ({"now": datetime(2024, 3, 1, 9)}, "naive"),
    ({"customer_id": "nobody"}, "unknown customer 'nobody'"),
    ({"customer_id": "gone", "tag": "ST_002"}, "into ST_002 only from ST_001, ST_003, ST_004"),
    ({"tag": "ST_005"}, "is ST_001: a person may move a learner into ST_005 only from ST_004"),
    ({"customer_id": "risky", "tag": "ST_005", "days": 40}, "lasts 14-28 days .*, not 40"),
    ({"customer_id": "risky", "tag": "ST_005", "days": 7}, "lasts 14-28 days .*, not 7"),
]


def test_override_errors_name_the_problem_and_write_nothing(store):
    # Given learners after the batch of day 2: one churned, one at risk
    apply(store, DAY1, [*FIRST_DAY, ("gone", None, "ST_001"), ("risky", None, "ST_001")])
    apply(store, DAY2, [("gone", "ST_001", "ST_006"), ("risky", "ST_001", "ST_004")])
    before = (row_counts(store), store.current("a"), len(store.overrides_frame()))
    valid = {"customer_id": "a", "tag": "ST_004", "actor": "kim", "reason": "why"}
    for change, message in OVERRIDE_ERRORS:
        # When an override breaks one rule, Then it is refused with a clear message
        request = {"now": at(DAY2, 9), **valid, **change}
        with pytest.raises(ValueError, match=message):
            set_override(store, request.pop("customer_id"), request.pop("tag"), **request)
    # And nothing changed
    assert (row_counts(store), store.current("a"), len(store.overrides_frame())) == before


def test_a_churned_learner_may_be_brought_back_to_st001_but_not_into_a_campaign(store):
    # Given a churned learner
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_006")])
    # When a person tries a campaign, Then it is refused: campaigns start from ST_004
    with pytest.raises(ValueError, match="into ST_005 only from ST_004"):
        set_override(store, "a", "ST_005", actor="kim", reason="win-back", now=at(DAY2, 11))
    # When a person brings them back to ST_001, Then the decision is recorded
    set_override(store, "a", "ST_001", actor="kim", reason="win-back call", now=at(DAY2, 11))
    assert store.history("a")["to_tag"].tolist() == ["ST_001", "ST_006", "ST_001"]


def test_override_with_expiry_holds_automatic_moves_until_it_expires(store):
    # Given a in ST_001, pinned to ST_002 by a person until day 4 (exclusive)
    apply(store, DAY1, FIRST_DAY)
    set_override(
        store, "a", "ST_002", actor="kim", reason="knows better", expires=DAY4, now=at(DAY1, 9)
    )
    # When day 3 (before expiry) decides to move a, Then the move is skipped and counted
    held = apply(store, DAY3, [("a", "ST_002", "ST_004")])
    assert held.summary["skipped"]["overridden"] == 1
    assert tags(store)["a"] == "ST_002"
    assert (
        store.state_frame(as_of=DAY3).set_index("customer_id").loc["a", "override_tag"] == "ST_002"
    )
    # When day 4 (the expiry day) decides the same, Then it applies: the override no longer holds
    assert pd.isna(store.state_frame(as_of=DAY4).set_index("customer_id").loc["a", "override_tag"])
    moved = apply(store, DAY4, [("a", "ST_002", "ST_004")])
    assert moved.summary["transitions"] == 1
    assert tags(store)["a"] == "ST_004"


def test_override_after_the_snapshot_blocks_moves_except_to_st006(store):
    # Given the state the batch job read before deciding
    apply(store, DAY1, FIRST_DAY)
    snapshot = store.state_frame(as_of=DAY2)
    assert snapshot["override_tag"].isna().all()
    # And overrides written after that snapshot, before the batch writes
    for learner in ("a", "b"):
        set_override(
            store, learner, "ST_004", actor="kim", reason="call", expires=None, now=at(DAY1, 20)
        )
    # When the decisions made on the snapshot are applied
    record = apply(store, DAY2, [("a", "ST_001", "ST_002"), ("b", "ST_001", "ST_006")])
    # Then a keeps the person's tag, b churns anyway and b's override is closed
    assert record.summary["skipped"]["overridden"] == 1
    assert tags(store) == {"a": "ST_004", "b": "ST_006", "c": "ST_001"}
    assert store.history("b")["from_tag"].tolist()[-1] == "ST_004"
    assert store.current("b")["override"] is None
    assert store.current("a")["override"]["tag"] == "ST_004"


# ---- reads -------------------------------------------------------------------------------------


def test_history_lists_automatic_and_manual_transitions_in_append_order(store):
    # Given automatic, manual and automatic moves of a, and moves of others between them
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "a", "ST_004", actor="kim", reason="call", expires=DAY3, now=at(DAY1, 9))
    apply(store, DAY2, [("b", "ST_001", "ST_002")])
    apply(store, DAY3, [("a", "ST_004", "ST_001")])
    # When a's history is read
    history = store.history("a")
    # Then it is a's transitions only, oldest first, each automatic or manual
    assert history["to_tag"].tolist() == ["ST_001", "ST_004", "ST_001"]
    assert history["id"].is_monotonic_increasing
    assert history["actor"].notna().tolist() == [False, True, False]
    assert history["rule_id"].notna().tolist() == [True, False, True]
    assert store.history("nobody").empty and store.current("nobody") is None


def test_transitions_frame_until_stops_at_that_day(store):
    # Given two days of moves
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    # When read until day 1, Then day 2 is left out
    assert store.transitions_frame(until=DAY1)["as_of"].max() == pd.Timestamp(DAY1)
    assert len(store.transitions_frame()) == 4


# ---- crashes and concurrency (a second process) ------------------------------------------------


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.BaseContext:
    """Child processes forked from a server that imported pandas and the store once.

    A fresh interpreter per child would spend seconds importing; the forkserver is a clean,
    single-threaded process, so forking it is safe (unlike forking the test process).
    """
    context = multiprocessing.get_context("forkserver")
    # pandera imports its validation backends on first use: import them in the server too.
    context.set_forkserver_preload(["tests.serving.batches", "pandera.backends.pandas.register"])
    return context


def start_child_batch(
    processes, url: str, work: Path, day: date, moves, pause_s: float, scores_dir=None
):
    """Start ``apply_batch`` of ``moves`` in another process; it pauses inside its transaction."""
    pd.to_pickle(
        {"as_of": day, "decisions": decisions(day, moves), "now": at(day)}, work / "job.pkl"
    )
    scores = None if scores_dir is None else str(scores_dir)
    child = processes.Process(target=run_paused_batch, args=(url, str(work), pause_s, scores))
    child.start()
    return child


def child_error(work: Path) -> str:
    error_file = work / "error.txt"
    return error_file.read_text() if error_file.exists() else "(no traceback written)"


def wait_for(path: Path, child, timeout_s: float = 60.0) -> None:
    """Wait until ``path`` exists; fail with the child's traceback if it exits first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if child.exitcode is not None:
            pytest.fail(f"child exited {child.exitcode} early:\n{child_error(path.parent)}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"child did not reach {path.name} in {timeout_s} s")
        time.sleep(0.02)


DAY2_MOVES = [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_002")]


def test_a_batch_killed_midway_leaves_the_previous_state_and_a_rerun_completes(
    scores_store, tmp_path, processes
):
    # Given day 1 completed
    apply(scores_store, DAY1, FIRST_DAY)
    before = (
        scores_store.state_frame(),
        scores_store.transitions_frame(),
        scores_store.scores_frame(),
    )
    # When day 2 is killed (SIGKILL) inside its transaction in another process
    child = start_child_batch(
        processes, scores_store.url, tmp_path, DAY2, DAY2_MOVES, 120, scores_store.scores_dir
    )
    wait_for(tmp_path / "inside", child)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    # Then the state is exactly day 1's and day 2 is marked as started, not completed
    after = (
        scores_store.state_frame(),
        scores_store.transitions_frame(),
        scores_store.scores_frame(),
    )
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new)
    assert scores_store.runs().set_index("run_id").loc["child", "status"] == "running"
    if scores_store.scores_dir is not None:  # the killed run's file is there, and unread
        assert (scores_store.scores_dir / "as_of=2024-03-02" / "child.parquet").exists()
    # And a rerun of day 2 completes it
    record = apply(scores_store, DAY2, DAY2_MOVES, run_id="rerun")
    assert (record.run_id, record.status) == ("rerun", "completed")
    assert tags(scores_store) == {"a": "ST_004", "b": "ST_002", "c": "ST_001"}
    assert scores_store.runs()["status"].tolist() == ["completed", "completed"]
    assert set(scores_store.scores_frame(DAY2)["run_id"]) == {"rerun"}


def test_an_override_during_a_batch_in_another_process_is_not_lost(store, tmp_path, processes):
    # Given day 1, and day 2 paused inside its transaction in another process
    apply(store, DAY1, FIRST_DAY)
    child = start_child_batch(processes, store.url, tmp_path, DAY2, DAY2_MOVES, pause_s=30)
    wait_for(tmp_path / "inside", child)
    # When a person overrides a (whom the batch moves) while the batch is still inside
    done: list[BaseException | None] = []

    def override() -> None:
        try:
            set_override(
                store,
                "a",
                "ST_005",
                actor="kim",
                reason="re-engagement",
                expires=None,
                now=at(DAY2, 3),
            )
            done.append(None)
        except BaseException as error:  # reported by the assertions below
            done.append(error)

    writer = threading.Thread(target=override)
    writer.start()
    # Then the override waits for the batch's writer lock: a second on, it has not landed
    writer.join(timeout=1.0)
    assert writer.is_alive() and not done, "the override did not wait for the batch"
    (tmp_path / "go").touch()
    child.join(timeout=60)
    writer.join(timeout=60)
    assert child.exitcode == 0, child_error(tmp_path)
    assert done == [None]
    # And it landed after the batch: both are kept, the override moved a out of the batch's tag
    assert tags(store) == {"a": "ST_005", "b": "ST_002", "c": "ST_001"}
    history = store.history("a")
    assert history["to_tag"].tolist() == ["ST_001", "ST_004", "ST_005"]
    assert history["run_id"].tolist()[1] == "child"
    assert history.iloc[-1]["from_tag"] == "ST_004"
    assert store.current("a")["override"]["tag"] == "ST_005"


# ---- per-learner moves (the service's apply: true) ---------------------------------------------


def test_applied_learners_move_with_their_status_without_marking_the_day_done(store):
    # Given learners tagged by the day-1 batch, one of them overridden since
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "c", "ST_004", actor="cs", reason="watch", expires=None, now=at(DAY1, 9))
    moves = decisions(DAY2, [("a", "ST_001", "ST_002"), ("b", "ST_002", "ST_003")])
    moves = pd.concat([moves, decisions(DAY2, [("c", "ST_004", "ST_001")])], ignore_index=True)
    # When the moves are applied on day 2 outside a batch
    result = store.apply_learners(DAY2, moves, run_id="api-1", model_version="7", now=at(DAY2, 10))
    # Then the free learner moves, the stale and the overridden ones are held, saying why
    assert result.outcomes == {"a": None, "b": "stale_from_tag", "c": "overridden"}
    assert result.applied == ["a"]
    assert tags(store) == {"a": "ST_002", "b": "ST_001", "c": "ST_004"}
    assert store.history("a")["model_version"].iloc[-1] == "7"
    # And no score or run row is written: the day-2 batch still runs
    assert row_counts(store)["scores"] == len(FIRST_DAY) and len(store.runs()) == 1
    assert apply(store, DAY2, [("a", "ST_002", "ST_002")]).status == "completed"


def test_applied_learners_before_the_latest_batch_day_are_refused(store):
    # Given a completed batch on day 2
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    before = row_counts(store)
    # When moves for day 1 are applied / Then they are refused and nothing is written
    with pytest.raises(ApplyRefused, match="before the latest batch day"):
        store.apply_learners(
            DAY1,
            decisions(DAY1, [("a", "ST_002", "ST_003")]),
            run_id="api-2",
            model_version=None,
            now=at(DAY2, 11),
        )
    assert row_counts(store) == before and tags(store)["a"] == "ST_002"


def test_the_state_of_some_learners_keeps_only_overrides_still_active(sqlite_store):
    # given a learner with an override from May 2 that no longer applies from May 10
    apply(sqlite_store, date(2026, 5, 1), [("L1", None, "ST_001")])
    set_override(
        sqlite_store,
        "L1",
        "ST_004",
        actor="cs",
        reason="call",
        expires=date(2026, 5, 10),
        now=at(date(2026, 5, 2), 9),
    )
    # when the state of some learners is read the day before and on that day
    before = sqlite_store.state_frame(date(2026, 5, 9), customer_ids=["L1", "L2"])
    after = sqlite_store.state_frame(date(2026, 5, 10), customer_ids=["L1"])
    # then only the first carries the override; unknown learners have no row
    assert list(before["customer_id"]) == ["L1"] and before["override_tag"].iloc[0] == "ST_004"
    assert after["tag"].iloc[0] == "ST_004" and pd.isna(after["override_tag"].iloc[0])
    # and the rows the service compares are the same state, one query either way
    rows = sqlite_store.state_rows(["L1", "L2"], date(2026, 5, 9))
    assert rows == {"L1": ("ST_004", date(2026, 5, 2), "ST_004", date(2026, 5, 10))}


def test_applied_moves_respect_overrides_and_the_latest_batch_day(sqlite_store):
    # given learners tagged by a batch on May 1, one of them overridden since
    day = date(2026, 5, 1)
    apply(sqlite_store, day, [("L1", None, "ST_001"), ("L2", None, "ST_001")])
    set_override(
        sqlite_store, "L2", "ST_004", actor="cs", reason="watch", expires=None, now=at(day, 9)
    )
    moves = decisions(date(2026, 5, 3), [("L1", "ST_001", "ST_004"), ("L2", "ST_004", "ST_001")])
    # when the proposed moves are applied two days later (the service's apply)
    written = sqlite_store.apply_learners(
        date(2026, 5, 3), moves, run_id="api-1", model_version="7", now=at(date(2026, 5, 3), 10)
    )
    # then the free learner moves and the overridden one is held, saying why
    assert written.outcomes == {"L1": None, "L2": "overridden"}
    assert sqlite_store.current("L1")["tag"] == "ST_004"
    assert sqlite_store.current("L2")["tag"] == "ST_004"
    assert sqlite_store.history("L1")["model_version"].iloc[-1] == "7"
    # and a day before the latest batch day is refused, writing nothing
    with pytest.raises(ApplyRefused, match="before the latest batch day"):
        sqlite_store.apply_learners(
            date(2026, 4, 30),
            decisions(date(2026, 4, 30), [("L1", "ST_004", "ST_001")]),
            run_id="api-2",
            model_version="7",
            now=at(date(2026, 5, 3), 11),
        )
    assert sqlite_store.current("L1")["tag"] == "ST_004"


# ---- a store that cannot be reached, opened or written ------------------------------------------


def test_an_unreachable_server_is_one_line_naming_it_without_the_password():
    # given a PostgreSQL URL where no server listens
    url = "postgresql+psycopg://lstep:s3cret@127.0.0.1:9/test"
    # when the store is opened, then one Unavailable names the store, masks the password
    with pytest.raises(Unavailable) as raised:
        StateStore(url)
    message = raised.value.message
    assert message.startswith("state store postgresql+psycopg://lstep:***@127.0.0.1:9/test: ")
    assert "s3cret" not in message and "\n" not in message


def test_a_url_that_is_no_database_says_so():
    with pytest.raises(Invalid, match=r"state store URL nonsense://x cannot be opened"):
        StateStore("nonsense://x")


def test_a_read_only_store_refuses_writes_in_one_line(tmp_path):
    # given a store with a learner, then opened read-only
    path = tmp_path / "state.db"
    with StateStore(f"sqlite:///{path}") as writable:
        apply(writable, DAY1, FIRST_DAY)
    read_only = StateStore(f"sqlite:///file:{path}?mode=ro&uri=true", auto_migrate=False)
    # when a person overrides a learner, then the write is refused naming the store
    refused = r"state store sqlite:///file.*: attempt to write a readonly database"
    with pytest.raises(Unavailable, match=refused):
        set_override(read_only, "a", "ST_004", actor="kim", reason="x", now=at(DAY1))
    # and reads still work
    assert tags(read_only)["a"] == "ST_001"
    read_only.close()


def test_the_state_of_a_few_learners_from_rows_is_the_validated_state_frame(store):
    # Given a held learner (no expiry), one in a retention campaign, one whose hold has expired
    # and one without an override, after two batch days
    apply(store, DAY1, [*FIRST_DAY, ("d", None, "ST_001")])
    apply(store, DAY2, [("b", "ST_001", "ST_004")])
    set_override(store, "a", "ST_002", actor="kim", reason="pin", expires=None, now=at(DAY2, 9))
    set_override(store, "b", "ST_005", actor="kim", reason="campaign", now=at(DAY2, 10))
    set_override(store, "c", "ST_004", actor="kim", reason="short", expires=DAY4, now=at(DAY2, 11))
    for day in (DAY3, DAY4 + timedelta(days=1)):
        for ids in (["a", "b", "c", "d", "nobody"], ["c"], ["nobody"], []):
            # When the state is read from the compiled query's rows and through the frame's
            # validation
            from_rows = store.state_of(ids, day)
            validated = store.state_frame(day, customer_ids=ids)
            # Then both are the same frame: values, dtypes and index
            pd.testing.assert_frame_equal(from_rows, validated)
    # And the overrides all apply on day 3; on day 5 the expired one is gone, the others apply
    first = store.state_of(["a", "b", "c"], DAY3)
    assert first["override_tag"].tolist() == ["ST_002", "ST_005", "ST_004"]
    later = store.state_of(["a", "b", "c"], DAY4 + timedelta(days=1))
    assert later["override_kind"].tolist()[:2] == ["hold", "campaign"]
    assert pd.isna(later["override_tag"].iloc[2])
