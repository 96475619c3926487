"""A file written whole or not at all: at a temporary name beside it, then renamed over it.

The caches kept beside the data use it: the batch's carried window and its kept proof of the
inputs (``features.carry``, ``features.kept_proof``), the stored KPIs and keyed tables
(``serving.app.kpi_files``, ``serving.infra.keyed_files``), the days' scores and feature
snapshots (``serving.infra.score_files``, ``serving.infra.snapshots``). Each temporary name
(``partial_path``) is unique (two runs writing the same file never write into one temporary
file), hidden and named after its process (``serving.infra.snapshots`` removes those of
processes gone), it takes the umask's mode (unlike ``mkstemp``'s 0600), and it is removed
whatever happens: a failed write leaves the target as it was and nothing beside it. A reader
sees the old file or the new one, never a part of one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def partial_path(path: Path) -> Path:
    """A temporary name beside ``path`` no reader opens: ``.<name>.<pid>.<8 hex>.partial``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")


def replace_whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` the file at a unique temporary name beside ``path``, then rename it over ``path``
    (creating ``path``'s directory first).

    Raises:
        Whatever ``write`` raises (the temporary file removed, ``path`` untouched), and
        ``OSError`` when the directory cannot be made or the file cannot be renamed.
    """
    partial = partial_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, write: Callable[[Path], object]) -> bool:
    """``replace_whole`` for a cache, where failing to write costs only speed: an ``OSError``
    on the way (a read-only directory, a full disk) is ``False``, not an error.

    Returns:
        Whether ``path`` now holds what ``write`` wrote.
    """
    try:
        replace_whole(path, write)
    except OSError:
        return False
    return True


__all__ = ["partial_path", "replace_whole", "write_atomically"]
