"""A cache file written whole or not at all, where failing to write costs only speed.

What the KPIs keep beside the data (``serving.app.kpi_files``' stored KPIs,
``serving.infra.keyed_files``' tables) is computed again when missing, so a workspace that cannot
be written must not fail the command: the file goes to a temporary name in its directory (the
umask's mode, unlike ``mkstemp``) and is renamed over the target, and an ``OSError`` on the way is
reported as ``False``, the temporary file removed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> bool:
    """``write`` the file at a temporary name beside ``path``, then rename it over ``path``.

    Returns:
        Whether ``path`` now holds what ``write`` wrote (False: it could not be written).
    """
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError:
        return False
    return True


__all__ = ["write_atomically"]
