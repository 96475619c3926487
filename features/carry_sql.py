"""The SQL that carries a day's window and history to the next day (``features.carry``).

A window measure at t is a sum over the events of [t-30d, t) of a value times a weight of the
event's ``lag`` (days from its day to t's day; ``features.window_sql``). The window is carried
in two parts: the kept part, the events of lag ``FRESH_DAYS`` + 1 and more, and the fresh part,
the last ``FRESH_DAYS`` days, aggregated from the log every day (``fresh_template``) and added to
the kept part (``combined_window``). The fresh days are the ones the inputs' kept proof checks
anew every day (``features.kept_proof``: its bound is a day before the log's last day): an
event that arrives a day or two late changes only days the carry reads again, so the day is
still carried.

The day after, every event's lag is one more: an event of lag k at t+1 weighed w(k-1) the day
before and weighs w(k) now, so the kept part at t+1 is the one at t plus, over the events of the
days where its weight changes, value x (w(k) - w(k-1)), with w 0 on the fresh days. Those days
are few (3, the day that leaves the fresh part, then 8, 15, 22, 29 and 31), which is why
carrying reads eight days of the log where aggregating reads thirty and everything before them.
The other measures move as simply: the last 7 days' counts shift by one day, the active-days
bitmask shifts by one bit, a latest timestamp stays unless it left the window, and the history
before the window gains the day that left it (lag 31).

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
FRESH_DAYS = 2
"""The days before t aggregated from the log every day, not carried: ``kept_proof.LATE_DAYS``
+ 1, the days from the kept proof's bound on (a test holds them equal)."""
ENTERING = FRESH_DAYS + 1
"""The lag of the day that left the fresh part for the kept one."""
HISTORY_COLUMNS = {
    "h_last_ts": "max",
    "h_last_session_ts": "max",
    "h_last_milestone_ts": "max",
    "h_lessons": "sum",
    "h_milestones": "sum",
}
"""The carried history before the window (``_HISTORY_TABLE``'s columns, prefixed) and how a day
adds to it."""

_LAG = "(epoch_us({until}) - 1 - epoch_us(ts)) // 86400000000 + 1"
"""Days from an event's UTC day to t's (t a midnight, the event before it): ``date_diff`` of
the two dates, in integer arithmetic (on the four middle boundary days' 4M events at 1M
learners, 0.82 -> 0.62 s)."""
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
    """lag -> w(lag) - w(lag - 1) in the kept part, where it is not 0 (w is 0 outside
    ``ENTERING``..30: the fresh days are not kept)."""
    kept = {lag: weight for lag, weight in weights.items() if lag >= ENTERING}
    steps = {lag: kept.get(lag, 0) - kept.get(lag - 1, 0) for lag in range(ENTERING, LEAVING + 1)}
    return {lag: step for lag, step in steps.items() if step}


def boundary_lags() -> list[int]:
    """The lags of the days the kept part reads: where a weight changes, plus the days that left
    the fresh part and the window."""
    lags = {ENTERING, LEAVING}
    for _, weights in _SUMS.values():
        lags.update(_changes(weights))
    return sorted(lags)


_PARTS = (
    (ENTERING,),
    tuple(lag for lag in boundary_lags() if lag not in (ENTERING, LEAVING)),
    (LEAVING,),
)
"""The boundary days in the queries that aggregate them: the day that entered the kept part, the
days inside it whose weights change (8, 15, 22, 29: few measures each), the day that left it."""


Lags = int | tuple[int, ...]
"""The day of one lag, or the days of several (all of one part)."""


def _when(condition: str, lags: tuple[int, ...], part: tuple[int, ...]) -> str:
    """The condition an aggregate of the days of ``lags`` counts under in the query of their
    ``part`` ("": every row)."""
    terms = []
    if lags != part:
        terms = [f"lag = {lags[0]}" if len(lags) == 1 else f"lag IN {lags}"]
    return " AND ".join(terms + ([] if condition == "TRUE" else [condition]))


class _Aggregates:
    """The aggregates per learner of the days of each of ``parts`` (``_PARTS`` unless given), in a
    query per part (``e{n}``, n its first lag), each aggregate made once however many measures
    read it.

    Seven parts (a query per day) cost six joins of a million learners' rows by their ids, more
    than the aggregates (a million learners, a log in time order: 1.2 s of joins, 1.0 s of
    aggregates); three parts leave the middle days' few aggregates in one query.
    """

    def __init__(self, parts: tuple[tuple[int, ...], ...] = _PARTS) -> None:
        self.columns: dict[tuple[int, ...], dict[str, str]] = {part: {} for part in parts}

    def _part_of(self, lags: tuple[int, ...]) -> tuple[int, ...]:
        return next(part for part in self.columns if set(lags) <= set(part))

    def of(self, lags: tuple[int, ...], sql: str) -> str:
        """The column holding aggregate ``sql`` of the days of ``lags`` (added when new)."""
        part = self._part_of(lags)
        columns = self.columns[part]
        if sql not in columns:
            columns[sql] = f"a{len(columns)}"
        return f"e{part[0]}.{columns[sql]}"

    def count(self, condition: str, lags: Lags) -> str:
        days, when = self._when(condition, lags)
        return self.of(days, f"CAST(count_if({when}) AS BIGINT)" if when else "count(*)")

    def duration(self, condition: str, lags: Lags) -> str:
        days, when = self._when(condition, lags)
        return self.of(days, f"sum(CASE WHEN {when} THEN {DURATION_US} END)")

    def latest(self, condition: str, lags: Lags) -> str:
        days, when = self._when(condition, lags)
        return self.of(days, f"max(CASE WHEN {when} THEN ts END)" if when else "max(ts)")

    def _when(self, condition: str, lags: Lags) -> tuple[tuple[int, ...], str]:
        """The days of ``lags`` and the condition their aggregate counts under (``_when``)."""
        days = (lags,) if isinstance(lags, int) else lags
        return days, _when(condition, days, self._part_of(days))

    def query(self, part: tuple[int, ...]) -> str:
        """The part's aggregates per learner (the entering day's with its fingerprint)."""
        aggregates = [f"{sql} AS {column}" for sql, column in self.columns[part].items()]
        if part == (ENTERING,):
            aggregates.append(f"CAST(sum({ROW_HASH}) AS BIGINT) AS day_fingerprint")
        days = " OR ".join(f"({{day{lag}}})" for lag in part)
        lag = f", {_LAG} AS lag" if len(part) > 1 else ""
        return (
            f"(SELECT customer_id, {', '.join(aggregates)} "
            f"FROM (SELECT *{lag} FROM {{events}} WHERE {days}) GROUP BY customer_id)"
        )

    def joins(self) -> str:
        """The FULL JOIN of each part's aggregates."""
        return "\n".join(
            f"FULL JOIN {self.query(part)} AS e{part[0]} USING (customer_id)"
            for part in self.columns
        )


def _moved(name: str, found: _Aggregates) -> str:
    """Kept measure ``name`` at t from the state at t-1 (``s``) and the boundary days (``e``)."""
    if name in _SUMS:
        condition, weights = _SUMS[name]
        aggregate_of = found.duration if name in _DURATION_SUMS else found.count
        terms = [f"coalesce(s.{name}, 0)"]
        for lag, step in _changes(weights).items():
            terms.append(f"{step} * coalesce({aggregate_of(condition, lag)}, 0)")
        return " + ".join(terms)
    if name in _LATEST:  # greatest() passes over a NULL
        kept = f"CASE WHEN s.{name} >= {{window_start}} THEN s.{name} END"
        return f"greatest({kept}, {found.latest(_LATEST[name], ENTERING)})"
    entered = f"coalesce({found.count('TRUE', ENTERING)}, 0)"
    if name == "active_mask":  # bit lag-1 is day lag's: the fresh days' bits stay 0
        shifted = f"((coalesce(s.active_mask, 0) << 1) & {(1 << WINDOW_DAYS) - 1})"
        return f"{shifted} | CASE WHEN {entered} > 0 THEN {1 << (ENTERING - 1)} ELSE 0 END"
    lag = int(name.removeprefix("day"))  # events on each of the last 7 days move a day
    if lag < ENTERING:
        return "0"
    return entered if lag == ENTERING else f"coalesce(s.day{lag - 1}, 0)"


def _history_moved(name: str, found: _Aggregates) -> str:
    """History measure ``name`` at t: the state's plus the day that left the window."""
    if HISTORY_COLUMNS[name] == "max":
        return f"greatest(s.{name}, {found.latest(_HISTORY_EVENTS[name], LEAVING)})"
    added = found.count(_HISTORY_EVENTS[name], LEAVING)
    return f"coalesce(s.{name}, 0) + coalesce({added}, 0)"


_CARRY_TABLE = """
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, {moved}, coalesce(e{entering}.day_fingerprint, 0) AS day_fingerprint
FROM {{state}} AS s
{joins}
"""


def carry_template() -> str:
    """``CREATE TEMP TABLE {name}``: the state at t from the state at t-1 (``{state}``) and the
    events of the boundary days before ``{until}`` (t), ``{days}`` the condition on ``ts`` that
    picks them (``boundary_days``) and ``{window_start}`` t - 30 days. Columns: customer_id,
    the kept part's window measures, the history and ``day_fingerprint`` (the learner's hashes
    of the day that entered the kept part)."""
    found = _Aggregates()
    moved = [f"{_moved(name, found)} AS {name}" for name in carried_measures()]
    moved += [f"{_history_moved(name, found)} AS {name}" for name in HISTORY_COLUMNS]
    return _CARRY_TABLE.format(moved=", ".join(moved), joins=found.joins(), entering=ENTERING)


_FRESH = tuple(range(1, FRESH_DAYS + 1))


def _fresh(name: str, found: _Aggregates) -> str:
    """Window measure ``name`` over the fresh days alone: each day's events with their weight
    (a weight shared by the fresh days is one aggregate of them all)."""
    if name in _SUMS:
        condition, weights = _SUMS[name]
        aggregate_of = found.duration if name in _DURATION_SUMS else found.count
        lags_by_weight: dict[int, list[int]] = {}
        for lag in _FRESH:
            if weights.get(lag, 0):
                lags_by_weight.setdefault(weights[lag], []).append(lag)
        terms = [
            f"coalesce({aggregate_of(condition, tuple(lags))}, 0)"
            + ("" if weight == 1 else f" * {weight}")
            for weight, lags in lags_by_weight.items()
        ]
        return " + ".join(terms) or "0"
    if name in _LATEST:
        return found.latest(_LATEST[name], _FRESH)
    if name == "active_mask":
        return " | ".join(
            f"CASE WHEN {found.count('TRUE', lag)} > 0 THEN {1 << (lag - 1)} ELSE 0 END"
            for lag in _FRESH
        )
    lag = int(name.removeprefix("day"))
    return found.count("TRUE", lag) if lag in _FRESH else "0"


def fresh_template() -> str:
    """``CREATE TEMP TABLE {name}``: ``_WINDOW_TABLE``'s measures (no as_of) of the fresh days'
    events alone, per learner with an event in them: the events of the days before ``{until}``
    (t) whose ``{day1}``... conditions ``boundary_days`` gives."""
    found = _Aggregates((_FRESH,))
    measures = [f"{_fresh(name, found)} AS {name}" for name in carried_measures()]
    return (
        f"CREATE TEMP TABLE {{name}} AS SELECT customer_id, {', '.join(measures)} "
        f"FROM {found.query(_FRESH)} AS e{_FRESH[0]}"
    )


def boundary_days(until: pd.Timestamp) -> dict[str, str]:
    """``day{lag}``: the condition on ``ts`` of the events of each fresh or boundary day before
    ``until`` (a midnight), a range the parquet reader skips the row groups outside of."""
    ranges = {}
    for lag in (*_FRESH, *boundary_lags()):
        start = until - pd.Timedelta(days=lag)
        end = start + pd.Timedelta(days=1)
        ranges[f"day{lag}"] = f"ts >= {timestamp_literal(start)} AND ts < {timestamp_literal(end)}"
    return ranges


# The learners' distinct feature items in the window (items30) cannot be carried as a count: an
# item seen twice leaves the window only with its last sighting. Each (learner, item) pair of the
# kept part is kept with the last day it was seen; the day that enters the kept part adds its
# pairs, pairs last seen before the window drop out, and the fresh days' pairs are read anew.
_FEATURE_ITEM = "event_type = 'feature_used' AND item IS NOT NULL"
ITEM_PAIRS_AGGREGATED = f"""
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, item, max(CAST(ts AS DATE)) AS last_day
FROM {{events}}
WHERE {_FEATURE_ITEM} AND ts >= {{window_start}} AND ts < {{until}}
GROUP BY customer_id, item
"""
"""The (learner, item) pairs of the feature events of [``{window_start}``, ``{until}``), each
with its last day."""
ITEM_PAIRS_CARRIED = f"""
CREATE TEMP TABLE {{name}} AS
SELECT customer_id, item, max(last_day) AS last_day
FROM (SELECT customer_id, item, last_day FROM {{pairs}}
      WHERE last_day >= CAST({{window_start}} AS DATE)
      UNION ALL
      SELECT customer_id, item, CAST(ts AS DATE) AS last_day FROM {{events}}
      WHERE {_FEATURE_ITEM} AND {{entering}})
GROUP BY customer_id, item
"""
"""The kept part's pairs (``ITEM_PAIRS_AGGREGATED`` before the fresh days) at t from those at
t-1 (``{pairs}``) and the day that entered the kept part (``{entering}``)."""
ITEMS_OF_PAIRS = """
CREATE TEMP TABLE {name} AS
SELECT p.customer_id, d.as_of, count(*) AS items30
FROM (SELECT customer_id FROM {kept}
      UNION ALL
      SELECT f.customer_id FROM {fresh} AS f ANTI JOIN {kept} AS k USING (customer_id, item)) AS p
CROSS JOIN {dates} AS d
GROUP BY p.customer_id, d.as_of
"""
"""``_ITEMS_TABLE`` of the kept part's pairs and the fresh days' (an item seen in both counts
once: each side's pairs are distinct, and the fresh ones the kept part has are left out; a
UNION of the two cost ~0.2 s more at 1M learners)."""


def combined_window() -> str:
    """``CREATE TEMP TABLE {name}``: ``_WINDOW_TABLE`` of the kept part (``{kept}``: a state, or
    the kept days' window) and the fresh days' window (``{fresh}``), the learners with an event
    in either, at the one as_of of ``{dates}``: counts and sums added, latest timestamps the
    later one (the kept part's are in the window already)."""
    measures = ", ".join(
        f"greatest(k.{name}, f.{name}) AS {name}"
        if name.endswith("_ts")
        else f"coalesce(k.{name}, 0) + coalesce(f.{name}, 0) AS {name}"
        for name in _WINDOW_AGGREGATES
    )
    return (
        f"CREATE TEMP TABLE {{name}} AS SELECT customer_id, d.as_of, {measures} "
        "FROM {kept} AS k FULL JOIN {fresh} AS f USING (customer_id) CROSS JOIN {dates} AS d "
        "WHERE coalesce(k.ev30, 0) + coalesce(f.ev30, 0) > 0"
    )


def carry_version(engine_version: str) -> str:
    """Names what a carried state was computed by: its SQL, the window's and the engine's."""
    parts = [carry_template(), ITEM_PAIRS_AGGREGATED, ITEM_PAIRS_CARRIED, ITEMS_OF_PAIRS]
    parts += [combined_window(), fresh_template()]
    text = "\n".join([*parts, str(_WINDOW_AGGREGATES), _HISTORY_TABLE, engine_version])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "ENTERING",
    "FRESH_DAYS",
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
    "combined_window",
    "fresh_template",
]
