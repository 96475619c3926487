"""The day's answers on disk: ``<data_dir>/answers/as_of=YYYY-MM-DD.<tag>.arrow``.

One Arrow IPC file per batch day and champion/rules (the ``tag``), uncompressed and in a single
record batch, so that opening it memory-maps it: a service holds no learner in its heap, the
operating system pages in the rows that are asked for, and every worker process shares them.
The table itself is made in ``serving.app.answers``; here it is only written (atomically: a
reader never sees a half-written file) and opened.
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

ANSWERS_SUBDIR = "answers"
_DAY_IN_NAME = re.compile(r"as_of=(\d{4}-\d{2}-\d{2})\.")


def answers_path(data_dir: Path, as_of: date, tag: str) -> Path:
    """``<data_dir>/answers/as_of=YYYY-MM-DD.<tag>.arrow``."""
    return Path(data_dir) / ANSWERS_SUBDIR / f"as_of={as_of.isoformat()}.{tag}.arrow"


def write_answers_file(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as one uncompressed record batch, atomically (temporary file, rename).

    Raises:
        OSError: the directory cannot be written (the caller says what it means).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        combined = table.combine_chunks()
        with pa.OSFile(str(partial), "wb") as sink, ipc.new_file(sink, combined.schema) as writer:
            # One batch: each column is one contiguous array the reader views without copying.
            writer.write_table(combined, max_chunksize=max(len(combined), 1))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def open_answers_file(path: Path) -> pa.Table | None:
    """The table of an answers file, memory-mapped (no copy), or None when there is none.

    Raises:
        pyarrow.ArrowInvalid: the file is not an Arrow IPC file (corrupt or foreign).
    """
    if not path.is_file():
        return None
    source = pa.memory_map(str(path), "r")
    return ipc.open_file(source).read_all()


def remove_older_answers(data_dir: Path, as_of: date) -> list[Path]:
    """Remove the answers files (and their locks and leftovers) of days before ``as_of``.

    Only the latest day is ever served; a file an old service still maps stays readable to it
    until it lets go (POSIX keeps an unlinked file's pages for its mappers).
    """
    directory = Path(data_dir) / ANSWERS_SUBDIR
    removed = []
    for path in directory.glob("*as_of=*") if directory.is_dir() else []:
        found = _DAY_IN_NAME.search(path.name)
        if found and date.fromisoformat(found.group(1)) < as_of:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def build_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on building ``path`` (its ``.lock`` beside it).

    Several worker processes of a service may miss the same file at once; the one that gets the
    lock builds it, the others keep answering on demand and look again later.

    Yields:
        True when this process holds the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = [
    "ANSWERS_SUBDIR",
    "answers_path",
    "build_lock",
    "open_answers_file",
    "remove_older_answers",
    "write_answers_file",
]
