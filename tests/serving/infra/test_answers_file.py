"""The answers file (``serving.infra.answers_file``): written whole, mapped without a copy."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.infra.answers_file import (
    answers_path,
    build_lock,
    open_answers_file,
    remove_older_answers,
    write_answers_file,
)

DAY = date(2026, 5, 20)


def test_a_written_table_reads_back_whole_and_memory_mapped(tmp_path):
    # given a table of a few thousand rows written as the day's answers
    table = pa.table({"key": pa.array([f"C{i:07d}" for i in range(5000)]), "x": range(5000)})
    path = write_answers_file(table, answers_path(tmp_path, DAY, "model-1.rules-abc"))
    # when it is opened
    allocated = pa.total_allocated_bytes()
    read = open_answers_file(path).table
    # then it is the same table, in one chunk per column, and nothing was copied into the heap
    assert read.equals(table) and read.column("x").num_chunks == 1
    assert pa.total_allocated_bytes() - allocated < 4096
    assert path.name == "as_of=2026-05-20.model-1.rules-abc.arrow"
    # and no temporary file is left beside it; a missing file reads as None
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert open_answers_file(answers_path(tmp_path, DAY, "model-2.rules-abc")) is None


def test_older_days_files_go_and_the_days_own_stay(tmp_path):
    # given answers files of three days (two tags on the newest) and a lock of an old day
    table = pa.table({"x": [1]})
    old = write_answers_file(table, answers_path(tmp_path, date(2026, 5, 18), "model-1.r"))
    older = write_answers_file(table, answers_path(tmp_path, date(2026, 5, 19), "model-1.r"))
    lock = old.with_name(f".{old.name}.lock")
    lock.touch()
    kept = [write_answers_file(table, answers_path(tmp_path, DAY, tag)) for tag in ("a", "b")]
    # when the older ones are removed on the newest day
    removed = remove_older_answers(tmp_path, DAY)
    # then only the newest day's files remain
    assert sorted(removed) == sorted([old, older, lock])
    assert sorted(old.parent.iterdir()) == sorted(kept)


def test_one_process_at_a_time_holds_the_build_lock(tmp_path):
    # given a file being built under its lock
    path = answers_path(tmp_path, DAY, "model-1.r")
    # when another asks for the lock meanwhile, then it does not get it
    with build_lock(path) as first, build_lock(path) as second:
        assert first and not second
    # and once released, the next one gets it
    with build_lock(path) as third:
        assert third


def _resident_bytes(path: Path) -> int:
    """This process's resident bytes of its mappings of ``path`` (``/proc/self/smaps``)."""
    resident, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            resident += int(line.split()[1]) * 1024
    return resident


def test_reading_past_the_budget_lets_the_mapped_pages_go(tmp_path):
    # given an answers file of ~13 MB opened with a 64 MiB resident budget, and read whole
    rng = np.random.default_rng(7)
    table = pa.table({f"x{i}": rng.random(200_000) for i in range(8)})
    path = write_answers_file(table, answers_path(tmp_path, DAY, "model-1.rules-abc"))
    mapped = open_answers_file(path, budget_bytes=64 * 2**20)
    total = sum(float(np.sum(column.to_numpy())) for column in mapped.table.columns)
    assert _resident_bytes(path) > 10 * 2**20
    # when fewer rows than the budget allows are counted (each up to a 2 MiB folio per buffer)
    # then nothing is let go
    mapped.touched(5, ["x0"])
    assert mapped.releases == 0 and _resident_bytes(path) > 10 * 2**20
    # when the rows read pass the budget
    mapped.touched(1_000, ["x0"])
    # then the process's resident share of the file is let go, and every value still reads back
    assert mapped.releases == 1
    assert _resident_bytes(path) < 2**20
    assert sum(float(np.sum(column.to_numpy())) for column in mapped.table.columns) == total
    assert mapped.table.equals(table)


def test_a_columns_range_is_let_go_and_the_others_stay(tmp_path):
    # given an answers file of eight ~1.6 MB columns, read whole
    rng = np.random.default_rng(8)
    table = pa.table({f"x{i}": rng.random(200_000) for i in range(8)})
    path = write_answers_file(table, answers_path(tmp_path, DAY, "model-1.rules-abc"))
    mapped = open_answers_file(path)
    for column in mapped.table.columns:
        column.to_numpy().sum()
    resident = _resident_bytes(path)
    # when two columns are let go
    mapped.let_go(["x0", "x1"])
    # then about their two columns' bytes left the resident set, not the whole file
    freed = resident - _resident_bytes(path)
    assert 2 * 1.5e6 < freed < 3 * 1.7e6
    assert mapped.releases == 0 and mapped.table.equals(table)


def test_many_rows_are_taken_a_few_columns_at_a_time_and_let_go(tmp_path):
    # given an answers file of eight ~1.6 MB columns, opened with nothing resident
    rng = np.random.default_rng(9)
    table = pa.table({f"x{i}": rng.random(200_000) for i in range(8)})
    path = write_answers_file(table, answers_path(tmp_path, DAY, "model-1.rules-abc"))
    mapped = open_answers_file(path)
    # when 500 rows spread over the file are taken from five columns, and then 2 rows
    positions = sorted(rng.choice(200_000, size=500, replace=False).tolist())
    many = mapped.take(positions, ["x3", "x0", "x5", "x1", "x7"])
    few = mapped.take([7, 3], ["x2"])
    # then they are the table's rows of those columns, in that order
    assert many.equals(table.select(["x3", "x0", "x5", "x1", "x7"]).take(positions))
    assert few.column("x2").to_pylist() == [table["x2"][7].as_py(), table["x2"][3].as_py()]
    # and the many rows' columns were let go once read: of the five (~8 MB), at most the two
    # rows' folio stays resident (a folio is mapped whole: up to 2 MiB)
    assert _resident_bytes(path) < 3e6
