"""The workspace's engine seam: how DuckDB results reach pandas, and the types of its tables."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from features.windows import feature_day
from features.workspace import DuckDBEngine, connect, workspace
from tests.features.event_frames import customers_frame, events_frame

PLAIN = """
SELECT * FROM (VALUES
    (TRUE, CAST(3 AS TINYINT), CAST(7 AS BIGINT), CAST(1.5 AS DOUBLE), 'a',
     TIMESTAMP '2024-04-01 00:00:00'),
    (NULL, NULL, NULL, NULL, NULL, NULL)
) AS t(flag, small, events, share, name, moment)
"""


def test_an_arrow_fetch_gives_the_frame_df_gives_nulls_included():
    # given
    con = duckdb.connect()

    # when
    fetched = DuckDBEngine(con).fetch(PLAIN)

    # then: the same columns, dtypes and values as .df(); a null flag stays null, not False
    pd.testing.assert_frame_equal(fetched, con.execute(PLAIN).df(), check_exact=True)
    assert fetched["flag"].isna().tolist() == [False, True]
    assert fetched["events"].isna().tolist() == [False, True]
    assert str(fetched["name"].dtype) == "str"


def test_a_workspace_connection_keeps_its_freed_memory_and_reads_files_uncached():
    # given a connection for 2 threads and 1 GB
    con = connect(threads=2, memory_limit="1GB")

    # when its settings are read back
    settings = dict(
        con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', "
            "'allocator_flush_threshold', 'enable_external_file_cache')"
        ).fetchall()
    )

    # then the allocator hands memory back only above the connection's limit (not DuckDB's
    # 128 MB default), and parquet reads bypass the external file cache
    assert settings["threads"] == "2"
    assert settings["allocator_flush_threshold"] == "1GB"
    assert settings["enable_external_file_cache"] == "false"
    con.close()


def test_fetched_text_is_one_arrow_array_as_with_df():
    # given a result that DuckDB hands over in several Arrow batches
    con = duckdb.connect(config={"threads": 2})
    query = "SELECT CAST(i AS VARCHAR) AS name FROM range(300000) AS r(i)"
    assert con.sql(query).to_arrow_table().column("name").num_chunks > 1

    # when
    fetched = DuckDBEngine(con).fetch(query)

    # then: pa.array of the column is one array (code downstream concatenates such arrays)
    assert isinstance(pa.array(fetched["name"], from_pandas=True), pa.Array)
    assert fetched["name"].iloc[-1] == "299999"


MANY_BATCH_COLUMNS = (
    "CAST(i AS VARCHAR) AS name, CASE WHEN i % 7 = 0 THEN NULL ELSE i END AS events, "
    "CASE WHEN i % 5 = 0 THEN NULL ELSE i % 2 = 0 END AS flag, i / 3 AS share"
)
"""Text, nullable counts, flags and floats of ``i``, over a range DuckDB hands over in several
Arrow batches."""


def test_a_result_of_many_batches_is_fetched_whole_text_in_one_array_numbers_joined():
    # given text, nullable counts and flags that DuckDB hands over in several Arrow batches
    con = duckdb.connect(config={"threads": 2})
    query = f"SELECT {MANY_BATCH_COLUMNS} FROM range(300000) AS r(i) ORDER BY i"
    assert con.sql(query).to_arrow_table().column("events").num_chunks > 1

    # when
    fetched = DuckDBEngine(con).fetch(query)

    # then every row is there as .df() gives it, and the text is one Arrow array
    pd.testing.assert_frame_equal(fetched, con.execute(query).df(), check_exact=True)
    assert isinstance(pa.array(fetched["name"], from_pandas=True), pa.Array)
    assert fetched["events"].isna().sum() == len(range(0, 300000, 7))


def test_a_result_fetched_in_order_is_the_frame_taken_by_that_column():
    # given a result of many batches in an order of its own: text, nullable counts and flags
    con = duckdb.connect(config={"threads": 2})
    # (7919 is prime to 300000: row_id is a permutation of the rows)
    query = f"SELECT (i * 7919) % 300000 AS row_id, {MANY_BATCH_COLUMNS} FROM range(300000) AS r(i)"
    engine = DuckDBEngine(con)
    unordered = engine.fetch(query)

    # when
    ordered = engine.fetch(query, order_by="row_id")

    # then it is the unordered frame taken by row_id, column for column and dtype for dtype
    expected = unordered.sort_values("row_id", kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(ordered, expected, check_exact=True)
    assert ordered["row_id"].tolist() == list(range(300000))
    assert isinstance(pa.array(ordered["name"], from_pandas=True), pa.Array)
    # and a result .df() fetches is ordered the same way
    decimals = "SELECT * FROM (VALUES (3, 1.5), (1, NULL), (2, 2.5)) AS t(row_id, price)"
    assert engine.fetch(decimals, order_by="row_id")["row_id"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM (VALUES (1.5), (NULL)) AS t(price)",  # a DECIMAL
        "SELECT * FROM (VALUES (DATE '2024-04-01'), (NULL)) AS t(day)",
        "SELECT * FROM (VALUES (CAST(2 AS HUGEINT)), (NULL)) AS t(big)",
    ],
    ids=["decimal", "date", "hugeint"],
)
def test_a_result_of_other_types_is_fetched_as_df_fetches_it(query):
    # given
    con = duckdb.connect()

    # when
    fetched = DuckDBEngine(con).fetch(query)

    # then (Arrow's to_pandas would give Decimal objects, dates as objects, ...)
    pd.testing.assert_frame_equal(fetched, con.execute(query).df(), check_exact=True)


def test_the_window_and_history_counts_are_64_bit_integers():
    # given a log with events in the window and before it
    events = events_frame(
        [
            ["a", "2024-03-30 09:00:00", "session", 600.0, "web"],
            ["a", "2024-03-29 09:00:00", "lesson_completed", None, "mobile"],
            ["a", "2024-01-20 09:00:00", "milestone_completed", None, "web"],
        ]
    )
    customers = customers_frame([["a"]])

    # when
    with feature_day(events, customers, date(2024, 4, 1)) as day:
        frame = day.features(day.eligible())
        ws = day.workspace
        columns = {
            role: {row[0]: row[1] for row in ws.con.execute(f"DESCRIBE {ws.name(role)}").fetchall()}
            for role in ("window", "history", "history_at")
        }

    # then: no HUGEINT (DuckDB's count_if and integer sums) reaches the tables or the frame
    assert columns["window"]["ev7"] == "BIGINT"
    assert columns["window"]["slope_x10"] == "BIGINT"
    assert columns["history"]["lessons"] == "BIGINT"
    assert columns["history_at"]["milestones_before"] == "BIGINT"
    kinds = {kind for table in columns.values() for kind in table.values()}
    assert "HUGEINT" not in kinds
    assert frame.loc[0, "lessons_total"] == 1
    assert frame.loc[0, "milestones_total"] == 1


def test_a_workspace_on_another_engine_fetches_with_its_df():
    # given an engine that is not a DuckDB connection (a stand-in with the SqlEngine methods)
    class Result:
        def df(self) -> pd.DataFrame:
            return pd.DataFrame({"x": [1]})

    class Engine:
        def execute(self, sql: str) -> Result:
            self.sql = sql
            return Result()

        def register(self, name, frame): ...
        def unregister(self, name): ...
        def parquet_relation(self, ws, path, role): ...
        def column_names(self, relation): ...
        def numbered(self, pairs): ...

    engine = Engine()

    # when
    with workspace(engine) as ws:
        fetched = ws.fetch("SELECT 1 AS x")

    # then
    assert engine.sql == "SELECT 1 AS x"
    assert fetched["x"].tolist() == [1]
