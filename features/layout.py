"""Where the event store's files are: their names inside a data directory (``LSTEP_DATA_DIR``).

Kept apart from ``features.schemas`` (pandas, pandera) so that what only needs the names, such as
``serving.settings`` and with it every ``lstep`` command's start, imports nothing heavy.
"""

EVENTS_FILE = "events.parquet"
CUSTOMERS_FILE = "customers.parquet"
"""File names of the event store: what ``lstep simulate`` writes and ``lstep score``, the service
and the report read."""

PARQUET_SUFFIXES = (".parquet", ".pq")
"""File suffixes read as parquet (anything else is read as CSV where CSV is allowed)."""

__all__ = ["CUSTOMERS_FILE", "EVENTS_FILE", "PARQUET_SUFFIXES"]
