"""Fixtures of the serving tests: a fresh state store on SQLite (in tmp) and on PostgreSQL.

The PostgreSQL store lives in a schema of its own, created for one test and dropped after it, and
reached through ``search_path`` in the URL's connect options: parallel workers (pytest-xdist),
reruns and a crashed earlier run never see each other's tables. The server is required, not
optional: these tests fail, never skip, without it. ``LSTEP_TEST_POSTGRES_URL`` points them at
another server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from serving.infra.store import StateStore

POSTGRES_URL = os.environ.get(
    "LSTEP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FINISHED_AT = datetime(2030, 1, 1, tzinfo=UTC)
"""What the fixture store's clock says: every finished_at a test sees."""


def url_with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (libpq ``options=-csearch_path=...``)."""
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in tmp, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    schema = f"lstep_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield url_with_search_path(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def finished_at() -> datetime:
    """The instant the fixture store's clock always gives."""
    return FINISHED_AT


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    """A migrated, empty state store whose clock is fixed at ``FINISHED_AT``."""
    opened = StateStore(store_url, clock=lambda: FINISHED_AT)
    yield opened
    opened.close()


@pytest.fixture(params=["sql", "parquet"])
def scores_store(request: pytest.FixtureRequest, store_url: str, tmp_path) -> Iterator[StateStore]:
    """``store`` keeping the days' scores in SQL, or as parquet files under tmp (the apps' way):
    the score tests hold both to the same public API."""
    scores_dir = tmp_path / "scores" if request.param == "parquet" else None
    opened = StateStore(store_url, scores_dir=scores_dir, clock=lambda: FINISHED_AT)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[StateStore]:
    """A migrated, empty SQLite state store (the batch tests' default backend)."""
    opened = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: FINISHED_AT)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, simulated_log, champion_tracking_uri, champion):
    """An LSTEP_HOME `lstep serve` could start on, with the session's champion.

    Its batch days decide with the rules resolved against the champion's operating points, as
    the batch job and the service load them.
    """
    from tests.serving.fixtures import packaged_ruleset
    from tests.serving.service_fixtures import shared_workspace

    return shared_workspace(
        tmp_path_factory, simulated_log, champion_tracking_uri, champion, packaged_ruleset(champion)
    )


@pytest.fixture(scope="session")
def served(workspace):
    """The running service over real HTTP, stopped at the end of the session."""
    from tests.serving.service_fixtures import shared_service

    service = shared_service(workspace)
    yield service
    service.stop()
