"""A file written whole or not at all (``features.atomic``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.atomic import replace_whole, write_atomically


def test_a_written_file_replaces_the_old_one_and_leaves_nothing_beside_it(tmp_path):
    # given a file and a new content for it
    target = tmp_path / "kept" / "state.json"
    target.parent.mkdir()
    target.write_text("old")

    # when it is replaced whole
    replace_whole(target, lambda partial: partial.write_text("new"))

    # then it holds the new content, and its directory holds it alone
    assert target.read_text() == "new"
    assert list(target.parent.iterdir()) == [target]


def test_a_write_that_fails_leaves_the_old_file_and_no_part_of_the_new_one(tmp_path):
    # given a file, and a write that fails half-way through its temporary file
    target = tmp_path / "state.json"
    target.write_text("old")

    def half_written(partial: Path) -> None:
        partial.write_text("ne")
        raise RuntimeError("disk gone")

    # when the file is replaced, then the writer's error comes through
    with pytest.raises(RuntimeError, match="disk gone"):
        replace_whole(target, half_written)

    # and the old file is intact, with nothing beside it
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_two_writes_of_one_file_never_share_a_temporary_file(tmp_path):
    # given two writes of the same file that record where they wrote
    target = tmp_path / "state.parquet"
    partials: list[Path] = []

    def recorded(partial: Path) -> None:
        partials.append(partial)
        partial.write_text(str(len(partials)))

    # when both run
    replace_whole(target, recorded)
    replace_whole(target, recorded)

    # then each wrote a hidden file of its own beside the target, and the last one won
    assert len(set(partials)) == 2
    assert all(p.parent == tmp_path and p.name.startswith(".state.parquet.") for p in partials)
    assert target.read_text() == "2"


def test_a_cache_that_cannot_be_written_is_false_not_an_error(tmp_path):
    # given a directory that cannot be made (a file is in its way) and one that can
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "kpis" / "day.json"
    free = tmp_path / "kpis" / "day.json"

    # when a cache file is written to each, then only the free one is, and is said so
    assert write_atomically(blocked, lambda partial: partial.write_text("{}")) is False
    assert write_atomically(free, lambda partial: partial.write_text("{}")) is True
    assert free.read_text() == "{}"
    # and an error that is not the file system's is not taken for one
    with pytest.raises(ValueError, match="bad"):
        write_atomically(free, lambda partial: (_ for _ in ()).throw(ValueError("bad")))
    assert free.read_text() == "{}"
