"""``serving.infra.driver_rows``' SQLite statements: the columns holding one value in every row
are written into the ``INSERT`` as literals (``sqlite_insert``), and what they store is what
binding them stores, value and type."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime

import pandas as pd
import pytest

import serving.infra.driver_rows as rows_module
from serving.infra.driver_rows import constant_literals, sql_literal, sqlite_insert
from serving.infra.sql import bulk_insert
from serving.infra.store import StateStore
from serving.infra.tables import Transition

TRANSITIONS = Transition.__table__
DAY = date(2026, 1, 5)
NOW = datetime(2026, 1, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -7, 2**63 - 1, 0.1, -2.5e-308, 1e300, "", "O'Brien", "''; DROP", "é"],
)
def test_a_literal_stores_what_binding_the_value_stores(value):
    # Given a value as the driver binds it, and its literal
    literal = sql_literal(value)
    # When SQLite reads both
    with sqlite3.connect(":memory:") as conn:
        bound = conn.execute("SELECT typeof(?), ?", (value, value)).fetchone()
        written = conn.execute(f"SELECT typeof({literal}), {literal}").fetchone()
    # Then they are the same type and value
    assert written == bound


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 2**64, b"bytes", "a\x00b", DAY])
def test_a_value_without_a_faithful_literal_stays_bound(value):
    assert sql_literal(value) is None


def _moves(count: int) -> pd.DataFrame:
    """Transitions of ``count`` learners by rule R01, on one day of one run."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series([f"learner_{n:02d}" for n in range(count)], dtype="str"),
            "as_of": [DAY] * count,
            "from_tag": pd.Series([None] * count, dtype="str"),
            "to_tag": pd.Series(["ST_001", "ST_002"] * (count // 2), dtype="str"),
            "rule_id": pd.Series(["R01"] * count, dtype="str"),
            "actor": [None] * count,
            "reason": pd.Series(["it's a reason"] * count, dtype="str"),
            "run_id": pd.Series(["d1"] * count, dtype="str"),
            "created_at": pd.Series([NOW] * count),
        }
    )


def test_the_columns_of_one_value_are_written_into_the_statement_and_the_rest_bound(tmp_path):
    # Given a day's transitions: the day, the run, the rule, the reason, the time and the
    # missing from-tag and actor the same in every row
    moves = _moves(6)
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store, store._connect() as conn:
        # When their statement is made
        statement, bound = sqlite_insert(conn, TRANSITIONS, moves)
    # Then only the learner and the tag are bound, and the rest are literals
    assert bound == ["customer_id", "to_tag"]
    assert statement.count("?") == 2
    assert "'it''s a reason'" in statement and "NULL" in statement
    assert statement.startswith("INSERT INTO transitions (customer_id, to_tag, as_of, from_tag")


def _stored(path) -> list[tuple]:
    """Each transition's columns and their SQLite types, the autoincrement id aside."""
    with sqlite3.connect(path) as conn:
        names = [row[1] for row in conn.execute("PRAGMA table_info(transitions)")][1:]
        typed = ", ".join(f"typeof({name}), {name}" for name in names)
        return conn.execute(f"SELECT {typed} FROM transitions ORDER BY customer_id").fetchall()


def test_rows_with_literals_store_what_rows_bound_whole_store(tmp_path):
    # Given the same transitions into two stores: one by the bulk insert, one every column bound
    moves = _moves(6)
    paths = [tmp_path / "literal.db", tmp_path / "bound.db"]
    with StateStore(f"sqlite:///{paths[0]}") as store, store._writer() as conn:
        bulk_insert(conn, TRANSITIONS, moves)
    with StateStore(f"sqlite:///{paths[1]}") as store, store._writer() as conn:
        every = str(TRANSITIONS.insert().compile(dialect=conn.dialect, column_keys=list(moves)))
        conn.exec_driver_sql(every, rows_module.driver_rows(conn, TRANSITIONS, moves))
    # When both are read back with their types, Then they are the same, value for value
    literal, bound = _stored(paths[0]), _stored(paths[1])
    assert len(literal) == 6
    assert literal == bound


def test_what_is_not_one_value_stays_bound(tmp_path, monkeypatch):
    # Given columns that differ only past the rows judged first, or miss one value among
    # equal ones, and a column the caller keeps bound
    monkeypatch.setattr(rows_module, "_SAMPLE_ROWS", 3)
    moves = _moves(8)
    moves.loc[6, "reason"] = "another reason"
    moves["rule_id"] = moves["rule_id"].astype("string[pyarrow]")  # compares missing as NA
    moves.loc[7, "rule_id"] = None
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store, store._connect() as conn:
        # When the constant columns are found
        literals = constant_literals(conn, TRANSITIONS, moves, keep=["run_id"])
        # Then those three are not among them, the day and the time are
        assert {"reason", "rule_id", "run_id", "customer_id", "to_tag"}.isdisjoint(literals)
        assert {"as_of", "created_at", "from_tag", "actor"} <= set(literals)
        # And a single row, or a frame of nothing but constants, binds every column
        assert constant_literals(conn, TRANSITIONS, moves.iloc[:1]) == {}
        assert constant_literals(conn, TRANSITIONS, moves[["as_of", "run_id"]]) == {}
