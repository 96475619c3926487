"""The SQL that carries a day's window and history to the next day (``features.carry``).

A window measure at t is a sum over the events of [t-30d, t) of a value times a weight of the
event's ``lag`` (days from its day to t's day; ``features.window_sql``). The day after, every
event's lag is one more: an event of lag k at t+1 weighed w(k-1) the day before and weighs w(k)
now, so the measure at t+1 is the one at t plus, over the events of the days where w changes,
value x (w(k) - w(k-1)). Those days are few (1, 8, 15, 22, 29 and 31), which is why carrying
reads six days of the log where aggregating reads thirty and everything before them.
The other measures move as simply: the last 7 days' counts shift by one day, the active-days
bitmask shifts by one bit, a latest timestamp stays unless it left the window (then the window
held that day only, and only the new day's events are left), and the history before the window
gains the day that left it (lag 31).

The measures and their weights here are a second statement of ``_WINDOW_AGGREGATES``: a test
holds every one of them to the aggregation of the log, day after day, to the last bit.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from features.window_sql import (
    _DURATION_SUMS,
    _HISTORY_TABLE,
    _WINDOW_AGGREGATES,
    DURATION_US,
    WINDOW_DAYS,
    timestamp_literal,
)

LEAVING = WINDOW_DAYS + 1
"""The lag of the day that left the window (it joins the history)."""
HISTORY_COLUMNS = {
    "h_last_ts": "max",
    "h_last_session_ts": "max",
    "h_last_milestone_ts": "max",
    "h_lessons": "sum",
    "h_milestones": "sum",
}
"""The carried history before the window (``_HISTORY_TABLE``'s columns, prefixed) and how a day
adds to it."""

_LAG = "date_diff('day', CAST(ts AS DATE), CAST({until} AS DATE))"
SESSION, VIDEO = "event_type = 'session'", "event_type = 'video_watched'"
TIMED = "duration_s IS NOT NULL"


def _lags(first: int, last: int) -> dict[int, int]:
    return dict.fromkeys(range(first, last + 1), 1)


_SLOPE = {lag: 3 - 2 * ((lag - 1) // 7) for lag in range(1, 29)}
# name: (the events it counts, or whose durations it sums (``_DURATION_SUMS``); weight by lag)
_SUMS: dict[str, tuple[str, dict[int, int]]] = {
    "ev7": ("TRUE", _lags(1, 7)),
    "ev30": ("TRUE", _lags(1, 30)),
    "wk1": ("TRUE", _lags(22, 28)),
    "slope_x10": ("TRUE", _SLOPE),
    "ses7": (SESSION, _lags(1, 7)),
    "ses14": (SESSION, _lags(1, 14)),
    "ses30": (SESSION, _lags(1, 30)),
    "ses_us7": (f"{SESSION} AND {TIMED}", _lags(1, 7)),
    "ses_us30": (f"{SESSION} AND {TIMED}", _lags(1, 30)),
    "ses_timed7": (f"{SESSION} AND {TIMED}", _lags(1, 7)),
    "ses_timed30": (f"{SESSION} AND {TIMED}", _lags(1, 30)),
    "les7": ("event_type = 'lesson_completed'", _lags(1, 7)),
    "les14": ("event_type = 'lesson_completed'", _lags(1, 14)),
    "les30": ("event_type = 'lesson_completed'", _lags(1, 30)),
    "mil30": ("event_type = 'milestone_completed'", _lags(1, 30)),
    "qa30": ("event_type = 'quiz_attempted'", _lags(1, 30)),
    "qp30": ("event_type = 'quiz_passed'", _lags(1, 30)),
    "can30": ("event_type = 'subscription_cancelled'", _lags(1, 30)),
    "community7": ("event_type IN ('community_post', 'community_reply')", _lags(1, 7)),
    "post30": ("event_type = 'community_post'", _lags(1, 30)),
    "reply30": ("event_type = 'community_reply'", _lags(1, 30)),
    "vid30": (VIDEO, _lags(1, 30)),
    "vid_us30": (f"{VIDEO} AND {TIMED}", _lags(1, 30)),
    "vid_timed30": (f"{VIDEO} AND {TIMED}", _lags(1, 30)),
    "mob30": ("channel = 'mobile'", _lags(1, 30)),
    "chan30": ("channel IS NOT NULL", _lags(1, 30)),
}
_LATEST = {  # name: the events it is the latest of
    "last_ts": "TRUE",
    "last_session_ts": SESSION,
    "last_milestone_ts": "event_type = 'milestone_completed'",
}
_HISTORY_EVENTS = {  # name: the events before the window it is the latest or the count of
    "h_last_ts": "TRUE",
    "h_last_session_ts": SESSION,
    "h_last_milestone_ts": "event_type = 'milestone_completed'",
    "h_lessons": "event_type = 'lesson_completed'",
    "h_milestones": "event_type = 'milestone_completed'",
}
_SHIFTED_DAYS = 7  # day1 .. day7: events on each of the last 7 days
ROW_HASH = "hash(customer_id, ts, event_type, duration_s, channel, item) >> 33"
"""An event's 31-bit hash: the log's fingerprint is their count and sum (``features.carry``)."""


def carried_measures() -> list[str]:
    """The window measures carried here, in ``_WINDOW_AGGREGATES`` order (all of them)."""
    days = {f"day{lag}" for lag in range(1, _SHIFTED_DAYS + 1)}
    known = set(_SUMS) | set(_LATEST) | days | {"active_mask"}
    return [name for name in _WINDOW_AGGREGATES if name in known]


def _changes(weights: dict[int, int]) -> dict[int, int]:
    """lag -> w(lag) - w(lag - 1), where it is not 0 (w is 0 outside 1..30)."""
    steps = {lag: weights.get(lag, 0) - weights.get(lag - 1, 0) for lag in range(1, LEAVING + 1)}
    return {lag: step for lag, step in steps.items() if step}


def boundary_lags() -> list[int]:
    """The lags of the days the carry reads: where a weight changes, plus the day that left."""
    lags = {1, LEAVING}
    for _, weights in _SUMS.values():
        lags.update(_changes(weights))
    return sorted(lags)


_PARTS = ((1,), tuple(lag for lag in boundary_lags() if lag not in (1, LEAVING)), (LEAVING,))
"""The boundary days in the queries that aggregate them: the day that entered the window, the
days inside it whose weights change (8, 15, 22, 29: few measures each), the day that left it."""


def _part_of(lag: int) -> tuple[int, ...]:
    return next(part for part in _PARTS if lag in part)


def _when(condition: str, lag: int) -> str:
    """The condition an aggregate of the day of ``lag`` counts under in its part's query ("":
    every row)."""
    terms = [f"lag = {lag}"] if len(_part_of(lag)) > 1 else []
    return " AND ".join(terms + ([] if condition == "TRUE" else [condition]))


class _Aggregates:
    """The boundary days' aggregates per learner, in a query per part of ``_PARTS`` (``e{n}``,
    n its first lag), each aggregate made once however many measures read it.

    Seven parts (a query per day) cost six joins of a million learners' rows by their ids, more
    than the aggregates (a million learners, a log in time order: 1.2 s of joins, 1.0 s of
    aggregates); three parts leave the middle days' few aggregates in one query.
    """

    def __init__(self) -> None:
        self.columns: dict[tuple[int, ...], dict[str, str]] = {part: {} for part in _PARTS}

    def of(self, lag: int, sql: str) -> str:
        """The column holding aggregate ``sql`` of the day of ``lag`` (added when new)."""
        columns = self.columns[_part_of(lag)]
        if sql not in columns:
            columns[sql] = f"a{len(columns)}"
        return f"e{_part_of(lag)[0]}.{columns[sql]}"

    def count(self, condition: str, lag: int) -> str:
        when = _when(condition, lag)
        return self.of(lag, f"CAST(count_if({when}) AS BIGINT)" if when else "count(*)")

    def duration(self, condition: str, lag: int) -> str:
        return self.of(lag, f"sum(CASE WHEN {_when(condition, lag)} THEN {DURATION_US} END)")

    def latest(self, condition: str, lag: int) -> str:
        when = _when(condition, lag)
        return self.of(lag, f"max(CASE WHEN {when} THEN ts END)" if when else "max(ts)")

    def joins(self) -> str:
        """The FULL JOIN of each part's aggregates (the day t-1's with its fingerprint)."""
        joins = []
        for part, columns in self.columns.items():
            aggregates = [f"{sql} AS {column}" for sql, column in columns.items()]
            if part == (1,):
                aggregates.append(f"CAST(sum({ROW_HASH}) AS BIGINT) AS day_fingerprint")
            days = " OR ".join(f"({{day{lag}}})" for lag in part)
            lag = f", {_LAG} AS lag" if len(part) > 1 else ""
            joins.append(
                f"FULL JOIN (SELECT customer_id, {', '.join(aggregates)} "
                f"FROM (SELECT *{lag} FROM {{events}} WHERE {days}) "
                f"GROUP BY customer_id) AS e{part[0]} USING (customer_id)"
            )
        return "\n".join(joins)


def _moved(name: str, found: _Aggregates) -> str:
    """Measure ``name`` at t from the state at t-1 (``s``) and the boundary days (``e``)."""
    if name in _SUMS:
        condition, weights = _SUMS[name]
        aggregate_of = found.duration if name in _DURATION_SUMS else found.count
        terms = [f"coalesce(s.{name}, 0)"]
        for lag, step in _changes(weights).items():
            terms.append(f"{step} * coalesce({aggregate_of(condition, lag)}, 0)")
        return " + ".join(terms)
    if name in _LATEST:  # greatest() passes over a NULL
        kept = f"CASE WHEN s.{name} >= {{window_start}} THEN s.{name} END"
        return f"greatest({kept}, {found.latest(_LATEST[name], 1)})"
    if name == "active_mask":
        shifted = f"((coalesce(s.active_mask, 0) << 1) & {(1 << WINDOW_DAYS) - 1})"
        return f"{shifted} | CASE WHEN coalesce({found.count('TRUE', 1)}, 0) > 0 THEN 1 ELSE 0 END"
    lag = int(name.removeprefix("day"))  # events on each of the last 7 days move a day
    return f"coalesce({found.count('TRUE', 1)}, 0)" if lag == 1 else f"coalesce(s.day{lag - 1}, 0)"


def _history_moved(name: str, found: _Aggregates) -> str:
    """History measure ``name`` at t: the state's plus the day that left the window."""
    if HISTORY_COLUMNS[name] == "max":
        return f"greatest(s.{name}, {found.latest(_HISTORY_EVENTS[name], LEAVING)})"
    added = found.count(_HISTORY_EVENTS[name], LEAVING)
    return f"coalesce(s.{name}, 0) + coalesce({added}, 0)"


_CARRY_TABLE = """
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, {moved}, coalesce(e1.day_fingerprint, 0) AS day_fingerprint
FROM {{state}} AS s
{joins}
"""


def carry_template() -> str:
    """``CREATE TEMP TABLE {name}``: the state at t from the state at t-1 (``{state}``) and the
    events of the boundary days before ``{until}`` (t), ``{days}`` the condition on ``ts`` that
    picks them (``boundary_days``) and ``{window_start}`` t - 30 days. Columns: customer_id,
    the window measures, the history and ``day_fingerprint`` (the learner's hashes of t-1)."""
    found = _Aggregates()
    moved = [f"{_moved(name, found)} AS {name}" for name in carried_measures()]
    moved += [f"{_history_moved(name, found)} AS {name}" for name in HISTORY_COLUMNS]
    return _CARRY_TABLE.format(moved=", ".join(moved), joins=found.joins())


def boundary_days(until: pd.Timestamp) -> dict[str, str]:
    """``day{lag}``: the condition on ``ts`` of the events of each boundary day before ``until``
    (a midnight), a range the parquet reader skips the row groups outside of."""
    ranges = {}
    for lag in boundary_lags():
        start = until - pd.Timedelta(days=lag)
        end = start + pd.Timedelta(days=1)
        ranges[f"day{lag}"] = f"ts >= {timestamp_literal(start)} AND ts < {timestamp_literal(end)}"
    return ranges


# The learners' distinct feature items in the window (items30) cannot be carried as a count: an
# item seen twice leaves the window only with its last sighting. Each (learner, item) pair is
# kept with the last day it was seen; the day t-1 adds its pairs, and pairs last seen before
# the window drop out.
_FEATURE_ITEM = "event_type = 'feature_used' AND item IS NOT NULL"
ITEM_PAIRS_AGGREGATED = f"""
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, item, max(CAST(ts AS DATE)) AS last_day
FROM {{events}}
WHERE {_FEATURE_ITEM} AND ts >= {{window_start}} AND ts < {{until}}
GROUP BY customer_id, item
"""
"""The (learner, item) pairs of the window's feature events, each with its last day."""
ITEM_PAIRS_CARRIED = f"""
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, item, max(last_day) AS last_day
FROM (SELECT customer_id, item, last_day FROM {{pairs}}
      WHERE last_day >= CAST({{window_start}} AS DATE)
      UNION ALL
      SELECT customer_id, item, CAST(ts AS DATE) AS last_day FROM {{events}}
      WHERE {_FEATURE_ITEM} AND {{day1}})
GROUP BY customer_id, item
"""
"""``ITEM_PAIRS_AGGREGATED`` at t from the pairs at t-1 (``{pairs}``) and the day t-1."""
ITEMS_OF_PAIRS = """
CREATE TEMP TABLE {name} AS
SELECT p.customer_id, d.as_of, count(*) AS items30
FROM {pairs} AS p CROSS JOIN {dates} AS d
GROUP BY p.customer_id, d.as_of
"""
"""``_ITEMS_TABLE`` of the pairs."""


def carry_version(engine_version: str) -> str:
    """Names what a carried state was computed by: its SQL, the window's and the engine's."""
    parts = [carry_template(), ITEM_PAIRS_AGGREGATED, ITEM_PAIRS_CARRIED, ITEMS_OF_PAIRS]
    text = "\n".join([*parts, str(_WINDOW_AGGREGATES), _HISTORY_TABLE, engine_version])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "HISTORY_COLUMNS",
    "ITEMS_OF_PAIRS",
    "ITEM_PAIRS_AGGREGATED",
    "ITEM_PAIRS_CARRIED",
    "LEAVING",
    "ROW_HASH",
    "boundary_days",
    "boundary_lags",
    "carried_measures",
    "carry_template",
    "carry_version",
]
