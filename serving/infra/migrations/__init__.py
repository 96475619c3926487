"""Alembic migrations of the state store, run by ``StateStore.migrate`` (no alembic.ini needed)."""
