"""Overrides and state on the data's clock, on SQLite and PostgreSQL (``serving.infra.state_sql``).

The wall clock of every test is months after the data, as it is for a demo log or a backfill.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from serving.core.frames import STATE_SCHEMA, validate_frame
from serving.infra.state_sql import state_select
from serving.infra.store import MIGRATIONS_LOCATION, StateStore
from tests.serving.batches import FIRST_DAY, apply, at, set_override

DAY1, DAY2, DAY3, DAY4, DAY5 = (date(2024, 3, day) for day in range(1, 6))
WALL = datetime(2024, 12, 2, 15, tzinfo=UTC)
"""The wall clock: far after every data day."""


def tag_on(store: StateStore, day: date | None, customer_id: str = "a") -> tuple:
    """(tag, since, override_tag, override_kind) of a learner on a data day."""
    state = store.state_frame(day).set_index("customer_id")
    row = state.loc[customer_id]
    override = None if pd.isna(row["override_tag"]) else row["override_tag"]
    kind = None if pd.isna(row["override_kind"]) else row["override_kind"]
    return row["tag"], row["since"].date(), override, kind


def test_an_override_dated_ahead_is_invisible_to_earlier_days(store):
    # Given day 1 done, and a hold at ST_004 that takes effect on day 4
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "a", "ST_004", actor="kim", reason="call", now=WALL, effective=DAY4)
    # When the state of days 2 and 3 is read, Then a is as day 1 left them, with no override
    assert tag_on(store, DAY2) == ("ST_001", DAY1, None, None)
    assert tag_on(store, DAY3) == ("ST_001", DAY1, None, None)
    # And from day 4 on the override applies
    assert tag_on(store, DAY4) == ("ST_004", DAY4, "ST_004", "hold")
    # When days 2 and 3 are decided and move a, Then the moves land in their days, and the
    # status stays the latest move in data time: the override's
    apply(store, DAY2, [("a", "ST_001", "ST_002")])
    assert tag_on(store, DAY3) == ("ST_002", DAY2, None, None)
    assert tag_on(store, None)[:2] == ("ST_004", DAY4)
    # And the batch of day 4 decides from the override's tag, held by it
    held = apply(store, DAY4, [("a", "ST_004", "ST_001")])
    assert held.summary["skipped"] == {"overridden": 1, "stale_from_tag": 0, "already_churned": 0}


def test_a_campaign_ends_with_its_box_and_is_closed_by_an_exit_move(store):
    # Given a in ST_004 and a 14-day retention campaign from day 3
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_004")])
    set_override(store, "a", "ST_005", actor="kim", reason="campaign", now=WALL, days=14)
    set_override(store, "b", "ST_005", actor="kim", reason="campaign", now=WALL)
    # Then it applies from day 3 to day 16, not on day 17
    assert tag_on(store, DAY3) == ("ST_005", DAY3, "ST_005", "campaign")
    assert tag_on(store, DAY3 + timedelta(days=13))[2] == "ST_005"
    assert tag_on(store, DAY3 + timedelta(days=14))[2] is None
    # When an exit move (re-engaged) of a is written on day 4
    record = apply(store, DAY3, [("c", "ST_001", "ST_001")])
    assert record.status == "completed"
    apply(store, DAY4, [("a", "ST_005", "ST_001")])
    # Then the campaign did not hold it, and it is closed on that day, saying why
    assert tag_on(store, DAY4) == ("ST_001", DAY4, None, None)
    closed = store.overrides_frame("a").iloc[0]
    assert closed["cleared_as_of"] == pd.Timestamp(DAY4)
    assert "automatic move on 2024-03-04" in closed["clear_reason"]
    # And b's campaign still runs
    assert store.current("b")["override"]["kind"] == "campaign"


def test_clearing_an_override_records_who_and_why_and_takes_effect_on_the_next_day(store):
    # Given a hold of a recorded after day 1
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "a", None, actor="kim", reason="vip", now=WALL)
    assert tag_on(store, DAY2) == ("ST_001", DAY1, "ST_001", "hold")
    apply(store, DAY2, [("c", "ST_001", "ST_001")])
    # When it is cleared after day 2
    cleared = store.clear_override("a", words=("lee", "vip period over"), now=WALL)
    # Then it applied on day 2 only, and the clear is recorded
    assert cleared["cleared_as_of"] == DAY3
    assert tag_on(store, DAY2)[2] == "ST_001" and tag_on(store, DAY3)[2] is None
    row = store.overrides_frame("a").iloc[0]
    assert (row["cleared_by"], row["clear_reason"]) == ("lee", "vip period over")
    assert store.current("a")["override"] is None
    # And clearing again is refused, writing nothing
    with pytest.raises(ValueError, match="has no open override to clear"):
        store.clear_override("a", words=("lee", "again"), now=WALL)
    with pytest.raises(ValueError, match="needs a reason"):
        store.clear_override("b", words=("lee", " "), now=WALL)


def test_the_audit_head_moves_on_every_override_write_a_clear_included(store):
    # Given day 1 done and a hold of a
    apply(store, DAY1, FIRST_DAY)
    set_override(store, "a", None, actor="kim", reason="vip", now=WALL)
    held = store.audit_head()
    # When nothing is written, Then the head stays
    assert store.audit_head() == held
    # When the hold is cleared (no transition, no new override row)
    store.clear_override("a", words=("lee", "vip period over"), now=WALL)
    cleared = store.audit_head()
    # Then the head moved, by its cleared count only
    assert cleared[:3] == held[:3] and cleared[3] == held[3] + 1
    # And a new hold of a moves it again, and replacing it moves both counts
    set_override(store, "a", None, actor="kim", reason="vip again", now=WALL)
    again = store.audit_head()
    set_override(store, "a", None, actor="kim", reason="longer", now=WALL)
    replaced = store.audit_head()
    assert len({held, cleared, again, replaced}) == 4
    assert (replaced[2] - again[2], replaced[3] - again[3]) == (1, 1)


def test_the_override_list_can_keep_only_those_still_applying(store):
    # Given an expired hold of a, an open hold of b and a campaign of c dated ahead
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("c", "ST_001", "ST_004")])
    set_override(store, "a", None, actor="kim", reason="short", now=WALL, days=1)
    set_override(store, "b", "ST_002", actor="kim", reason="open", now=WALL)
    set_override(store, "c", "ST_005", actor="kim", reason="later", now=WALL, effective=DAY5)
    apply(store, DAY3, [("c", "ST_001", "ST_001")])
    # When the list is read whole and from the next batch day (day 4)
    everything = store.overrides_frame()
    live = store.overrides_frame(live_from=DAY4)
    # Then the whole list is newest first, and the live one drops a's expired hold
    assert everything["customer_id"].tolist() == ["c", "b", "a"]
    assert live["customer_id"].tolist() == ["c", "b"]
    assert live.set_index("customer_id").loc["c", "effective_as_of"] == pd.Timestamp(DAY5)


def test_a_replayed_day_before_an_override_decides_as_it_did_before(store):
    # Given days 1-2 decided, and what the engine reads for day 2
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_004")])
    before = store.state_frame(DAY2)
    # When a campaign is recorded afterwards (effective day 3)
    set_override(store, "a", "ST_005", actor="kim", reason="campaign", now=WALL)
    # Then day 2 reads exactly as before (a dry run or a rerun of it decides the same)
    pd.testing.assert_frame_equal(store.state_frame(DAY2), before)
    # And the moves of day 2 cannot be rewritten by the override: the day is refused
    with pytest.raises(ValueError, match="already decided"):
        set_override(store, "b", None, actor="kim", reason="late", now=WALL, effective=DAY2)


def test_the_state_frame_types_its_rows_as_the_state_schema_does(store):
    # Given moves on days 1-3, a campaign from day 3 (expiring) and a hold on c (open-ended)
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_004")])
    set_override(store, "a", "ST_005", actor="kim", reason="campaign", now=WALL, days=14)
    set_override(store, "c", "ST_002", actor="kim", reason="hold", now=WALL, effective=DAY3)
    apply(store, DAY3, [("b", "ST_001", "ST_002")])
    for day in (DAY1, DAY2, DAY3, DAY5, date(2024, 3, 20), None):
        # When the state of the day is read (b's tag on day 1 and 2 comes from the log)
        state = store.state_frame(day)
        # Then it is the frame the state schema makes of SQLAlchemy's rows of the same query:
        # the same dtypes, days at midnight, missing text NaN and missing days NaT
        with store._connect() as conn:
            rows = conn.execute(state_select(day)).mappings().all()
        expected = validate_frame(pd.DataFrame([dict(row) for row in rows]), STATE_SCHEMA)
        pd.testing.assert_frame_equal(state, expected, check_exact=True)
    assert state["override_kind"].tolist()[0] == "campaign" and pd.isna(state["override_tag"][1])


def migrate_store(url: str, revision: str, *, down: bool = False) -> None:
    """Alembic upgrade (or downgrade) of the store at ``url`` to ``revision``."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_LOCATION)
    engine = create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)
    engine.dispose()


OLD_OVERRIDES = text(
    "INSERT INTO overrides (customer_id, tag, actor, reason, created_at, expires, cleared_at) "
    "VALUES (:customer_id, :tag, 'kim', 'why', :created_at, :expires, :cleared_at)"
)


def test_migration_0002_keeps_what_old_overrides_meant_and_downgrades(store_url):
    # Given a store at revision 0001 with a batch day and three old overrides
    migrate_store(store_url, "0001_initial")
    old = StateStore(store_url, auto_migrate=False)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO status (customer_id, tag, since, updated_at) VALUES "
                "('a', 'ST_005', :day, :at), ('b', 'ST_004', :day, :at), ('c', 'ST_001', :day, :at)"
            ),
            {"day": DAY2, "at": at(DAY2)},
        )
        rows = [
            {"customer_id": "a", "tag": "ST_005", "created_at": at(DAY2, 23), "expires": None,
             "cleared_at": None},
            {"customer_id": "b", "tag": "ST_004", "created_at": at(DAY2, 9), "expires": DAY4,
             "cleared_at": None},
            {"customer_id": "c", "tag": "ST_001", "created_at": at(DAY1, 9), "expires": None,
             "cleared_at": at(DAY2, 9)},
        ]  # fmt: skip
        conn.execute(OLD_OVERRIDES, rows)
    # When migrated to head
    migrate_store(store_url, "head")
    frame = old.overrides_frame().set_index("customer_id")
    # Then the ST_005 one is a campaign with the default box, the others holds; each applies
    # from the UTC day it was recorded, and the cleared one ended on the day it was cleared
    assert frame.loc["a", "kind"] == "campaign" and frame.loc["b", "kind"] == "hold"
    assert frame.loc["a", "expires"] == pd.Timestamp(DAY2 + timedelta(days=28))
    assert frame.loc["b", "effective_as_of"] == pd.Timestamp(DAY2)
    assert frame.loc["b", "expires"] == pd.Timestamp(DAY4)
    assert frame.loc["c", "cleared_as_of"] == pd.Timestamp(DAY2)
    assert tag_on(old, DAY3, "b") == ("ST_004", DAY2, "ST_004", "hold")
    # When downgraded again, Then every row of 0001 is still there (the campaign keeps the box
    # the upgrade gave it: an old "no expiry" campaign never ended, which was the bug)
    migrate_store(store_url, "0001_initial", down=True)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT customer_id, tag FROM overrides ORDER BY customer_id"))
        assert [tuple(row) for row in kept] == [("a", "ST_005"), ("b", "ST_004"), ("c", "ST_001")]
        assert conn.execute(text("SELECT count(*) FROM status")).scalar_one() == 3
    engine.dispose()
    old.close()
