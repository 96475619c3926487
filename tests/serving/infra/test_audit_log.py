"""The audit log's typed read (``serving.infra.audit_log``) against the ORM rows it replaced."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import insert

from serving.core.frames import TRANSITIONS_COLUMNS
from serving.infra.sql import read_frame, transitions_select
from serving.infra.tables import Transition
from tests.serving.batches import FIRST_DAY, apply

DAY1, DAY2 = date(2024, 3, 1), date(2024, 3, 2)


def _orm_read(store) -> pd.DataFrame:
    with store._connect() as conn:
        return read_frame(conn, transitions_select(), TRANSITIONS_COLUMNS)


def test_the_typed_read_of_the_audit_log_is_the_orm_read(store):
    # Given an empty store: both reads give the same empty, typed frame
    pd.testing.assert_frame_equal(store.transitions_frame(), _orm_read(store))
    # Given two batch days (onboarding, then a move) and a person's move with a p_churn and an
    # instant far from midnight, recorded in another time zone
    apply(store, DAY1, FIRST_DAY)
    apply(store, DAY2, [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_001")])
    with store._engine.begin() as conn:
        conn.execute(
            insert(Transition).values(
                customer_id="c", as_of=DAY2, from_tag="ST_001", to_tag="ST_005", rule_id=None,
                actor="kim", reason="called", p_churn=0.25,
                created_at=datetime(2024, 3, 2, 23, 59, 58, 123456, tzinfo=UTC),
            )
        )  # fmt: skip
    # When the log is read / Then the typed read equals the ORM's, value for value and type
    typed = store.transitions_frame()
    pd.testing.assert_frame_equal(typed, _orm_read(store))
    assert len(typed) == 5
    assert typed["created_at"].iloc[-1] == pd.Timestamp("2024-03-02 23:59:58.123456", tz="UTC")
    # and the read up to a day keeps the days up to it
    assert store.transitions_frame(until=DAY1)["as_of"].eq(pd.Timestamp(DAY1)).all()
    # and a read of some columns is those columns of the whole read, in the order asked
    columns = ["to_tag", "id", "as_of", "actor", "created_at"]
    narrow = store.transitions_frame(columns=columns)
    pd.testing.assert_frame_equal(narrow, typed[columns])


def test_the_audit_log_read_through_the_driver_is_the_readers(store, monkeypatch):
    # Given a log with a person's move far from midnight
    from serving.infra import arrow_reads

    apply(store, DAY1, FIRST_DAY)
    with store._engine.begin() as conn:
        conn.execute(
            insert(Transition).values(
                customer_id="c", as_of=DAY2, from_tag="ST_001", to_tag="ST_005", rule_id=None,
                actor="kim", reason="called",
                created_at=datetime(2024, 3, 2, 23, 59, 58, 123456, tzinfo=UTC),
            )
        )  # fmt: skip
    # When it is read where no reader process can run (days and instants come as the
    # driver's text on SQLite), then it is the ORM's frame too
    monkeypatch.setattr(arrow_reads, "READER_SUPPORTED", False)
    pd.testing.assert_frame_equal(store.transitions_frame(), _orm_read(store))
