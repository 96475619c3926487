"""End-to-end fixtures: the simulated log, one champion and a report workspace per session.

The serving suite's fixtures live in ``tests/serving/conftest.py``, out of reach of this folder;
these build the same things with the same builders (``tests.serving.fixtures``).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def e2e_workspace(tmp_path_factory: pytest.TempPathFactory):
    """A workspace with a trained champion and three batch days, built once per session."""
    from serving.scoring import load_champion
    from tests.e2e.workspace import build_workspace
    from tests.serving.fixtures import simulate_log, train_champion

    log = simulate_log(tmp_path_factory.mktemp("e2e-log"))
    tracking_uri = train_champion(log, tmp_path_factory.mktemp("e2e-home"))
    champion = load_champion(tracking_uri)
    assert champion is not None, "the session's training did not register a champion"
    workspace = build_workspace(tmp_path_factory.mktemp("e2e-report"), log, champion, tracking_uri)
    yield workspace, champion
    workspace.store.close()
