"""The workspace's memory of its state stores: a store that existed must not come back empty.

``$LSTEP_HOME/workspace.json`` records each state store the workspace created (its URL, password
masked, and when). Opening a store through the settings (``open_workspace_store``) creates and
records it on an empty workspace; when a recorded store is gone or empty (a deleted SQLite file,
a dropped schema) it refuses instead of silently starting a new history: creating it again is
the explicit ``lstep init --force``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from serving.core.problems import Conflict
from serving.infra.score_files import SCORES_SUBDIR
from serving.infra.sql import safe_url
from serving.infra.store import StateStore
from serving.settings import Settings

WORKSPACE_FILE = "workspace.json"


def recorded_stores(home: Path) -> dict[str, str]:
    """Store URL (password masked) -> when the workspace created it."""
    path = Path(home) / WORKSPACE_FILE
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("state_stores", {}))


def record_store(home: Path, url: str, now: datetime) -> None:
    """Remember that the workspace created the store at ``url`` (atomically, kept if known)."""
    stores = recorded_stores(home)
    if safe_url(url) in stores:
        return
    stores[safe_url(url)] = now.isoformat()
    path = Path(home) / WORKSPACE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"state_stores": stores}, indent=2), encoding="utf-8")
    partial.replace(path)


def open_workspace_store(settings: Settings, now: datetime, *, init: bool = False) -> StateStore:
    """The settings' state store, created on an empty workspace and never silently re-created.

    Args:
        settings: where the store and the workspace record are.
        now: when, for the record.
        init: create the store even though the workspace had one (``lstep init --force``).

    Raises:
        Conflict: the workspace created this store before and it is now missing or empty.
    """
    url = settings.state_database_url
    store = StateStore(url, scores_dir=settings.data_path / SCORES_SUBDIR, auto_migrate=False)
    created = recorded_stores(settings.home).get(safe_url(url))
    if store.is_empty() and created is not None and not init:
        store.close()
        raise Conflict(
            f"state store {safe_url(url)} was created on {created[:10]} (recorded in "
            f"{Path(settings.home) / WORKSPACE_FILE}) and is now missing or empty: its history "
            "would be lost. Restore it from a backup, or run `lstep init --force` to start a "
            "new, empty history"
        )
    if not store.at_head():  # upgrading a store at head does nothing, after importing Alembic
        store.migrate()
    record_store(settings.home, url, now)
    return store


__all__ = ["WORKSPACE_FILE", "open_workspace_store", "record_store", "recorded_stores"]
