"""The churn labels of the automatic ST_004 moves, kept once complete while the log's past holds.

Automation accuracy reads a label per automatic move into ST_004 whose window is complete
(``serving.app.kpi_inputs.risk_move_labels``). Reading them anew after every batch day scanned
the event log from the first complete move's day on: the moved learners' events over a span that
grows with every day stored (at 100k learners x 40 stored days 0.9-1.1 s of the KPIs' 2.1-2.7
s; after a year, most of the log every day). A complete label reads only its learner's events
inside its window ``[as_of, as_of + horizon)``, so it holds for as long as those events do:

- in the very file it was computed from (the same path, size and modification time);
- in a file that the inputs' proof kept beside the carried window (``features.kept_proof``,
  which ``lstep score`` runs before its day) proved to hold, before ``SameAs.before``, the events
  of the file the labels were kept from: the labels whose window ends by that midnight.

``kept_labels`` returns those; ``keep_labels`` writes the labels known after a KPI day, with the
version of the log they hold for, to ``<data_dir>/kpis/labels.parquet``. Anything else (no file,
another layout, horizon, log or label code, an unreadable file, a log changed without the
proof's word) keeps nothing, and the labels are computed from the log as before. The file is a
cache: deleting it costs one read of the log.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

import features.labels
from features.kept_proof import ProofRecord, same_before
from features.labels import LABEL_COLUMNS
from serving.app.kpi_files import KPIS_SUBDIR
from serving.infra.keyed_files import key_of, read_keyed, write_keyed

LAYOUT = 1
LABELS_NAME = "labels.parquet"
KEY_METADATA = b"lstep.kept_labels"
"""The schema metadata entry holding the file's ``LabelsKey``."""


class LabelsKey(BaseModel):
    """What kept labels depend on: the log's version, the horizon and the code that labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: int = LAYOUT
    events_path: str
    events_size: int
    events_mtime_ns: int
    horizon_days: int
    code: str


def labels_key(events: Path, horizon_days: int) -> LabelsKey:
    """The key of labels computed now from the log at ``events`` (its version as it is now)."""
    stat = events.stat()
    return LabelsKey(
        events_path=str(events.resolve()), events_size=stat.st_size,
        events_mtime_ns=stat.st_mtime_ns, horizon_days=horizon_days, code=label_code(),
    )  # fmt: skip


def label_code() -> str:
    """A digest of the code a kept label depends on: its definition and this module."""
    digest = hashlib.sha256()
    for path in (Path(features.labels.__file__), Path(__file__)):
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def labels_path(data_dir: Path) -> Path:
    """Where the kept labels are."""
    return Path(data_dir) / KPIS_SUBDIR / LABELS_NAME


def kept_labels(data_dir: Path, key: LabelsKey, proof: ProofRecord | None) -> pd.DataFrame:
    """The kept labels that hold in the log of ``key`` (``customer_id``, ``as_of``,
    ``churned``), none when the kept file cannot tell.

    Args:
        data_dir: the data directory.
        key: the key of labels computed now (``labels_key``).
        proof: the inputs' proof kept beside the carried window (``features.kept_proof.
            kept_record``), None when there is none.
    """
    path = labels_path(data_dir)
    text = key_of(path, KEY_METADATA)
    found = _key(text)
    until = None if found is None else trusted_until(found, key, proof)
    table = None if until is None else read_keyed(path, KEY_METADATA, text)
    if table is None:
        return empty_labels()
    labels = table.to_pandas()[list(LABEL_COLUMNS)]
    whole = labels["as_of"] + pd.Timedelta(days=key.horizon_days) <= until
    return labels[whole].reset_index(drop=True)


def _key(text: str | None) -> LabelsKey | None:
    if text is None:
        return None
    try:
        return LabelsKey.model_validate_json(text)
    except ValidationError:  # another layout's key
        return None


def trusted_until(
    kept: LabelsKey, now: LabelsKey, proof: ProofRecord | None
) -> pd.Timestamp | None:
    """Until which midnight the events that labels kept under ``kept`` read are those of the
    log of ``now``: ``pd.Timestamp.max`` for the very file, ``SameAs.before`` when the kept
    proof of this file says so of the kept one, else None (nothing holds)."""
    if kept.model_dump(exclude=_VERSION) != now.model_dump(exclude=_VERSION):
        return None
    if _version(kept) == _version(now):
        return pd.Timestamp.max
    before = same_before(proof, (now.events_path, *_version(now)), _version(kept))
    return None if before is None else pd.Timestamp(before)


_VERSION = {"events_size", "events_mtime_ns"}


def _version(key: LabelsKey) -> tuple[int, int]:
    return key.events_size, key.events_mtime_ns


def keep_labels(data_dir: Path, key: LabelsKey, known: pd.DataFrame, fresh: pd.DataFrame) -> bool:
    """Keep the labels ``known`` (``kept_labels``) and ``fresh`` (complete ones, computed now)
    as holding in the log of ``key``; nothing is written when the file already holds them.

    Returns:
        Whether they are kept (False: the workspace could not be written; only speed is lost).
    """
    path = labels_path(data_dir)
    if fresh.empty and key_of(path, KEY_METADATA) == key.model_dump_json():
        return True  # the very file, nothing new: ``known`` is all of it
    frame = pd.concat([known, fresh], ignore_index=True)[list(LABEL_COLUMNS)].astype(
        {"customer_id": "str", "as_of": "datetime64[us]", "churned": "int8"}
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return write_keyed(path, table, KEY_METADATA, key.model_dump_json())


def empty_labels() -> pd.DataFrame:
    """No labels, typed as kept ones."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "as_of": pd.Series(dtype="datetime64[us]"),
            "churned": pd.Series(dtype="int8"),
        }
    )


__all__ = [
    "LabelsKey",
    "empty_labels",
    "keep_labels",
    "kept_labels",
    "label_code",
    "labels_key",
    "labels_path",
    "trusted_until",
]
