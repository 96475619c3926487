"""A batch day's KPIs stored beside its scores, read back while nothing they depend on changed.

``lstep kpis`` computing the six KPIs reads the whole audit log, every day's scores, the feature
snapshots and part of the event log: seconds, most of them spent on data that has not moved since
the batch finished the day. The batch (and the first ``lstep kpis`` of a day) therefore stores the
KPIs it computed in ``<data_dir>/kpis/as_of=DAY.json`` with the key they were computed under
(``KpiKey``):

- the store's audit head (``StateStore.audit_head``: the last transition, the last completed
  run, the overrides and the cleared ones): any new day, replaced day, override or clear moves it;
- the event log's and the customers file's versions (path, size, modification time), as the
  service's sidecars key theirs (``serving.infra.sidecars``);
- the rules' files (a digest of their bytes) and the registered version whose operating points
  resolved them (the version that scored the day);
- the code that computes the KPIs (a digest of its modules' source).

A reader finds the stored KPIs only when every part of the key is equal; a missing, unreadable,
older-layout or otherwise different file is a miss, never an error: the caller computes (and may
store) the KPIs as without a file. The file is written to a temporary name and renamed, so a
reader never sees half of one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from features.atomic import write_atomically
from serving.app.kpi_model import Kpi

if TYPE_CHECKING:
    from rules import RuleSet
    from serving.app.batch import BatchProgress
    from serving.infra.store import StateStore

LAYOUT = 1
"""The file's layout; a file of another layout is a miss."""
KPIS_SUBDIR = "kpis"
RULES_SUFFIXES = (".yaml", ".yml")
RULES_TEMPLATES = "templates"
KPI_MODULES = ("kpis.py", "kpi_days.py", "kpi_inputs.py", "kpi_masks.py", "kpi_model.py",
               "kpi_runs.py", "kpi_targets.py", "qualifying.py", "decision_runs.py",
               "moved_scores.py", "kept_labels.py")  # fmt: skip
"""The modules of ``serving.app`` whose code decides the KPIs' values and texts."""


class FileStamp(BaseModel):
    """One version of an input file: its path, size and modification time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int
    mtime_ns: int


class KpiKey(BaseModel):
    """Everything a day's KPIs depend on besides the code's constants (see the module docstring).

    Attributes:
        as_of: the KPI day.
        audit_head: ``StateStore.audit_head()`` when the KPIs were computed.
        events: the event log's version (None: no event log, hence no labels).
        customers: the customers file's version (None: no customers file).
        rules: the digest of the rules directory's files (``rules_digest``).
        model_version: the version whose operating points resolved the rules (None: unresolved).
        code: the digest of the KPI modules' source (``code_digest``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    as_of: date
    audit_head: tuple[int | None, str | None, int, int]
    events: FileStamp | None
    customers: FileStamp | None
    rules: str
    model_version: str | None
    code: str


class StoredKpis(BaseModel):
    """The file's content: its layout, the key and the KPIs as ``compute_kpis`` returned them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layout: int
    key: KpiKey
    kpis: tuple[Kpi, ...]


def file_stamp(path: Path) -> FileStamp | None:
    """The version of ``path`` (None when there is no such file)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return FileStamp(path=str(path.resolve()), size=status.st_size, mtime_ns=status.st_mtime_ns)


def packaged_rules_dir() -> Path:
    """The packaged rules' directory, found without importing the ``rules`` package."""
    spec = find_spec("rules")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the packaged rules directory (package `rules`) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def rules_digest(rules_dir: Path | None) -> str:
    """A digest of the rules' YAML files and templates (names and bytes; None: the packaged)."""
    directory = packaged_rules_dir() if rules_dir is None else Path(rules_dir)
    files = [path for path in directory.iterdir() if path.suffix in RULES_SUFFIXES]
    templates = directory / RULES_TEMPLATES
    if templates.is_dir():
        files += [path for path in templates.rglob("*") if path.is_file()]
    return _digest(directory, files)


def code_digest() -> str:
    """A digest of the source of the modules that compute the KPIs (``KPI_MODULES``)."""
    here = Path(__file__).parent
    return _digest(here, [here / name for name in KPI_MODULES])


def _digest(root: Path, files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def kpis_path(data_dir: Path, as_of: date) -> Path:
    """Where the KPIs of ``as_of`` are stored."""
    return Path(data_dir) / KPIS_SUBDIR / f"as_of={as_of.isoformat()}.json"


def read_stored_kpis(data_dir: Path, key: KpiKey) -> list[Kpi] | None:
    """The stored KPIs of ``key.as_of`` when they were computed under ``key``, else None.

    A missing, unreadable or malformed file, another layout or another key: None (a miss).
    """
    try:
        text = kpis_path(data_dir, key.as_of).read_text(encoding="utf-8")
        stored = StoredKpis.model_validate_json(text)
    except (OSError, ValueError, ValidationError):
        return None
    if stored.layout != LAYOUT or stored.key != key:
        return None
    return list(stored.kpis)


def store_kpis(data_dir: Path, key: KpiKey, kpis: Sequence[Kpi]) -> Path | None:
    """Write the KPIs computed under ``key`` (temporary file, then rename).

    Returns:
        The file, or None when it could not be written (a read-only workspace costs only speed).
    """
    path = kpis_path(data_dir, key.as_of)
    content = StoredKpis(layout=LAYOUT, key=key, kpis=tuple(kpis)).model_dump_json()
    written = write_atomically(path, lambda partial: partial.write_text(content, encoding="utf-8"))
    return path if written else None


def kpi_key(
    audit_head: Sequence[Any],
    as_of: date,
    *,
    events: Path | None,
    customers: Path | None,
    rules_dir: Path | None,
    model_version: str | None,
) -> KpiKey:
    """The key of the KPIs of ``as_of`` computed now from these inputs.

    Args:
        audit_head: ``StateStore.audit_head()``, read before the KPIs' inputs.
        as_of: the KPI day.
        events: the event log the labels read (None: none).
        customers: the customers file (None: none).
        rules_dir: the rules directory (None: the packaged rules).
        model_version: the version whose operating points resolve the rules (None: unresolved).
    """
    return KpiKey(
        as_of=as_of, audit_head=tuple(audit_head),
        events=None if events is None else file_stamp(events),
        customers=None if customers is None else file_stamp(customers),
        rules=rules_digest(rules_dir), model_version=model_version, code=code_digest(),
    )  # fmt: skip


RulesFor = Callable[[str | None], "tuple[RuleSet, str | None]"]
"""The rules resolved against a version's operating points (None: rules only), with the version
that actually resolved them (None: unresolved, e.g. the version is gone from the registry)."""

DaysProgress = Callable[[int], Callable[[date], None]]
"""Where long KPI work reports its days: told how many are to be computed, it returns what is
told each day done (``BatchProgress.days``)."""

LEDGER_DAYS = "KPI run ledger days"
"""The bar of the run ledger's days (``ledger_bar``)."""


def ledger_bar(progress: BatchProgress | None) -> DaysProgress | None:
    """A bar of the run ledger's days on ``progress`` when it computes more than one (a first
    ``lstep kpis`` on a store, an upgrade: every stored day); a daily run's one day draws none."""
    if progress is None:
        return None

    def started(total: int) -> Callable[[date], None]:
        if total <= 1:
            return lambda _day: None
        return progress.days(total, LEDGER_DAYS)

    return started


@dataclass(frozen=True)
class EventStore:
    """Where a workspace's KPIs come from besides the state store.

    Attributes:
        data_dir: the data directory (snapshots, scores, and the stored KPIs).
        events: the event log file (labels of automation accuracy).
        customers: the customers file (mastery cohorts).
        rules_dir: the rules directory (None: the packaged rules).
    """

    data_dir: Path
    events: Path
    customers: Path
    rules_dir: Path | None = None


def day_kpis(
    store: StateStore,
    as_of: date,
    sources: EventStore,
    rules_for: RulesFor,
    *,
    now: datetime,
    ledger_days: DaysProgress | None = None,
) -> list[Kpi]:
    """The KPIs of ``as_of``: stored ones when their key still holds, else computed and stored.

    The rules are those the day was decided with: resolved against the operating points of the
    version that scored it (``rules_for``), as the batch resolved them. KPIs computed with rules
    resolved otherwise (``rules_for`` could not find that version) are not stored.

    Args:
        store: the state store.
        as_of: a completed batch day.
        sources: the event store's files, the data directory and the rules directory.
        rules_for: loads the rules resolved against a version (only on a miss).
        now: the current instant (events after it are an error, as everywhere).
        ledger_days: told the run ledger's days to compute, when there are any
            (``serving.app.decision_runs.run_ledger``; None: nowhere).

    Raises:
        ValueError: the customers (or a non-parquet log) break their contract.
    """
    run = store.completed_run(as_of)
    version = None if run is None or run["model_version"] is None else str(run["model_version"])
    key = kpi_key(
        store.audit_head(), as_of, events=sources.events, customers=sources.customers,
        rules_dir=sources.rules_dir, model_version=version,
    )  # fmt: skip
    found = read_stored_kpis(sources.data_dir, key)
    if found is not None:
        return found
    from serving.app.kpi_inputs import event_store_kpis  # the computing path: pandas and more

    ruleset, resolved = rules_for(version)
    kpis = event_store_kpis(
        store, as_of, events=sources.events, customers=sources.customers, ruleset=ruleset,
        data_dir=sources.data_dir, now=now, ledger_days=ledger_days,
    )  # fmt: skip
    if resolved == version:
        store_kpis(sources.data_dir, key, kpis)
    return kpis


__all__ = [
    "KPIS_SUBDIR",
    "LAYOUT",
    "LEDGER_DAYS",
    "DaysProgress",
    "EventStore",
    "FileStamp",
    "KpiKey",
    "RulesFor",
    "code_digest",
    "day_kpis",
    "file_stamp",
    "kpi_key",
    "kpis_path",
    "ledger_bar",
    "packaged_rules_dir",
    "read_stored_kpis",
    "rules_digest",
    "store_kpis",
]
