"""A workspace remembers its state store: one that existed never comes back silently empty."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from serving.core.problems import Conflict
from serving.infra.tables import Base
from serving.infra.workspace import WORKSPACE_FILE, open_workspace_store, recorded_stores
from serving.settings import Settings
from tests.serving.batches import FIRST_DAY, apply, at
from tests.serving.infra.test_store import DAY1

NOW = at(DAY1, 2)


def drop_schema(url: str) -> None:
    """What a lost store looks like: its tables gone (a dropped schema, a restored empty DB)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()


@pytest.fixture
def settings(tmp_path, store_url) -> Settings:
    """A fresh workspace whose store is an empty SQLite file or PostgreSQL schema."""
    return Settings(home=tmp_path / "home", state_url=store_url)


def test_an_empty_workspace_creates_its_store_and_remembers_it(settings):
    # when the store of an empty workspace is opened
    with open_workspace_store(settings, NOW) as store:
        apply(store, DAY1, FIRST_DAY)
    # then it was created and recorded, and opens again with its history
    assert list(recorded_stores(settings.home).values()) == [NOW.isoformat()]
    with open_workspace_store(settings, NOW) as again:
        assert len(again.transitions_frame()) == len(FIRST_DAY)


def test_a_store_that_existed_and_is_now_empty_is_refused(settings):
    # given a workspace whose store held a day, then lost (a deleted file, a dropped schema)
    with open_workspace_store(settings, NOW) as store:
        apply(store, DAY1, FIRST_DAY)
    drop_schema(settings.state_database_url)
    # when it is opened again, then it is refused, saying how to go on, and nothing is created
    with pytest.raises(
        Conflict, match=r"was created on .* now missing or empty.*lstep init --force"
    ):
        open_workspace_store(settings, NOW)
    # and the explicit step starts a new, empty history
    with open_workspace_store(settings, NOW, init=True) as fresh:
        assert fresh.transitions_frame().empty and not fresh.is_empty()


def test_a_deleted_sqlite_file_is_noticed(tmp_path):
    settings = Settings(home=tmp_path / "home")
    with open_workspace_store(settings, NOW) as store:
        apply(store, DAY1, FIRST_DAY)
    (settings.home / "state.db").unlink()
    with pytest.raises(Conflict, match=str(settings.home / WORKSPACE_FILE)):
        open_workspace_store(settings, NOW)
