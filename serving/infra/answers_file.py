"""The day's answers on disk: ``<data_dir>/answers/as_of=YYYY-MM-DD.<tag>.arrow``.

One Arrow IPC file per batch day and champion/rules (the ``tag``), uncompressed and in a single
record batch, so that opening it memory-maps it: a service holds no learner in its heap, the
operating system pages in the rows that are asked for, and every worker process shares them.
The table itself is made in ``serving.app.answers``; here it is only written (atomically: a
reader never sees a half-written file) and opened.

A mapped page a process has read stays in its resident set until the process lets it go, so a
worker that had looked up every learner once (the reasons warm-up reads the call list's rows,
spread over the whole file) would count the whole file in its RSS: 3 GiB per worker at 5M
learners. ``MappedAnswers`` counts the pages its reader may have touched and, past a budget,
tells the kernel it no longer needs them (``madvise(MADV_DONTNEED)``): they stay in the shared
page cache and come back on the next read (a minor fault, microseconds), and each worker's
resident share of the file stays under the budget.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from features.atomic import partial_path

ANSWERS_SUBDIR = "answers"
RESIDENT_BUDGET_BYTES = 384 * 2**20
"""How much of the mapped file a process may hold resident before it lets its pages go."""
ROWS_READ_WHOLE = 4
"""Up to this many rows are taken in one read; more are read a few columns at a time."""
COLUMNS_PER_READ = 8
FOLIO_BYTES = 2 * 2**20
"""The most one read of a mapped page can make resident (a page-cache folio, mapped whole)."""
_DAY_IN_NAME = re.compile(r"as_of=(\d{4}-\d{2}-\d{2})\.")


def answers_path(data_dir: Path, as_of: date, tag: str) -> Path:
    """``<data_dir>/answers/as_of=YYYY-MM-DD.<tag>.arrow``."""
    return Path(data_dir) / ANSWERS_SUBDIR / f"as_of={as_of.isoformat()}.{tag}.arrow"


def write_answers_file(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as one uncompressed record batch, atomically (temporary file, rename).

    Raises:
        OSError: the directory cannot be written (the caller says what it means).
    """
    staged = stage_answers_file(table, path)
    try:
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def stage_answers_file(table: pa.Table, path: Path) -> Path:
    """Write ``table`` beside ``path`` under a temporary name no reader opens, and return that
    name: renaming it to ``path`` publishes it whole (``write_answers_file``), or it is
    removed; a failed write leaves nothing.

    Raises:
        OSError: the directory cannot be written (the caller says what it means).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        combined = table.combine_chunks()
        with pa.OSFile(str(partial), "wb") as sink, ipc.new_file(sink, combined.schema) as writer:
            # One batch: each column is one contiguous array the reader views without copying.
            writer.write_table(combined, max_chunksize=max(len(combined), 1))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


class MappedAnswers:
    """An answers file's table over a read-only memory map, with a bound on its resident pages.

    Each read of a mapped page can make a whole page-cache folio resident in the process (Linux
    maps large folios whole: 1.5-2 MiB per random read of one value here), so one learner's
    lookup across ~90 columns can add ~100 MiB. The reads are counted at that cost
    (``touched``) and, past the budget, the process lets the whole map go; a read of many rows
    lets each column's range go once it has read it (``let_go``).

    Attributes:
        table: the file's table; its buffers are views of the map (nothing copied).
        releases: how many times the whole map was let go.
    """

    def __init__(
        self,
        table: pa.Table,
        mapping: mmap.mmap | None = None,
        *,
        budget_bytes: int = RESIDENT_BUDGET_BYTES,
    ) -> None:
        self.table = table
        self._mapping = mapping  # None: a table held in memory (nothing to let go)
        self._budget = budget_bytes
        self._cost = {name: _read_cost(table.column(name)) for name in table.column_names}
        self._ranges = {} if mapping is None else _column_ranges(table, mapping)
        self._touched = 0
        self._lock = threading.Lock()
        self.releases = 0

    def touched(self, rows: int, columns: Iterable[str]) -> None:
        """Count ``rows`` rows read from ``columns``; past the budget, let the map go."""
        cost = rows * sum(self._cost[name] for name in columns)
        with self._lock:
            self._touched += cost
            if self._touched < self._budget:
                return
            self._touched = 0
        self.release()

    def take(self, positions: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows at ``positions`` of ``columns``; many rows are read a few columns at a time,
        each group let go once taken (rows spread over the file touch every page of a column)."""
        indices = pa.array(positions, type=pa.int64())
        if len(positions) <= ROWS_READ_WHOLE:
            self.touched(len(positions), columns)
            return self.table.select(list(columns)).take(indices)
        parts = []
        for start in range(0, len(columns), COLUMNS_PER_READ):
            group = list(columns[start : start + COLUMNS_PER_READ])
            parts.append(self.table.select(group).take(indices))
            self.let_go(group)
        arrays = [column for part in parts for column in part.columns]
        return pa.Table.from_arrays(arrays, names=list(columns))

    def let_go(self, columns: Iterable[str]) -> None:
        """Let go the mapped pages of ``columns`` (after a read of many of their rows)."""
        if self._mapping is None:
            return
        for name in columns:
            start, length = self._ranges[name]
            if length:
                self._mapping.madvise(mmap.MADV_DONTNEED, start, length)

    def release(self) -> None:
        """Drop this process's mapped pages; the next read pages them in from the page cache."""
        if self._mapping is not None:
            self._mapping.madvise(mmap.MADV_DONTNEED)
            self.releases += 1


def _buffers(column: pa.ChunkedArray) -> list[pa.Buffer]:
    return [buffer for chunk in column.chunks for buffer in chunk.buffers() if buffer is not None]


def _read_cost(column: pa.ChunkedArray) -> int:
    """What reading one row of ``column`` may make resident: a folio per buffer at most."""
    return sum(min(buffer.size, FOLIO_BYTES) for buffer in _buffers(column))


def _column_ranges(table: pa.Table, mapping: mmap.mmap) -> dict[str, tuple[int, int]]:
    """Each column's buffers as one page-aligned (offset, length) range of the map."""
    base = pa.py_buffer(mapping).address
    ranges = {}
    for name in table.column_names:
        spans = [(b.address - base, b.address - base + b.size) for b in _buffers(table[name])]
        first = min((begin for begin, _ in spans), default=0) // mmap.PAGESIZE * mmap.PAGESIZE
        last = max((end for _, end in spans), default=first)
        ranges[name] = (first, last - first)
    return ranges


def open_answers_file(
    path: Path, *, budget_bytes: int = RESIDENT_BUDGET_BYTES
) -> MappedAnswers | None:
    """The table of an answers file, memory-mapped (no copy), or None when there is none.

    ``budget_bytes`` bounds how much of the file a process keeps resident (``MappedAnswers``).

    Raises:
        pyarrow.ArrowInvalid: the file is not an Arrow IPC file (corrupt or foreign).
    """
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise pa.ArrowInvalid(f"{path} is empty, not an Arrow IPC file")
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)  # outlives the descriptor
    table = ipc.open_file(pa.BufferReader(pa.py_buffer(mapping))).read_all()
    return MappedAnswers(table, mapping, budget_bytes=budget_bytes)


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
    "RESIDENT_BUDGET_BYTES",
    "MappedAnswers",
    "answers_path",
    "build_lock",
    "open_answers_file",
    "remove_older_answers",
    "stage_answers_file",
    "write_answers_file",
]
