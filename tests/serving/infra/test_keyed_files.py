"""Parquet files kept with the key they were computed under (``serving.infra.keyed_files``)."""

from __future__ import annotations

import pyarrow as pa

from serving.infra.keyed_files import key_of, read_keyed, write_keyed

ENTRY = b"lstep.test"


def test_a_file_is_read_back_under_its_key_only(tmp_path):
    # given a table written under key "k1" (its own metadata kept)
    table = pa.table({"x": [1, 2]}).replace_schema_metadata({b"own": b"kept"})
    path = tmp_path / "sub" / "t.parquet"
    assert write_keyed(path, table, ENTRY, "k1")
    # then its key is k1, it is read under k1 with its rows and metadata, and not under k2
    assert key_of(path, ENTRY) == "k1"
    found = read_keyed(path, ENTRY, "k1")
    assert found is not None and found.column("x").to_pylist() == [1, 2]
    assert found.schema.metadata[b"own"] == b"kept"
    assert read_keyed(path, ENTRY, "k2") is None
    # and no temporary file is left beside it
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]


def test_a_missing_or_damaged_file_is_a_miss(tmp_path):
    damaged = tmp_path / "d.parquet"
    damaged.write_bytes(b"not parquet")
    for path in (tmp_path / "missing.parquet", damaged):
        assert key_of(path, ENTRY) is None
        assert read_keyed(path, ENTRY, "k1") is None


def test_a_file_that_cannot_be_written_says_so(tmp_path):
    (tmp_path / "blocked").write_text("a file where the directory should be")
    assert not write_keyed(tmp_path / "blocked" / "t.parquet", pa.table({"x": [1]}), ENTRY, "k")
