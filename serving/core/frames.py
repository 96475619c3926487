"""Frames and records that cross the state store's boundary, in both directions (DESIGN §5).

pandera schemas of the frames the store takes (decisions, scores) and gives (state, audit log,
stored scores, batch runs), and ``RunRecord``, one batch run as stored. The schemas live in
``serving.core.frame_schemas`` and are handed out here by name (``TRANSITIONS_SCHEMA``, ...) on
first use: reading the store's own rows needs only their column types (``StoredColumns``), and
importing pandera costs ~0.3 s that ``lstep status`` and a stored ``lstep kpis`` need not pay.

Frames follow the project's time convention (``features.schemas``): dates (``as_of``, ``since``,
``expires``) are naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day; instants
(``created_at``, ``updated_at``) are ``datetime64[us, UTC]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pandera.pandas as pa

RunStatus = Literal["running", "completed", "failed"]
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed")


class RunRecord(BaseModel):
    """What ``apply_batch`` returns: the batch run as stored.

    When ``run_id`` differs from the one the caller passed, the day was already completed by an
    earlier run and nothing was written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    as_of: date
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    model_version: str | None
    rules_only: bool
    summary: dict[str, Any] | None


SCHEMAS: tuple[str, ...] = (
    "DECISIONS_SCHEMA",
    "OVERRIDES_SCHEMA",
    "RUNS_SCHEMA",
    "SCORES_INPUT_SCHEMA",
    "STATE_SCHEMA",
    "STORED_SCORES_SCHEMA",
    "TRANSITIONS_SCHEMA",
)
"""The pandera schemas of ``serving.core.frame_schemas``, importable from here (lazily)."""


def __getattr__(name: str) -> Any:
    if name in SCHEMAS:  # pandera only for the caller that validates
        from serving.core import frame_schemas

        return getattr(frame_schemas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def validate_frame(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Validate (and coerce) a frame; a failure is a ValueError naming the frame and column."""
    import pandera.errors

    try:
        return schema.validate(frame)
    except (pandera.errors.SchemaError, pandera.errors.SchemaErrors) as error:
        raise ValueError(f"{schema.name}: {error}") from None


TEXT, DAY, INSTANT = "str", "datetime64[ns]", "datetime64[us, UTC]"
"""The types validation gives text, date (naive midnight) and instant columns."""


@dataclass(frozen=True)
class StoredColumns:
    """What typing the store's own rows needs of a schema: its name, the type validation gives
    each column (``TEXT``, ``DAY``, ``INSTANT`` or a numpy type), and the optional columns.
    ``tests/serving/core`` holds each equal to its pandera schema."""

    name: str
    dtypes: Mapping[str, str]
    optional: frozenset[str] = frozenset()

    def select(self, columns: Sequence[str]) -> StoredColumns:
        """These columns only (as ``select_columns`` of the pandera schema)."""
        dtypes = {name: self.dtypes[name] for name in columns}
        return StoredColumns(self.name, dtypes, self.optional.intersection(dtypes))


def _columns(name: str, optional: Iterable[str] = (), **dtypes: str) -> StoredColumns:
    return StoredColumns(name, dtypes, frozenset(optional))


_PROBABILITIES = dict.fromkeys(("p_churn", "p_low", "p_high", "confidence"), "float64")
STATE_COLUMNS = _columns(
    "state", customer_id=TEXT, tag=TEXT, since=DAY, override_tag=TEXT, override_expires=DAY,
    override_kind=TEXT,
)  # fmt: skip
OVERRIDES_COLUMNS = _columns(
    "overrides", id="int64", customer_id=TEXT, tag=TEXT, kind=TEXT, actor=TEXT, reason=TEXT,
    created_at=INSTANT, effective_as_of=DAY, expires=DAY, cleared_at=INSTANT, cleared_as_of=DAY,
    cleared_by=TEXT, clear_reason=TEXT,
)  # fmt: skip
TRANSITIONS_COLUMNS = _columns(
    "transitions", ["why"], id="int64", customer_id=TEXT, as_of=DAY, from_tag=TEXT, to_tag=TEXT,
    rule_id=TEXT, actor=TEXT, reason=TEXT, why=TEXT, signal=TEXT, p_churn="float64",
    confidence="float64", model_version=TEXT, run_id=TEXT, created_at=INSTANT,
)  # fmt: skip
STORED_SCORES_COLUMNS = _columns(
    "scores", ["campaign_id", "channel", "behaviour_tags"], customer_id=TEXT, as_of=DAY,
    **_PROBABILITIES, priority=TEXT, action=TEXT, control="bool", value_at_risk="float64",
    model_version=TEXT, run_id=TEXT, campaign_id=TEXT, channel=TEXT, behaviour_tags=TEXT,
    expected_months="float64", projected_value="float64",
)  # fmt: skip
RUNS_COLUMNS = _columns(
    "batch_runs", run_id=TEXT, as_of=DAY, status=TEXT, started_at=INSTANT, finished_at=INSTANT,
    model_version=TEXT, rules_only="bool", summary="object",
)  # fmt: skip


def stored_frame(frame: pd.DataFrame, columns: StoredColumns) -> pd.DataFrame:
    """A frame of rows the store wrote itself, typed as ``validate_frame`` types it.

    Only the column set is checked and each column converted to the schema's type: the value
    checks (tags, probabilities, uniqueness) guard what goes into the store, whose constraints
    and writers keep them, so checking them again on every read only costs time (the pandera
    pass took ~0.1 s of each ``lstep status`` and ``kpis``). ``tests/serving/core`` compares
    the two on every frame this is used for.

    Raises:
        ValueError: a required column is missing or an unknown one present (names both).
    """
    required = set(columns.dtypes) - columns.optional
    missing, unknown = required - set(frame.columns), set(frame.columns) - set(columns.dtypes)
    if missing or unknown:
        raise ValueError(
            f"{columns.name}: missing columns {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    typed = {name: _typed(frame[name], columns.dtypes[name]) for name in frame.columns}
    return pd.DataFrame(typed, index=frame.index)


def _typed(values: pd.Series, dtype: str) -> pd.Series:
    """``values`` as pandera's coercion to ``dtype`` gives them (dates and instants parsed)."""
    if dtype == INSTANT:  # naive values are UTC, aware ones converted
        return pd.to_datetime(values, utc=True).astype(INSTANT)
    if dtype == DAY:
        return pd.to_datetime(values).astype(DAY)
    return values if dtype == "object" else values.astype(dtype)


def empty_state() -> pd.DataFrame:
    """A state frame without learners (a fresh store): every learner is new."""
    from serving.core.frame_schemas import STATE_SCHEMA

    columns = {name: pd.Series(dtype=object) for name in STATE_COLUMNS.dtypes}
    return validate_frame(pd.DataFrame(columns), STATE_SCHEMA)


_STATE_TEXT = ("customer_id", "tag", "override_tag", "override_kind")
"""The state's text columns; the others are days, ``datetime64[ns]`` once validated."""


def state_frame_of_rows(rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """The ``STATE_SCHEMA`` frame of query rows, without its pandera pass (a few learners).

    Validating costs ~7 ms however few the rows: the online scorer reads the state of one or
    a few learners per request with a compiled query (``StateStore.state_of``). The dtypes are
    those validation gives (``tests/serving/infra`` compares the two); the values are the
    store's own, checked by its constraints when written.

    Args:
        rows: (customer_id, tag, since, override_tag, override_expires, override_kind) tuples;
            days are ``date`` objects, missing values None.
    """
    names = list(STATE_COLUMNS.dtypes)
    columns = list(zip(*rows, strict=True)) or [()] * len(names)
    values = dict(zip(names, columns, strict=True))
    frame = {
        name: pd.array(values[name], dtype="str")
        if name in _STATE_TEXT
        else np.array(values[name], dtype="datetime64[D]").astype("datetime64[ns]")
        for name in names
    }
    return pd.DataFrame(frame)


def is_in(values: Any, candidates: Any) -> np.ndarray:
    """``values.isin(candidates)`` for strings (ids, tags), as a boolean array; nulls are never in.

    pandas 3's ``isin`` on Arrow-backed strings walks a large candidate set in Python (a million
    ids against 300k: ~5 s of CPU); Arrow's hash lookup takes ~0.3 s, and ``codes_of``'s binary
    search, when one side is the day's ids in order (the spine's live learners among the
    eligible ones, the state's among the decided), ~0.06 s.
    """
    from rules.codes import codes_of  # kept off this module's import: rules loads pandera

    return codes_of(values, candidates) >= 0


def sorted_by_id(frame: pd.DataFrame, column: str = "customer_id") -> pd.DataFrame:
    """``frame.sort_values(column, ignore_index=True, kind="stable")`` for a text column
    without nulls (learner ids), as an ``argsort`` and a ``take``.

    The same rows: pandas 3's ``sort_values`` of a million Arrow-backed ids cost ~0.45 s where
    their stable ``argsort`` and a ``take`` of the frame cost ~0.08 s; ids of one width of up
    to eight bytes are ordered by their byte keys (``rules.codes.text_order``: a tenth of
    Arrow's sort, less for ids in order already), and a frame in order is not taken at all (its
    index reset). A column with nulls takes ``sort_values`` (``argsort`` would not put them
    last).
    """
    from rules.codes import text_order  # as in is_in: kept off this module's import

    ids = frame[column]
    if ids.hasnans:
        return frame.sort_values(column, ignore_index=True, kind="stable")
    order = text_order(ids.array)
    if order is None:
        order = ids.argsort(kind="stable").to_numpy()
    if (order == np.arange(len(order))).all():  # in order already, as a store's reads are
        return frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def repeats_in(values: Any) -> bool:
    """Whether a value of ``values`` (an Arrow text array) occurs twice, a null counting as one
    value: ids of one width by their sorted byte keys (``rules.codes.texts_repeat``, a million
    ids ~0.02 s of CPU), anything else by Arrow's hash (``features.keys.repeats_any``, ~0.1-0.2
    s)."""
    from features.keys import repeats_any
    from rules.codes import texts_repeat  # as in is_in: kept off this module's import

    repeats = texts_repeat(values)
    return repeats_any(values) if repeats is None else repeats


def positions_in(values: Any, candidates: Any) -> np.ndarray:
    """Each of ``values``' position in ``candidates`` (strings: ids), -1 where absent or null.

    ``codes_of``, as ``is_in``: pandas' ``get_indexer`` of a million ids in a million costs ~1 s
    of CPU.
    """
    from rules.codes import codes_of  # as in is_in: kept off this module's import

    return codes_of(values, candidates)


def distinct_sorted(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``frame.drop_duplicates(keys).sort_values(keys)``: each distinct key's first row, in
    key order, nulls last (two nulls equal), index labels kept.

    Arrow sorts the keys (stably: a key's first row stays first) and a row is kept where its
    key differs from the one before: pandas' ``drop_duplicates`` and a multi-key
    ``sort_values`` (a lexsort through categoricals) of ~500k text pairs cost ~1 s.
    """
    # pyarrow.compute is imported on first use, as pandera is: `lstep status` never sorts
    import pyarrow
    import pyarrow.compute as pc

    table = pyarrow.table({name: pyarrow.array(frame[name], from_pandas=True) for name in keys})
    order = pc.sort_indices(table, sort_keys=[(name, "ascending", "at_end") for name in keys])
    order = order.to_numpy()
    first = np.zeros(len(order), dtype=bool)  # a key's first row: one that differs somewhere
    first[:1] = True
    for name in keys if len(order) > 1 else ():
        column = table[name].take(order).combine_chunks()
        before, after = column.slice(0, len(column) - 1), column.slice(1)
        same = pc.or_kleene(pc.equal(before, after), pc.and_(before.is_null(), after.is_null()))
        first[1:] |= ~same.fill_null(False).to_numpy(zero_copy_only=False)
    return frame.iloc[order[first]]


def numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with rows numbered 0..n-1: itself when they already are (no copy; a one-row
    feature frame's ``reset_index`` copies its sixty-odd columns, ~0.2 ms a request)."""
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return frame
    return frame.reset_index(drop=True)


__all__ = [
    "OVERRIDES_COLUMNS",
    "RUNS_COLUMNS",
    "RUN_STATUSES",
    "STATE_COLUMNS",
    "STORED_SCORES_COLUMNS",
    "TRANSITIONS_COLUMNS",
    "RunRecord",
    "RunStatus",
    "StoredColumns",
    "distinct_sorted",
    "empty_state",
    "is_in",
    "numbered",
    "positions_in",
    "sorted_by_id",
    "state_frame_of_rows",
    "stored_frame",
    "validate_frame",
]
