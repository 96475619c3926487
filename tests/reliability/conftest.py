"""The fault suite shares the serving tests' fixtures (simulated log, champion, workspace)."""

from tests.serving.conftest import served, sqlite_store, store, store_url, workspace  # noqa: F401
