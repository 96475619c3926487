"""Point-in-time window features (DESIGN §4), computed with DuckDB SQL.

``as_of`` t is a day; it means the instant 00:00 UTC of that day, and features at t use only the
events with ``ts < t``. The project-wide representation of t is a naive ``datetime64[us]`` value
at midnight (UTC implied); python ``date``s are accepted everywhere and converted.

How the SQL is organised (one DuckDB connection; its temporary objects are dropped at the end).
Events are aggregated straight into one row per (learner, as_of): at 1M learners a per-(learner,
day) table has ~25M groups and costs several times more than this.

1. window: every event joined to each as_of whose window [t-30d, t) holds it, with ``lag`` = days
   from the event's UTC day to t's day (t is a midnight, so lag 1..7 is exactly "the last 7
   days"), then one GROUP BY (learner, as_of) of FILTERed counts/sums and a bitmask of active days.
   Distinct feature items come from a second, much smaller aggregation of feature_used events.
2. history: the events before each window, per (learner, bucket of as_of dates); a spine row
   adds up the buckets up to its date and its own window (last timestamps, lesson totals, ...).
3. availability: which event types (and which types with a duration) appeared anywhere in the log
   before t. Each catalog feature is nulled (numbers) or set False (flags) when its ``needs`` are
   absent; this is generated from ``features/catalog.yaml`` (``needs``/``needs_duration``).
4. the spine (learner, t) joined to customers, the measures above and the feature expressions;
   the sequence of active days (gaps, streaks) comes from the 30-bit mask of step 1 by
   integer bit arithmetic, a few stacked SELECTs, the same on DuckDB and Spark SQL.

The catalog is the column list: every catalog feature must have an SQL expression below
(``FEATURE_SQL``) and the output columns follow catalog order.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import duckdb
import pandas as pd
import pandera.pandas as pa

from features.catalog import FeatureCatalog, FeatureSpec, load_catalog
from features.layout import PARQUET_SUFFIXES
from features.schemas import KEY_COLUMNS, feature_frame_schema

DAY_US = 86_400_000_000
"""Microseconds in a day: durations are compared in exact integer microseconds."""
WINDOW_DAYS = 30
EVENT_COLUMNS = ("customer_id", "ts", "event_type", "duration_s", "channel", "item")
CUSTOMER_COLUMNS = ("customer_id", "product_tag", "enrolled_at", "mrr")
RISK_COUNT = "risk_indicator_count"

TableInput = pd.DataFrame | str | Path
"""A pandas frame, or the path of a parquet file that DuckDB reads directly."""

# --- SQL ------------------------------------------------------------------------------------------
# Placeholders in braces are names of temporary objects or already-quoted literals, never user data.
# Divisions are written `integer / integer`: `/` divides as DOUBLE in DuckDB and in Spark SQL alike
# (`//` is DuckDB's integer division), whereas a decimal literal (`/ 7.0`) makes Spark divide in
# DECIMAL, rounded to 6 places, and breaks the DuckDB/Spark parity of the trends.

_EVENTS_VIEW = """
CREATE TEMP VIEW {name} AS
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       -- epoch_us is absolute, so this is naive UTC whatever the session's TimeZone setting
       make_timestamp(epoch_us(ts)) AS ts,
       CAST(event_type AS VARCHAR) AS event_type,
       CAST(duration_s AS DOUBLE) AS duration_s,
       CAST(channel AS VARCHAR) AS channel,
       CAST(item AS VARCHAR) AS item
FROM {source}
"""

_CUSTOMERS_VIEW = """
CREATE TEMP VIEW {name} AS
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       CAST(product_tag AS VARCHAR) AS product_tag,
       make_timestamp(epoch_us(enrolled_at)) AS enrolled_at,
       CAST(mrr AS DOUBLE) AS mrr
FROM {source}
"""

# The as_of dates, sorted. The all-history measures at t are the 30-day window plus everything
# before it: history bucket k holds the events in [window start of date k-1, window start of k).
_DATES_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT as_of,
       as_of - INTERVAL 30 DAY AS window_start,
       row_number() OVER (ORDER BY as_of) AS bucket,
       -- null for bucket 1 (everything before the first window: it has no bucket days)
       lag(as_of) OVER (ORDER BY as_of) - INTERVAL 30 DAY AS bucket_start
FROM (SELECT DISTINCT as_of FROM {dates})
"""

# The UTC days of each window, with `lag` = days from that day to t's day. t is a midnight, so
# [t-30d, t) is exactly the days of lag 1..30 and "the last 7 days" those of lag 1..7.
# (a VALUES list, not DuckDB's range(): SQLGlot turns `range(1, 31) AS r(lag)` into invalid Spark)
_LAGS = ", ".join(f"({lag})" for lag in range(1, WINDOW_DAYS + 1))
_WINDOW_DAYS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT d.as_of, CAST(d.as_of AS DATE) - CAST(r.lag AS INTEGER) AS day, CAST(r.lag AS INTEGER) AS lag
FROM {dates} AS d CROSS JOIN (VALUES {lags}) AS r(lag)
"""

# Each event joined to every as_of whose window holds it, by equality on the day: a hash join.
# (A range join on ts against a few dates makes DuckDB pick an IEJoin, many times slower.)
_IN_WINDOW = """
SELECT e.*, w.as_of, w.lag
FROM {events} AS e JOIN {window_days} AS w ON CAST(e.ts AS DATE) = w.day
WHERE e.ts >= {first_window_start} AND e.ts < {until} {customer_filter}
"""

# One aggregate per measure: at 50M events each extra aggregate costs ~0.5 s of CPU, so the list is
# kept to what the catalog needs (community posts + replies share one 7-day count, active days are
# one bitmask with bit lag-1 set).
_WINDOW_AGGREGATES = {
    "ev7": "count(*) FILTER (lag <= 7)",
    "ev30": "count(*)",
    "wk1": "count(*) FILTER (lag BETWEEN 22 AND 28)",
    # sum over the 4 weeks of (2x - 5) * events, x = 1 (oldest) .. 4 (last 7 days): 10 * slope
    "slope_x10": "sum(3 - 2 * ((lag - 1) // 7)) FILTER (lag <= 28)",
    "active_mask": "bit_or(CAST(1 AS BIGINT) << (lag - 1))",
    "last_ts": "max(ts)",
    "last_session_ts": "max(ts) FILTER (event_type = 'session')",
    "last_milestone_ts": "max(ts) FILTER (event_type = 'milestone_completed')",
    # events on each of the last 7 days (the shape of the last week, and its intensity when the
    # log has no durations): day1 = the day before as_of
    **{f"day{lag}": f"count(*) FILTER (lag = {lag})" for lag in range(1, 8)},
    "ses7": "count(*) FILTER (event_type = 'session' AND lag <= 7)",
    "ses14": "count(*) FILTER (event_type = 'session' AND lag <= 14)",
    "ses30": "count(*) FILTER (event_type = 'session')",
    "ses_s7": "sum(duration_s) FILTER (event_type = 'session' AND lag <= 7)",
    "ses_s30": "sum(duration_s) FILTER (event_type = 'session')",
    "ses_timed7": "count(duration_s) FILTER (event_type = 'session' AND lag <= 7)",
    "ses_timed30": "count(duration_s) FILTER (event_type = 'session')",
    "les7": "count(*) FILTER (event_type = 'lesson_completed' AND lag <= 7)",
    "les14": "count(*) FILTER (event_type = 'lesson_completed' AND lag <= 14)",
    "les30": "count(*) FILTER (event_type = 'lesson_completed')",
    "mil30": "count(*) FILTER (event_type = 'milestone_completed')",
    "qa30": "count(*) FILTER (event_type = 'quiz_attempted')",
    "qp30": "count(*) FILTER (event_type = 'quiz_passed')",
    "can30": "count(*) FILTER (event_type = 'subscription_cancelled')",
    "community7": (
        "count(*) FILTER (event_type IN ('community_post', 'community_reply') AND lag <= 7)"
    ),
    "post30": "count(*) FILTER (event_type = 'community_post')",
    "reply30": "count(*) FILTER (event_type = 'community_reply')",
    "vid30": "count(*) FILTER (event_type = 'video_watched')",
    "vid_s30": "sum(duration_s) FILTER (event_type = 'video_watched')",
    "vid_timed30": "count(duration_s) FILTER (event_type = 'video_watched')",
    "mob30": "count(*) FILTER (channel = 'mobile')",
    "chan30": "count(channel)",
}

_WINDOW_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT customer_id, as_of, {aggregates}
FROM ({in_window})
GROUP BY customer_id, as_of
"""

_ITEMS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT customer_id, as_of, count(DISTINCT item) AS items30
FROM ({in_window})
WHERE event_type = 'feature_used'
GROUP BY customer_id, as_of
"""

# The UTC days of history buckets 2, 3, ...: [window start of date k-1, window start of date k).
# Bucket 1 is everything before the first window, so it needs no days. (The unnest is not inside
# the CAST: Spark allows a generator only at the top of a SELECT expression.)
_BUCKET_DAYS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT bucket, CAST(day AS DATE) AS day
FROM (SELECT bucket,
             unnest(generate_series(bucket_start, window_start - INTERVAL 1 DAY, INTERVAL 1 DAY))
                 AS day
      FROM {dates}
      WHERE bucket > 1)
"""

# Measures of the events before the window per (learner, bucket); a spine row at bucket k adds
# up buckets 1..k and its own window. Days are matched by equality (a hash join), as above.
_HISTORY_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT e.customer_id, coalesce(b.bucket, 1) AS bucket,
       max(e.ts) AS last_ts,
       max(e.ts) FILTER (e.event_type = 'session') AS last_session_ts,
       max(e.ts) FILTER (e.event_type = 'milestone_completed') AS last_milestone_ts,
       count(*) FILTER (e.event_type = 'lesson_completed') AS lessons,
       count(*) FILTER (e.event_type = 'milestone_completed') AS milestones
FROM {events} AS e LEFT JOIN {bucket_days} AS b ON CAST(e.ts AS DATE) = b.day
WHERE e.ts < {last_window_start} {customer_filter}
GROUP BY ALL
"""

_HISTORY_AT_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT s.row_id,
       max(h.last_ts) AS last_ts,
       max(h.last_session_ts) AS last_session_ts,
       max(h.last_milestone_ts) AS last_milestone_ts,
       sum(h.lessons) AS lessons_before,
       sum(h.milestones) AS milestones_before
FROM {spine} AS s JOIN {history} AS h ON h.customer_id = s.customer_id AND h.bucket <= s.bucket
GROUP BY s.row_id
"""

_TYPE_FIRSTS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT event_type,
       min(ts) AS first_ts,
       min(ts) FILTER (duration_s IS NOT NULL) AS first_timed_ts
FROM {events}
WHERE ts < {until}
GROUP BY event_type
"""

_ACTIVE_PAIRS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT DISTINCT customer_id, as_of FROM ({in_window})
"""

_ELIGIBLE = """
SELECT c.customer_id, d.as_of
FROM {customers} AS c CROSS JOIN {dates} AS d
WHERE c.enrolled_at < d.as_of
  AND (c.enrolled_at > d.window_start
       OR EXISTS (SELECT 1 FROM {active} AS a
                  WHERE a.customer_id = c.customer_id AND a.as_of = d.as_of))
ORDER BY d.as_of, c.customer_id
"""

_SPINE_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT s.row_id, s.customer_id, s.as_of, d.bucket, CAST(s.as_of AS DATE) AS as_of_day,
       c.enrolled_at, CAST(c.enrolled_at AS DATE) AS enrol_day, c.product_tag, c.mrr
FROM {spine} AS s
JOIN {customers} AS c USING (customer_id)
JOIN {dates} AS d USING (as_of)
"""

# Per-learner measures the feature expressions read: the spine, the window aggregates (0 without
# events in the window), the all-history values and the catalog availability flags.
_MEASURES = """
SELECT s.row_id, s.customer_id, s.as_of, s.enrolled_at, s.product_tag, s.mrr,
       date_diff('microsecond', s.enrolled_at, s.as_of) AS tenure_us,
       least(30, date_diff('day', s.enrol_day, s.as_of_day)) AS window_days,
       {window_columns},
       coalesce(i.items30, 0) AS items30,
       -- a window timestamp is always later than any timestamp before the window
       coalesce(w.last_ts, h.last_ts) AS last_ts,
       coalesce(w.last_session_ts, h.last_session_ts) AS last_session_ts,
       coalesce(w.last_milestone_ts, h.last_milestone_ts) AS last_milestone_ts,
       -- UTC days from the day of the last event before the window to t's day
       date_diff('day', CAST(h.last_ts AS DATE), s.as_of_day) AS lag_before,
       coalesce(h.lessons_before, 0) + coalesce(w.les30, 0) AS lessons_total,
       coalesce(h.milestones_before, 0) + coalesce(w.mil30, 0) AS milestones_total,
       a.* EXCLUDE (as_of)
FROM {spine} AS s
LEFT JOIN {window} AS w USING (customer_id, as_of)
LEFT JOIN {items} AS i USING (customer_id, as_of)
LEFT JOIN {history_at} AS h USING (row_id)
JOIN {availability} AS a USING (as_of)
"""

# Derived measures: sub-window counts and active days from the bitmask (bit lag-1 = that day).
_DERIVED = """
SELECT *,
       ev30 - ev7 AS ev_prior23,
       ses30 - ses7 AS ses_prior23,
       ses_s30 - ses_s7 AS ses_s_prior23,
       ses_timed30 - ses_timed7 AS ses_timed_prior23,
       bit_count(active_mask & 127) AS ad7,
       bit_count(active_mask & 16383) AS ad14,
       bit_count(active_mask) AS ad30,
       bit_count(active_mask & ((CAST(1 AS BIGINT) << greatest(window_days, 0)) - 1))
           AS ad_since_enrol,
       {mask_measures}
FROM ({measures})
"""


# --- the sequence of active days, from the bitmask ------------------------------------------------
# Plain integer bit arithmetic (&, |, >>, bit_count, CASE), the same in DuckDB and Spark SQL, in
# a few stacked SELECTs: each layer names what the next one reads, so that no expression is
# repeated inside another. With m = active_mask (bit lag-1 set when day lag was active):
#   low = m & -m                   the newest active day's bit (0 without any)
#   smear = m | m >> 1 | ...       every bit up to the oldest active day's
#   runs_k(x) = x & x >> 1 & ... & x >> (k-1): bit i set when bits i .. i+k-1 all are
# so the longest run of ones in x is the number of k in 1..30 with runs_k(x) != 0, computed from
# runs_1, _2, _4, _8 and _16 (runs_k for any k is an AND of shifted power-of-two runs).
# The inactive days strictly between the newest and the oldest active day are smear - m - (low - 1)
# (m and low - 1 are disjoint subsets of smear), and the longest gap between two active days is
# one more than their longest run.

_RUN_POWERS = (2, 4, 8, 16)


# Runs only while the module is imported (it builds module constants), before mutmut picks a
# mutant: no mutant of it could ever run, so none is made (make mutate, docs/mutation.md).
def _runs_columns(x: str, prefix: str) -> str:  # pragma: no mutate block
    """``{prefix}_runs{k}`` for k = 2, 4, 8, 16: bit i set when bits i .. i+k-1 of x all are."""
    return ", ".join(
        " & ".join([x, *(f"({x} >> {shift})" for shift in range(1, k))]) + f" AS {prefix}_runs{k}"
        for k in _RUN_POWERS
    )


# (import time only, as above)
def _longest_run(x: str, prefix: str) -> str:  # pragma: no mutate block
    """The longest run of ones in the 30-bit ``x``, from its ``{prefix}_runs{k}`` columns."""
    indicators = []
    for length in range(1, WINDOW_DAYS + 1):
        terms, offset = [], 0
        for power in (16, 8, 4, 2, 1):
            if length - offset >= power:
                column = x if power == 1 else f"{prefix}_runs{power}"
                terms.append(column if offset == 0 else f"({column} >> {offset})")
                offset += power
        indicators.append(f"CASE WHEN ({' & '.join(terms)}) <> 0 THEN 1 ELSE 0 END")
    return " + ".join(indicators)


# (import time only, as above)
def _mask_measures() -> str:  # pragma: no mutate block
    """The bitmask measures the sequence layers read: newest bit, smear and runs of ``m``."""
    smear = " | ".join(["active_mask", *(f"(active_mask >> {s})" for s in range(1, WINDOW_DAYS))])
    return ", ".join(
        [
            "active_mask & (-active_mask) AS mask_low",
            f"{smear} AS mask_smear",
            _runs_columns("active_mask", "mask"),
        ]
    )


def _lag_of_bit(bit: str) -> str:  # pragma: no mutate block
    """The lag (1 = the day before t) of a single-bit value."""
    return f"bit_count({bit} - 1) + 1"


# The newest, second-newest and oldest active day, the longest streak, and the inactive days
# between the newest and the oldest active day with their longest run.
_SEQUENCE_TEMPLATE = """
SELECT *, {longest_inner} + 1 AS max_gap
FROM (SELECT *, {inner_runs}
      FROM (SELECT *,
                   {longest_active} AS longest_streak,
                   {newest} AS newest_lag,
                   bit_count(mask_smear) AS oldest_lag,
                   {second} AS second_lag,
                   CASE WHEN ad30 >= 2 THEN mask_smear - active_mask - (mask_low - 1) ELSE 0 END
                       AS inner_gaps
            FROM ({derived})))
"""


# (import time only, as above)
def _sequence_template() -> str:  # pragma: no mutate block
    """``_SEQUENCE_TEMPLATE`` with its generated expressions; ``{derived}`` stays a placeholder."""
    rest = "(active_mask - mask_low)"
    return _SEQUENCE_TEMPLATE.format(
        inner_runs=_runs_columns("inner_gaps", "gaps"),
        longest_inner=_longest_run("inner_gaps", "gaps"),
        longest_active=_longest_run("active_mask", "mask"),
        newest=f"CASE WHEN ad30 > 0 THEN {_lag_of_bit('mask_low')} END",
        second=f"CASE WHEN ad30 >= 2 THEN {_lag_of_bit(f'({rest} & (-{rest}))')} END",
        derived="{derived}",
    )


_DERIVED = _DERIVED.replace("{mask_measures}", _mask_measures())
_SEQUENCE = _sequence_template()
"""The derived measures of ``_DERIVED`` (its query as ``{derived}``) plus the sequence measures."""


# Runs only while the module is imported (it builds module constants), before mutmut picks a
# mutant: no mutant of it could ever run, so none is made (make mutate, docs/mutation.md).
def _trend(recent: str, prior: str) -> str:  # pragma: no mutate block
    """(r7 - r23) / (r7 + r23) on per-day rates, 0 when both are zero (catalog: trends)."""
    r7, r23 = f"(({recent}) / 7)", f"(({prior}) / 23)"
    return f"CASE WHEN {r7} + {r23} = 0 THEN 0.0 ELSE ({r7} - {r23}) / ({r7} + {r23}) END"


def _days_since(instant: str) -> str:
    return f"date_diff('microsecond', {instant}, as_of) / {DAY_US}"


def _minutes(seconds: str, *, events: str, timed: str) -> str:
    """Seconds as minutes; null when the learner had such events but none carried a duration."""
    return f"CASE WHEN {events} > 0 AND {timed} = 0 THEN NULL ELSE {seconds} / 60 END"


# Runs only while the module is imported (it builds module constants), before mutmut picks a
# mutant: no mutant of it could ever run, so none is made (make mutate, docs/mutation.md).
def _tenure_at_least(days: int) -> str:  # pragma: no mutate block
    return f"tenure_us >= {days * DAY_US}"


# A learner's session time is unknown (null) when a sub-window has sessions but none carried a
# duration: counting them as 0 minutes would fake a drop.
_SESSION_TIME_UNKNOWN = (
    "(ses7 > 0 AND ses_timed7 = 0) OR (ses_prior23 > 0 AND ses_timed_prior23 = 0)"
)
_SLOPE_4W = "slope_x10 / 10"

FEATURE_SQL: dict[str, str] = {
    "days_since_last_event": _days_since("coalesce(last_ts, enrolled_at)"),
    "days_since_last_session": _days_since("last_session_ts"),
    "active_days_7d": "ad7",
    "active_days_14d": "ad14",
    "active_days_30d": "ad30",
    "active_day_share_30d": "CASE WHEN window_days > 0 THEN ad30 / window_days END",
    "events_7d": "ev7",
    "events_30d": "ev30",
    **{f"events_{lag}_day{'s' if lag > 1 else ''}_ago": f"day{lag}" for lag in range(1, 8)},
    "events_per_active_day_7d": "ev7 / nullif(ad7, 0)",
    "events_per_active_day_30d": "ev30 / nullif(ad30, 0)",
    "last_gap_days": (
        "CASE WHEN ad30 >= 2 THEN second_lag - newest_lag"
        " WHEN ad30 = 1 THEN lag_before - newest_lag END"
    ),
    "mean_gap_days_30d": "CASE WHEN ad30 >= 2 THEN (oldest_lag - newest_lag) / (ad30 - 1) END",
    "max_gap_days_30d": "CASE WHEN ad30 >= 2 THEN max_gap END",
    "silence_vs_usual_gap": (
        "CASE WHEN ad30 >= 2 THEN newest_lag / ((oldest_lag - newest_lag) / (ad30 - 1)) END"
    ),
    "longest_active_streak_30d": "longest_streak",
    "sessions_7d": "ses7",
    "sessions_14d": "ses14",
    "sessions_30d": "ses30",
    "session_minutes_7d": _minutes("ses_s7", events="ses7", timed="ses_timed7"),
    "session_minutes_30d": _minutes("ses_s30", events="ses30", timed="ses_timed30"),
    "avg_session_minutes_30d": "ses_s30 / 60 / nullif(ses_timed30, 0)",
    "activity_trend_7v23": _trend("ev7", "ev_prior23"),
    "events_change_7v23": "CASE WHEN ev_prior23 > 0 THEN (ev7 / 7) / (ev_prior23 / 23) - 1 END",
    "sessions_trend_7v23": _trend("ses7", "ses_prior23"),
    "minutes_trend_7v23": (
        f"CASE WHEN {_SESSION_TIME_UNKNOWN} THEN NULL ELSE {_trend('ses_s7', 'ses_s_prior23')} END"
    ),
    "weekly_events_slope_4w": _SLOPE_4W,
    "lessons_7d": "les7",
    "lessons_30d": "les30",
    "lessons_total": "lessons_total",
    "milestones_30d": "mil30",
    "milestones_total": "milestones_total",
    "days_since_last_milestone": _days_since("last_milestone_ts"),
    "quiz_attempts_30d": "qa30",
    "quiz_pass_rate_30d": "qp30 / nullif(qa30, 0)",
    "cancellations_30d": "can30",
    "community_posts_30d": "post30",
    "community_replies_30d": "reply30",
    "distinct_features_30d": "items30",
    "mobile_share_30d": "mob30 / nullif(chan30, 0)",
    "video_share_30d": "vid30 / nullif(ev30, 0)",
    "video_minutes_30d": _minutes("vid_s30", events="vid30", timed="vid_timed30"),
    "tenure_days": f"tenure_us / {DAY_US}",
    "is_cold_start": f"tenure_us < {WINDOW_DAYS * DAY_US}",
    "product_tag": "product_tag",
    "mrr": "mrr",
    "risk_inactive_7d": f"ev7 = 0 AND {_tenure_at_least(7)}",
    "risk_inactive_14d": f"ad14 = 0 AND {_tenure_at_least(14)}",
    # r7 <= r23 / 2 in integers: ev7 / 7 <= ev_prior23 / 23 / 2, so no float rounding at -0.5
    "risk_activity_drop": "ev_prior23 > 0 AND 46 * ev7 <= 7 * ev_prior23",
    "risk_session_time_drop": (
        f"coalesce(NOT ({_SESSION_TIME_UNKNOWN}) AND ses_s_prior23 > 0"
        " AND 46 * ses_s7 <= 7 * ses_s_prior23, FALSE)"
    ),
    "risk_low_frequency": (
        f"coalesce(ad30 / nullif(window_days, 0) < 0.10 AND {_tenure_at_least(7)}, FALSE)"
    ),
    "risk_no_lesson_14d": f"les14 = 0 AND {_tenure_at_least(14)}",
    "risk_milestone_stall": (
        f"CASE WHEN last_milestone_ts IS NULL THEN {_tenure_at_least(WINDOW_DAYS)}"
        f" ELSE date_diff('microsecond', last_milestone_ts, as_of) >= {WINDOW_DAYS * DAY_US} END"
    ),
    "risk_quiz_struggle": "qa30 >= 3 AND 2 * qp30 < qa30",
    "risk_community_withdrawal": "post30 + reply30 - community7 > 0 AND community7 = 0",
    "risk_short_sessions": "coalesce(ses_s30 / 60 / nullif(ses_timed30, 0) < 5, FALSE)",
    "risk_steady_decline": f"{_SLOPE_4W} < 0 AND wk1 > 0 AND 2 * ev7 <= wk1",
    "risk_onboarding_stall": (
        f"{_tenure_at_least(7)} AND tenure_us < {WINDOW_DAYS * DAY_US} AND ad_since_enrol <= 2"
    ),
}
"""SQL expression of each catalog feature over the measures above (risk_indicator_count aside:
it is the sum of the catalog's risk flags after the availability rule)."""

_PANDAS_DTYPES = {"float": "float64", "bool": "bool", "category": "str"}


# --- schemas -------------------------------------------------------------------------------------


# Runs only while the module is imported (it builds module constants), before mutmut picks a
# mutant: no mutant of it could ever run, so none is made (make mutate, docs/mutation.md).
def as_of_column() -> pa.Column:  # pragma: no mutate block
    """The pandera column of an as_of: naive ``datetime64[us]`` at midnight, never null.

    pandera coerces naive datetimes to nanoseconds, so the unit is checked, not coerced.
    """
    return pa.Column(
        None,
        nullable=False,
        checks=[
            pa.Check(lambda s: s.dtype == "datetime64[us]", error="as_of must be datetime64[us]"),
            pa.Check(lambda s: s == s.dt.normalize(), error="as_of must be at midnight"),
        ],
    )


SPINE_SCHEMA = pa.DataFrameSchema(
    {"customer_id": pa.Column("str", nullable=False), "as_of": as_of_column()},
    strict=True,
    coerce=True,
    unique=list(KEY_COLUMNS),
)


# --- public helpers -------------------------------------------------------------------------------


def connect(*, threads: int = 2, memory_limit: str = "4GB") -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB connection sized for the 2-core, 6 GiB target machine.

    Spills go to the system temporary directory rather than a ``.tmp`` folder in the cwd.
    """
    return duckdb.connect(
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "preserve_insertion_order": False,
            "temp_directory": str(Path(tempfile.gettempdir()) / "lstep-duckdb"),
        }
    )


def observation_dates(start: date, end: date, every_days: int) -> list[date]:
    """Dates ``start, start + every_days, ...`` up to and including ``end``.

    Raises:
        ValueError: when ``every_days`` < 1 or ``end`` is before ``start``.
    """
    if every_days < 1:
        raise ValueError(f"every_days must be at least 1, got {every_days}")
    if end < start:
        raise ValueError(f"observation window is empty: end {end} is before start {start}")
    count = (end - start).days // every_days + 1
    return [start + timedelta(days=i * every_days) for i in range(count)]


def as_of_series(values: Sequence[date] | pd.Series, *, source: str = "as_of") -> pd.Series:
    """Convert dates (or midnight datetimes/timestamps) to the as_of representation.

    The result is naive ``datetime64[us]`` at midnight, meaning 00:00 UTC of that day; tz-aware
    values are converted to UTC first.

    Raises:
        ValueError: on nulls, unparseable values, or values that are not at midnight (naming
            how many and a few examples): as_of is a day, never silently rounded.
    """
    series = pd.Series(values, copy=False)
    if series.isna().any():
        raise ValueError(f"{source}: {int(series.isna().sum())} values are null")
    try:
        parsed = pd.to_datetime(series)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: values are not dates ({error})") from error
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    parsed = parsed.astype("datetime64[us]")
    off_midnight = parsed[parsed != parsed.dt.normalize()]
    if len(off_midnight):
        examples = ", ".join(str(v) for v in off_midnight.head(3))
        raise ValueError(
            f"{source}: {len(off_midnight)} values are not at midnight (e.g. {examples}); "
            "as_of is a day meaning 00:00 UTC"
        )
    return parsed


def normalize_spine(spine: pd.DataFrame, *, source: str = "spine") -> pd.DataFrame:
    """Return ``spine``'s (customer_id, as_of) pairs in the project representation, in order.

    Other columns (e.g. ``churned`` of a labels frame) are ignored.

    Raises:
        ValueError: on missing columns, null customer ids, bad as_of values or duplicate pairs.
    """
    missing = [column for column in KEY_COLUMNS if column not in spine.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; it has {list(spine.columns)}")
    null_ids = int(spine["customer_id"].isna().sum())
    if null_ids:
        raise ValueError(f"{source}: column customer_id: {null_ids} rows are null")
    pairs = pd.DataFrame(
        {
            "customer_id": spine["customer_id"].astype("str").to_numpy(),
            "as_of": as_of_series(spine["as_of"], source=f"{source}: column as_of").to_numpy(),
        }
    )
    duplicated = pairs[pairs.duplicated(keep=False)]
    if len(duplicated):
        examples = duplicated.head(3).to_dict("records")
        raise ValueError(
            f"{source}: {len(duplicated)} rows repeat a (customer_id, as_of) pair, e.g. {examples}"
        )
    return SPINE_SCHEMA.validate(pairs)


def feature_dtypes(catalog: FeatureCatalog | None = None) -> dict[str, str]:
    """The pandas dtype of every feature column, from the catalog.

    float -> float64 (null as NaN), bool -> bool, category -> str. An int feature is int64 when it
    works on any event stream (``needs: []``) and the nullable ``Int64`` when it needs event types
    that may be absent from the log (then it is <NA>, not a misleading 0).
    """
    catalog = catalog or load_catalog()
    return {spec.name: _pandas_dtype(spec) for spec in catalog.features}


def frame_dtypes(catalog: FeatureCatalog | None = None) -> dict[str, str]:
    """The pandas dtype of every column of a feature frame: its keys, then ``feature_dtypes``."""
    return {"customer_id": "str", "as_of": "datetime64[us]", **feature_dtypes(catalog)}


def write_features(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a feature frame to parquet (validated first) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    feature_frame_schema().validate(frame).to_parquet(target, index=False)
    return target


def read_features(path: str | Path) -> pd.DataFrame:
    """Read a feature frame written by ``write_features`` and validate it against the catalog."""
    return feature_frame_schema().validate(pd.read_parquet(path))


# --- entry points ---------------------------------------------------------------------------------


def eligible_spine(
    events: TableInput,
    customers: TableInput,
    as_of: Sequence[date],
    *,
    con: duckdb.DuckDBPyConnection | SqlEngine | None = None,
) -> pd.DataFrame:
    """The eligible (customer_id, as_of) pairs at each date (DESIGN §4), sorted by as_of, id.

    Eligible at t: enrolled before t, and an event in [t-30d, t) or enrolled less than 30 days
    before t (a cold-start learner).
    """
    dates = _as_of_dates(as_of)
    with workspace(con) as ws:
        ws.register_inputs(events, customers)
        ws.register_dates(dates)
        active = ws.create("TABLE", "active", _ACTIVE_PAIRS_TABLE, in_window=ws.in_window())
        return ws.eligible(active)


def build_features(
    events: TableInput,
    customers: TableInput,
    *,
    as_of: Sequence[date] | None = None,
    spine: pd.DataFrame | None = None,
    con: duckdb.DuckDBPyConnection | SqlEngine | None = None,
    type_firsts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Compute the catalog features at each as_of from the events strictly before it.

    Args:
        events: events frame or parquet path (DESIGN §3 columns), validated upstream.
        customers: customers frame or parquet path, validated upstream.
        as_of: dates; every learner eligible at each date gets a row (sorted by as_of, id).
        spine: exact (customer_id, as_of) pairs to compute, eligible or not, kept in the spine's
            order; other columns are ignored. Give exactly one of ``as_of`` and ``spine``.
        con: a DuckDB connection to use, by default a fresh one from ``connect()``, or another
            engine (``features.spark.SparkEngine``). Only temporary objects are created on it,
            and they are dropped before returning.
        type_firsts: the event types' availability of a larger log (``event_type_firsts``),
            used instead of that of ``events``: availability is a property of the whole event
            stream, so features of a few learners' own events (the service's inline events)
            take it from the stored log, as the batch job does.

    Returns:
        customer_id, as_of (naive datetime64[us] at midnight UTC), then the catalog features in
        catalog order with the dtypes of ``feature_dtypes()``, validated by
        ``features.schemas.feature_frame_schema``.

    Raises:
        ValueError: when not exactly one of as_of/spine is given, on a bad spine, when spine
            learners are missing from customers, or when catalog and SQL disagree.
    """
    if (as_of is None) == (spine is None):
        raise ValueError("build_features needs exactly one of as_of (dates) or spine (pairs)")
    catalog = load_catalog()
    check_catalog_coverage(catalog)
    pairs = normalize_spine(spine) if spine is not None else None
    if pairs is not None and pairs.empty:
        return _typed_features(_empty_frame(catalog), catalog)
    dates = _as_of_dates(as_of) if pairs is None else pd.Series(pairs["as_of"].unique())
    with workspace(con) as ws:
        ws.register_inputs(events, customers)
        ws.register_dates(dates, restrict_to=pairs)
        window = ws.create("TABLE", "window", _WINDOW_TABLE, **ws.window_parts())
        pairs = ws.eligible(window) if pairs is None else pairs
        if type_firsts is not None:
            ws.use_type_firsts(type_firsts)
        raw = ws.features(pairs, window, catalog) if len(pairs) else _empty_frame(catalog)
    return _typed_features(raw, catalog)


def event_type_firsts(
    events: TableInput, con: duckdb.DuckDBPyConnection | SqlEngine | None = None
) -> pd.DataFrame:
    """Per event type, its first timestamp in ``events`` and its first with a duration.

    Returns:
        event_type, first_ts, first_timed_ts (UTC; NaT when no event of the type has a
        duration), the input ``build_features(type_firsts=...)`` takes.
    """
    with workspace(con) as ws:
        ws.register_events(events)
        firsts = ws.con.execute(
            f"SELECT CAST(event_type AS VARCHAR) AS event_type, min(ts) AS first_ts, "
            f"min(ts) FILTER (duration_s IS NOT NULL) AS first_timed_ts "
            f"FROM {ws.events} GROUP BY 1 ORDER BY 1"
        ).df()
    for column in ("first_ts", "first_timed_ts"):
        firsts[column] = pd.to_datetime(firsts[column]).dt.tz_localize("UTC")
    return firsts.astype({"event_type": "str"})


def check_catalog_coverage(catalog: FeatureCatalog) -> None:
    """Fail loudly when the catalog and ``FEATURE_SQL`` list different features.

    Raises:
        ValueError: naming the features without SQL or the SQL without a catalog entry.
    """
    catalog_names = set(catalog.names) - {RISK_COUNT}
    without_sql = sorted(catalog_names - set(FEATURE_SQL))
    without_spec = sorted(set(FEATURE_SQL) - catalog_names)
    if without_sql or without_spec:
        raise ValueError(
            "features/catalog.yaml and features/windows.py disagree: "
            f"catalog features without SQL {without_sql}; SQL features not in the catalog "
            f"{without_spec}"
        )


# --- internals ------------------------------------------------------------------------------------


def _pandas_dtype(spec: FeatureSpec) -> str:
    if spec.dtype == "int":
        return "Int64" if spec.needs else "int64"
    return _PANDAS_DTYPES[spec.dtype]


def _as_of_dates(as_of: Sequence[date] | None) -> pd.Series:
    """Distinct sorted as_of values; an empty list is an error, not an empty result."""
    if as_of is None or len(as_of) == 0:
        raise ValueError("as_of: give at least one date")
    return as_of_series(list(as_of)).drop_duplicates().sort_values(ignore_index=True)


def _typed_features(raw: pd.DataFrame, catalog: FeatureCatalog) -> pd.DataFrame:
    """The raw SQL result with the catalog dtypes, validated by the shared feature-frame schema."""
    dtypes = frame_dtypes(catalog)
    frame = raw[list(dtypes)].astype(dtypes).reset_index(drop=True)
    return feature_frame_schema(catalog).validate(frame)


def _empty_frame(catalog: FeatureCatalog) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=d) for name, d in frame_dtypes(catalog).items()})


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def timestamp_literal(value: pd.Timestamp) -> str:
    """A DuckDB TIMESTAMP literal of a naive (UTC) timestamp."""
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


def _availability_sql(catalog: FeatureCatalog, dates: str, type_firsts: str) -> str:
    """Per as_of, whether each needed type (and a timed event of it) appeared before it."""
    needed = sorted({t for spec in catalog.features for t in spec.needs})
    flags = ["coalesce(bool_or(f.first_timed_ts < d.as_of), FALSE) AS timed_any"]
    for event_type in needed:
        is_type = f"f.event_type = {_sql_literal(event_type)}"
        flags.append(
            f"coalesce(bool_or({is_type} AND f.first_ts < d.as_of), FALSE) AS seen_{event_type}"
        )
        flags.append(
            f"coalesce(bool_or({is_type} AND f.first_timed_ts < d.as_of), FALSE)"
            f" AS timed_{event_type}"
        )
    return (
        f"SELECT d.as_of, {', '.join(flags)} FROM {dates} AS d "
        f"LEFT JOIN {type_firsts} AS f ON TRUE GROUP BY d.as_of"
    )


def _available_condition(spec: FeatureSpec) -> str | None:
    """SQL condition under which ``spec`` has data (catalog ``needs`` / ``needs_duration``)."""
    conditions = []
    if spec.needs:
        conditions.append(" OR ".join(f"seen_{t}" for t in spec.needs))
    if spec.needs_duration:
        timed = [f"timed_{t}" for t in spec.needs] or ["timed_any"]
        conditions.append(" OR ".join(timed))
    return " AND ".join(f"({c})" for c in conditions) or None


def _feature_select(catalog: FeatureCatalog, measures: str) -> str:
    """The final SELECT: each catalog feature, masked by its availability, in catalog order."""
    columns = []
    for spec in catalog.features:
        if spec.name == RISK_COUNT:
            continue
        expression = FEATURE_SQL[spec.name]
        available = _available_condition(spec)
        if available is not None:
            missing = "FALSE" if spec.dtype == "bool" else "NULL"
            expression = f"CASE WHEN {available} THEN {expression} ELSE {missing} END"
        columns.append(f"{expression} AS {spec.name}")
    flags = " + ".join(f"CAST({name} AS INTEGER)" for name in catalog.risk_indicators) or "0"
    output = ", ".join(
        f"CAST({flags} AS BIGINT) AS {RISK_COUNT}" if name == RISK_COUNT else name
        for name in catalog.names
    )
    return (
        f"WITH m AS ({measures}), f AS (SELECT row_id, customer_id, as_of, {', '.join(columns)} "
        f"FROM m) SELECT row_id, customer_id, as_of, {output} FROM f ORDER BY row_id"
    )


@runtime_checkable
class SqlEngine(Protocol):
    """An engine that runs the feature SQL (written in DuckDB's dialect) other than DuckDB.

    Besides the DuckDB-connection methods the workspace calls (``execute`` -> a result with
    ``df()``/``fetchall()``, ``register``, ``unregister``) it says how a parquet path becomes a
    relation, which columns a relation has, and how spine pairs get their row ids.
    """

    def execute(self, sql: str) -> Any: ...
    def register(self, name: str, frame: Any) -> Any: ...
    def unregister(self, name: str) -> Any: ...
    def parquet_relation(self, ws: Workspace, path: str | Path, role: str) -> str: ...
    def column_names(self, relation: str) -> list[str]: ...
    def numbered(self, pairs: Any) -> Any: ...


class DuckDBEngine:
    """The engine-specific bits of a workspace on a plain DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def parquet_relation(self, ws: Workspace, path: str | Path, role: str) -> str:
        """DuckDB reads a local parquet file in the FROM clause itself."""
        return f"read_parquet({_sql_literal(str(_parquet_path(path, role)))})"

    def column_names(self, relation: str) -> list[str]:
        """The columns of a relation (a FROM-clause)."""
        return [row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]

    def numbered(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """The spine pairs with ``row_id`` = their position, the output's order."""
        return pairs.assign(row_id=range(len(pairs)))


class Workspace:
    """The temporary DuckDB objects of one call, named uniquely and dropped on close.

    ``features.labels`` uses it too, so that events are read the same way everywhere.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection | SqlEngine) -> None:
        self.con = con
        # the engine-specific bits (a parquet path as a relation, a relation's columns): DuckDB's
        # here, or those of an engine that brings its own (features.spark.SparkEngine)
        self.engine = con if isinstance(con, SqlEngine) else DuckDBEngine(con)
        self._prefix = f"lstep_{uuid.uuid4().hex[:12]}"
        self._created: list[tuple[str, str]] = []
        self._registered: list[str] = []
        self.customer_filter = ""
        self.type_firsts: str | None = None

    def name(self, role: str) -> str:
        """The unique name of this call's object playing ``role``."""
        return f"{self._prefix}_{role}"

    def create(self, kind: str, role: str, template: str, **parts: str) -> str:
        """Run a ``CREATE TEMP {kind} {name} AS ...`` template and remember it for cleanup."""
        name = self.name(role)
        self.con.execute(template.format(name=name, **parts))
        self._created.append((kind, name))
        return name

    def register(self, role: str, frame: pd.DataFrame) -> str:
        """Expose a pandas frame to SQL under a unique name (unregistered on close)."""
        name = self.name(role)
        self.con.register(name, frame)
        self._registered.append(name)
        return name

    def close(self) -> None:
        """Drop every temporary object this workspace created on the connection."""
        for kind, name in reversed(self._created):
            self.con.execute(f"DROP {kind} IF EXISTS {name}")
        for name in self._registered:
            self.con.unregister(name)

    def source(self, role: str, data: TableInput, columns: Sequence[str]) -> str:
        """A FROM-clause for a frame or parquet path, after checking the expected columns."""
        if isinstance(data, pd.DataFrame):
            relation = self.register(f"{role}_frame", data)
        else:
            relation = self.engine.parquet_relation(self, data, role)
        present = set(self.engine.column_names(relation))
        missing = [column for column in columns if column not in present]
        if missing:
            raise ValueError(f"{_describe(data, role)}: missing columns {missing}")
        return relation

    def register_events(self, events: TableInput) -> str:
        """The events as a view with naive-UTC ``ts``; its name is also kept as ``self.events``."""
        source = self.source("events", events, EVENT_COLUMNS)
        self.events = self.create("VIEW", "events", _EVENTS_VIEW, source=source)
        return self.events

    def register_inputs(self, events: TableInput, customers: TableInput) -> None:
        """Events and customers as views (``self.events``, ``self.customers``)."""
        self.register_events(events)
        source = self.source("customers", customers, CUSTOMER_COLUMNS)
        self.customers = self.create("VIEW", "customers", _CUSTOMERS_VIEW, source=source)

    def register_dates(self, dates: pd.Series, restrict_to: pd.DataFrame | None = None) -> None:
        """The as_of dates (and, for a spine, the learners whose events are worth reading)."""
        raw = self.register("as_of_input", pd.DataFrame({"as_of": dates}))
        self.dates = self.create("TABLE", "dates", _DATES_TABLE, dates=raw)
        self.window_days = self.create(
            "TABLE", "window_days", _WINDOW_DAYS_TABLE, dates=self.dates, lags=_LAGS
        )
        self.last_as_of = dates.max()
        self.until = timestamp_literal(self.last_as_of)
        self.first_window_start = timestamp_literal(dates.min() - pd.Timedelta(days=WINDOW_DAYS))
        if restrict_to is not None:
            ids = self.register("spine_ids", restrict_to[["customer_id"]].drop_duplicates())
            self.customer_filter = f"AND customer_id IN (SELECT customer_id FROM {ids})"

    def use_type_firsts(self, firsts: pd.DataFrame) -> None:
        """Take availability from ``event_type_firsts`` of another log (see ``build_features``).

        Raises:
            ValueError: when a column is missing.
        """
        columns = ["event_type", "first_ts", "first_timed_ts"]
        missing = [column for column in columns if column not in firsts.columns]
        if missing:
            raise ValueError(f"type_firsts: missing columns {missing}")
        naive = firsts[columns].assign(
            first_ts=naive_utc(firsts["first_ts"]),
            first_timed_ts=naive_utc(firsts["first_timed_ts"]),
        )
        self.type_firsts = self.register("type_firsts_input", naive)

    def in_window(self) -> str:
        """SQL of the events joined to the windows holding them, with their ``lag``."""
        return _IN_WINDOW.format(
            events=self.events,
            window_days=self.window_days,
            first_window_start=self.first_window_start,
            until=self.until,
            customer_filter=self.customer_filter,
        )

    def window_parts(self) -> dict[str, str]:
        """The placeholders of ``_WINDOW_TABLE``."""
        aggregates = ", ".join(f"{sql} AS {name}" for name, sql in _WINDOW_AGGREGATES.items())
        return {"aggregates": aggregates, "in_window": self.in_window()}

    def eligible(self, active: str) -> pd.DataFrame:
        """Eligible pairs, given a table of the (customer_id, as_of) with events in the window."""
        sql = _ELIGIBLE.format(customers=self.customers, dates=self.dates, active=active)
        # built by SQL from unique customers and dates: typed, not re-validated (1M rows cost 0.6 s;
        # the feature frame's schema checks uniqueness at the boundary anyway)
        pairs = self.con.execute(sql).df().reset_index(drop=True)
        return pairs.astype({"customer_id": "str", "as_of": "datetime64[us]"})

    def features(self, pairs: pd.DataFrame, window: str, catalog: FeatureCatalog) -> pd.DataFrame:
        """The raw feature rows of ``pairs`` (row_id, keys, catalog columns), in pairs' order."""
        return self.con.execute(self.features_sql(pairs, window, catalog)).df()

    def features_sql(self, pairs: TableInput, window: str, catalog: FeatureCatalog) -> str:
        """The query of ``features`` (its tables created), for an engine that runs it lazily.

        ``pairs`` is a pandas frame, or whatever frame the engine's ``numbered`` accepts.
        """
        spine = self._spine_table(pairs)
        measures = self._measures_sql(spine, window, catalog)
        return _feature_select(catalog, measures)

    def _spine_table(self, pairs: pd.DataFrame) -> str:
        raw = self.register("spine_pairs", self.engine.numbered(pairs))
        spine = self.create(
            "TABLE", "spine", _SPINE_TABLE, spine=raw, customers=self.customers, dates=self.dates
        )
        joined, given = self.con.execute(
            f"SELECT (SELECT count(*) FROM {spine}), (SELECT count(*) FROM {raw})"
        ).fetchall()[0]
        if joined != given:
            unknown = self.con.execute(
                f"SELECT DISTINCT customer_id FROM {raw} WHERE customer_id NOT IN "
                f"(SELECT customer_id FROM {self.customers}) ORDER BY 1 LIMIT 5"
            ).fetchall()
            raise ValueError(
                f"spine: {given - joined} rows name learners missing from customers, "
                f"e.g. {[row[0] for row in unknown]}"
            )
        return spine

    def _measures_sql(self, spine: str, window: str, catalog: FeatureCatalog) -> str:
        """Create the items, history and availability tables; return the measures query."""
        items = self.create("TABLE", "items", _ITEMS_TABLE, in_window=self.in_window())
        window_columns = ", ".join(
            f"coalesce(w.{name}, 0) AS {name}"
            for name in _WINDOW_AGGREGATES
            if not name.endswith("_ts")  # a missing timestamp stays missing
        )
        measures = _MEASURES.format(
            window_columns=window_columns,
            spine=spine,
            window=window,
            items=items,
            history_at=self._history_at(spine),
            availability=self._availability(catalog),
        )
        return _SEQUENCE.format(derived=_DERIVED.format(measures=measures))

    def _history_at(self, spine: str) -> str:
        """The all-history measures before each spine row's window."""
        bucket_days = self.create("TABLE", "bucket_days", _BUCKET_DAYS_TABLE, dates=self.dates)
        history = self.create(
            "TABLE",
            "history",
            _HISTORY_TABLE,
            events=self.events,
            bucket_days=bucket_days,
            last_window_start=timestamp_literal(self.last_as_of - pd.Timedelta(days=WINDOW_DAYS)),
            customer_filter=self.customer_filter,
        )
        return self.create("TABLE", "history_at", _HISTORY_AT_TABLE, spine=spine, history=history)

    def _availability(self, catalog: FeatureCatalog) -> str:
        """Per as_of, which event types (with a duration or not) the log had before it."""
        firsts = self.type_firsts or self.create(
            "TABLE", "type_firsts", _TYPE_FIRSTS_TABLE, events=self.events, until=self.until
        )
        return self.create(
            "TABLE",
            "availability",
            "CREATE TEMP TABLE {name} AS {query}",
            query=_availability_sql(catalog, self.dates, firsts),
        )


def naive_utc(column: pd.Series) -> pd.Series:
    """Timestamps as naive UTC (the views' convention); naive input already is UTC."""
    moments = pd.to_datetime(column)
    if moments.dt.tz is not None:
        moments = moments.dt.tz_convert("UTC").dt.tz_localize(None)
    return moments.astype("datetime64[us]")


def _parquet_path(data: str | Path, role: str) -> Path:
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{role}: no such file {path}")
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        raise ValueError(f"{role}: expected a parquet file, got {path.name}")
    return path


def _describe(data: TableInput, role: str) -> str:
    return role if isinstance(data, pd.DataFrame) else Path(data).name


@contextmanager
def workspace(con: duckdb.DuckDBPyConnection | SqlEngine | None = None) -> Iterator[Workspace]:
    """A ``Workspace`` on ``con``, or on a fresh ``connect()`` connection closed afterwards."""
    own = con is None
    connection = connect() if own else con
    ws = Workspace(connection)
    try:
        yield ws
    finally:
        if own:
            connection.close()  # its temporary objects go with it
        else:
            ws.close()
