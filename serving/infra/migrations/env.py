"""Alembic environment of the state store.

``StateStore.migrate`` builds the Alembic config in code (``script_location`` =
``serving.infra:migrations``) and hands over an open connection in
``config.attributes["connection"]``, already inside the store's serialised writer transaction,
so two processes starting at once do not race to create the tables. Without a connection (the
``alembic`` command line with ``-x url=...`` or ``sqlalchemy.url``) it connects by itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from serving.infra.tables import Base


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with_own_connection() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise ValueError("no database: pass -x url=... or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            _configure_and_run(connection)
    finally:
        engine.dispose()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        _run_with_own_connection()
    else:
        _configure_and_run(connection)


if context.is_offline_mode():
    raise NotImplementedError("offline (SQL script) migrations are not supported")
_run()
