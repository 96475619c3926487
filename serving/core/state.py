"""A learner's stored state in one normal form, and the learners a day can no longer decide.

The store reads state with one query (``serving.infra.store``); callers that compare states (the
day's answers check that a learner's state is still the one their answer was decided on) turn
rows into ``StateRow`` tuples here, whether the rows came as a frame or as query tuples.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd

from serving.core.frames import is_in, sorted_by_id

StateRow = tuple[str, date, str | None, date | None]
"""A learner's stored state on a day: tag, since, active override's tag and expiry (or None)."""


def state_row(tag: Any, since: Any, override_tag: Any, override_expires: Any) -> StateRow:
    """One normal form for a state row, whether it came from a frame or from a query."""
    since_day = _day(since)
    if since_day is None:
        raise ValueError(f"state row of tag {tag}: missing since")
    override = None if _missing(override_tag) else str(override_tag)
    return str(tag), since_day, override, _day(override_expires)


def state_rows_of(state: pd.DataFrame) -> dict[str, StateRow]:
    """``state_row`` of every row of a state frame, by customer_id (column-wise: fast)."""
    overrides = state["override_tag"]
    columns = zip(
        state["tag"].astype(str).tolist(),
        _days(state["since"]),
        overrides.astype(object).where(overrides.notna(), None).tolist(),
        _days(state["override_expires"]),
        strict=True,
    )
    return dict(zip(state["customer_id"].astype(str).tolist(), columns, strict=True))


def later_states(state: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The state rows whose tag began after ``as_of``: that day can no longer be decided for them.

    The store's reads are point-in-time and never return one; a state frame from elsewhere
    (the day's answers are built on any frame they are given) may.
    """
    return state[state["since"] > pd.Timestamp(as_of)]


def without_later_states(
    features: pd.DataFrame, state: pd.DataFrame, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Features and state without the learners of ``later_states``, and those rows.

    Returns:
        (features kept, state kept, the later state rows left out).
    """
    later = later_states(state, as_of)
    if later.empty:
        return features, state, later
    dropped = set(later["customer_id"])
    kept_features = features[~features["customer_id"].isin(dropped)].reset_index(drop=True)
    kept_state = state[~state["customer_id"].isin(dropped)].reset_index(drop=True)
    return kept_features, kept_state, later


def state_after_moves(before: pd.DataFrame, decisions: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The state frame the store reads on ``as_of`` once the day's moves are committed, as
    predicted from the state the day was decided on (``before``, a ``state_frame(as_of)``).

    Each learner the decisions move (``changed``) holds its new tag (``to_tag``) since
    ``as_of``, without an override (the store ends the overrides that applied to a learner it
    moves); every other row is ``before``'s. The frame is built as ``StateStore.state_after``
    builds its own (the unchanged rows, then the new ones, sorted by customer_id, stably), so
    that the two are ``equals`` when the store applied every move: the batch decides the day's
    answers on this while the store commits the day and keeps them only when the state it then
    holds is this one (``moves_match``; a move the store left out, or a learner's state changed
    in between, is a difference: the answers are decided again on the store's).
    """
    moved = _moved_rows(before, decisions, as_of)
    kept = before[~is_in(before["customer_id"], moved["customer_id"])]
    return sorted_by_id(pd.concat([kept, moved], ignore_index=True))


def moves_match(
    before: pd.DataFrame,
    decisions: pd.DataFrame,
    as_of: date,
    changed: pd.Series,
    fresh: pd.DataFrame,
) -> bool:
    """Whether ``state_after_moves(before, decisions, as_of)`` is the state the store holds,
    given the learners whose state may have changed since ``before`` was read (``changed``)
    and their rows now (``fresh``, in customer_id order): ``StateStore.state_changes``.

    Both are ``before`` outside their own learners (the prediction outside the moved ones, the
    store's state outside the changed ones), so they are equal when every moved learner is
    among the changed ones and holds the predicted row, and every other changed learner holds
    its row of ``before`` (``state_sql.changed_since`` names every learner with an override row,
    however old). Only those learners are compared: a 1M day's 23k moves in a few hundredths of
    a second, where building the store's whole state and comparing the two frames took ~0.5 s.
    """
    moved = sorted_by_id(_moved_rows(before, decisions, as_of))
    if not is_in(moved["customer_id"], changed).all():
        return False
    theirs = fresh[is_in(fresh["customer_id"], moved["customer_id"])]
    if not _same_rows(theirs, moved):
        return False
    others = changed[~is_in(changed, moved["customer_id"])]
    return _same_rows(
        fresh[is_in(fresh["customer_id"], others)], before[is_in(before["customer_id"], others)]
    )


def _moved_rows(before: pd.DataFrame, decisions: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The state rows of the learners the decisions move, typed as ``before``'s."""
    changed = decisions["changed"].to_numpy(dtype=bool)
    moves = decisions.loc[changed, ["customer_id", "to_tag"]]
    moved = pd.DataFrame(
        {
            "customer_id": moves["customer_id"].to_numpy(dtype=object),
            "tag": moves["to_tag"].to_numpy(dtype=object),
            "since": pd.Timestamp(as_of),
        }
    )
    return moved.reindex(columns=before.columns).astype(before.dtypes.to_dict())


def _same_rows(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    return left.reset_index(drop=True).equals(right.reset_index(drop=True))


def _days(column: pd.Series) -> list[date | None]:
    """A datetime column as ``date`` objects, None where missing."""
    return column.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").tolist()


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _day(value: Any) -> date | None:
    if _missing(value):
        return None
    return value.date() if isinstance(value, datetime) else value


__all__ = [
    "StateRow",
    "later_states",
    "moves_match",
    "state_after_moves",
    "state_row",
    "state_rows_of",
    "without_later_states",
]
