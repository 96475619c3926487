"""Alembic revisions of the state store, oldest first (``0001_initial`` creates every table)."""
