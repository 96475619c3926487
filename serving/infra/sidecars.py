"""Sidecars: files derived from a source file, built once per version of it and shared.

The online path reads the event log and the customers through sidecars kept beside them
(``serving.infra.event_index``, ``serving.infra.customer_index``): sorted, memory-mapped arrays
that every process of the service maps instead of loading. ``open_sidecar`` finds the sidecar of
the source's current version (its size and mtime) or builds it:

- in a fresh directory renamed into place when done, ``meta.json`` written last: a directory
  without it is an unfinished build and is never read;
- under a lock file of the root (``fcntl.flock``): the service's workers start together and the
  second waits for the first's build instead of repeating it;
- older versions are removed (a process still mapping one keeps its pages: unlinking does not
  unmap).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

META_FILE = "meta.json"
LOCK_FILE = ".lock"

Writer = Callable[[Path, Path], dict[str, Any]]
"""Writes a sidecar's files from the source (first) into the directory (second); returns facts
for ``meta.json``."""


def open_sidecar(source: Path, root: Path, *, version: int, write: Writer) -> Path:
    """The directory of ``source``'s sidecar in ``root``: reused when complete, else built.

    Args:
        source: the file the sidecar is derived from.
        root: where the sidecars of ``source`` live.
        version: the sidecar layout's version (a sidecar of another layout is rebuilt).
        write: writes the files (called only when building).

    Raises:
        FileNotFoundError: no ``source``.
        OSError: ``root`` cannot be written (read-only: the caller may pick another root).
    """
    stamp = source_stamp(source, version)
    directory = root / f"v{version}-{stamp['size']}-{stamp['mtime_ns']}"
    if _complete(directory, stamp):
        return directory
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK_FILE):
        if not _complete(directory, stamp):  # another process may have built it meanwhile
            _build(source, directory, stamp, write)
            _drop_older(root, keep=directory)
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """The ``meta.json`` of a complete sidecar."""
    return json.loads((directory / META_FILE).read_text(encoding="utf-8"))


def source_stamp(source: Path, version: int) -> dict[str, Any]:
    """What names a version of ``source``: its path, size and modification time."""
    status = source.stat()
    return {
        "version": version,
        "source": str(source.resolve()),
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
    }


def fixed_width(ids: pa.ChunkedArray) -> np.ndarray:
    """UTF-8 ids as numpy fixed-width bytes, filled chunk by chunk (no list of all ids)."""
    as_bytes = pc.cast(ids, pa.binary())
    width = max(1, pc.max(pc.binary_length(as_bytes)).as_py() or 1)
    out = np.empty(len(ids), dtype=f"S{width}")
    position = 0
    for chunk in as_bytes.chunks:
        out[position : position + len(chunk)] = chunk.to_pylist()
        position += len(chunk)
    return out


def sorted_position(ids: np.ndarray, customer_id: str) -> int:
    """The position of ``customer_id`` in ``ids`` (sorted fixed-width bytes), -1 when absent."""
    key = customer_id.encode("utf-8")
    if len(ids) == 0 or len(key) > ids.dtype.itemsize:
        return -1
    position = int(np.searchsorted(ids, key))
    if position == len(ids) or ids[position] != key:
        return -1
    return position


def _complete(directory: Path, stamp: dict[str, Any]) -> bool:
    """The sidecar in ``directory`` is finished and made from this version of the source."""
    try:
        meta = read_meta(directory)
    except (OSError, ValueError):
        return False
    return all(meta.get(key) == value for key, value in stamp.items())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(source: Path, directory: Path, stamp: dict[str, Any], write: Writer) -> None:
    """Write into a fresh directory, then move it into place."""
    building = directory.with_name(f".building-{uuid.uuid4().hex}")
    building.mkdir(parents=True)
    try:
        facts = write(source, building)
        meta = {**stamp, **facts}
        (building / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if directory.exists():  # a damaged sidecar (a complete one was found above)
            shutil.rmtree(directory)
        os.rename(building, directory)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _drop_older(root: Path, keep: Path) -> None:
    for path in root.glob("v*-*"):
        if path != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "META_FILE",
    "fixed_width",
    "open_sidecar",
    "read_meta",
    "sorted_position",
    "source_stamp",
]
