"""End-to-end fixtures: a report workspace per session, on the session's log and champion.

The simulated log and the champion are the shared session fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def e2e_workspace(
    tmp_path_factory: pytest.TempPathFactory, simulated_log, champion_tracking_uri, champion
):
    """A workspace with the session's champion and three batch days, built once per session."""
    from tests.e2e.workspace import build_workspace

    workspace = build_workspace(
        tmp_path_factory.mktemp("e2e-report"), simulated_log, champion, champion_tracking_uri
    )
    yield workspace, champion
    workspace.store.close()
