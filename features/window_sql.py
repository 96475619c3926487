"""The DuckDB SQL of the window features (DESIGN §4): templates, feature expressions, builders.

This module is text: SQL templates and the Python that assembles them (the feature expressions
and the catalog-driven SELECTs over the measures built here are ``features.feature_sql``). It
runs nothing and imports no engine, so it sits below ``features.workspace`` (which runs these
statements on DuckDB or, transpiled, on Spark) and ``features.windows`` (the public API), and a
reader can check the SQL without the machinery that runs it.

How the SQL is organised (one DuckDB connection; its temporary objects are dropped at the end).
Events are aggregated straight into one row per (learner, as_of): at 1M learners a per-(learner,
day) table has ~25M groups and costs several times more than this.

1. window: every event joined to each as_of whose window [t-30d, t) holds it, with ``lag`` = days
   from the event's UTC day to t's day (t is a midnight, so lag 1..7 is exactly "the last 7
   days"), then one GROUP BY (learner, as_of) of conditional counts/sums and a bitmask of
   active days.
   Distinct feature items come from a second, much smaller aggregation of feature_used events.
2. history: the events before each window, per (learner, bucket of as_of dates); a spine row
   adds up the buckets up to its date and its own window (last timestamps, lesson totals, ...).
3. availability: which event types (and which types with a duration) appeared anywhere in the log
   before t. Each catalog feature is nulled (numbers) or set False (flags) when its ``needs`` are
   absent; this is generated from ``features/catalog.yaml`` (``needs``/``needs_duration``).
4. the spine (learner, t) joined to customers, the measures above and the feature expressions;
   the sequence of active days (gaps, streaks) comes from the 30-bit mask of step 1 by
   integer bit arithmetic, a few stacked SELECTs, the same on DuckDB and Spark SQL.

The catalog is the column list: every catalog feature must have an SQL expression
(``features.feature_sql.FEATURE_SQL``) and the output columns follow catalog order.
"""

from __future__ import annotations

import pandas as pd

DAY_US = 86_400_000_000
"""Microseconds in a day: durations are compared in exact integer microseconds."""
WINDOW_DAYS = 30
EVENT_COLUMNS = ("customer_id", "ts", "event_type", "duration_s", "channel", "item")
CUSTOMER_COLUMNS = ("customer_id", "product_tag", "enrolled_at", "mrr")
RISK_COUNT = "risk_indicator_count"
DURATION_US = "round(duration_s * 1000000)"
"""An event's duration in whole microseconds (a DOUBLE), as every window sum adds it."""
_DURATION_SUMS = {"ses_us7": "ses_s7", "ses_us30": "ses_s30", "vid_us30": "vid_s30"}
"""The window's microsecond sums and the seconds the feature expressions read."""

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


def _count(condition: str) -> str:
    """``count(*) FILTER (condition)`` as ``count_if`` (see ``_WINDOW_AGGREGATES``).

    ``condition`` must never be null: DuckDB's ``count_if`` of a group whose conditions are all
    null is NULL where Spark's is 0 (a nullable column is counted by ``_count_of``, see mob30).
    """
    # DuckDB's count_if is a HUGEINT: cast, so that the window table, the joins and arithmetic
    # over it and the fetch to pandas work on 64-bit integers, as Spark's BIGINT count_if does
    return f"CAST(count_if({condition}) AS BIGINT)"


def _sum(value: str, condition: str) -> str:
    """``sum(value) FILTER (condition)``: null when no row matches, as the FILTER form."""
    return f"sum(CASE WHEN {condition} THEN {value} END)"


def _count_of(value: str, condition: str) -> str:
    """``count(value) FILTER (condition)``: the matching rows whose value is not null."""
    return f"count(CASE WHEN {condition} THEN {value} END)"


def _max(value: str, condition: str) -> str:
    """``max(value) FILTER (condition)``: null when no row matches."""
    return f"max(CASE WHEN {condition} THEN {value} END)"


# One aggregate per measure: at 50M events each extra aggregate costs ~0.5 s of CPU, so the list is
# kept to what the catalog needs (community posts + replies share one 7-day count, active days are
# one bitmask with bit lag-1 set). Conditional aggregates are CASEs, not FILTER clauses: DuckDB
# (2.0) runs each FILTER as a selection of its own over the rows, and with ~40 of them this GROUP BY
# took 1.3-1.5x the CPU on a quiet machine, twice under load (200k learners: 3.3 s -> 2.2-2.5 s
# quiet; the same values; Spark reads CASE alike). Counts are count_if, whose boolean input DuckDB
# aggregates without a CASE's selection and null vector: ~15-25% less CPU for this GROUP BY than
# count(CASE WHEN c THEN 1 END) (200k learners: 2.3-3.0 s -> 1.8-2.2 s, alternated).
_WINDOW_AGGREGATES = {
    "ev7": _count("lag <= 7"),
    "ev30": "count(*)",
    "wk1": _count("lag BETWEEN 22 AND 28"),
    # sum over the 4 weeks of (2x - 5) * events, x = 1 (oldest) .. 4 (last 7 days): 10 * slope
    "slope_x10": f"CAST({_sum('3 - 2 * ((lag - 1) // 7)', 'lag <= 28')} AS BIGINT)",
    "active_mask": "bit_or(CAST(1 AS BIGINT) << (lag - 1))",
    "last_ts": "max(ts)",
    "last_session_ts": _max("ts", "event_type = 'session'"),
    "last_milestone_ts": _max("ts", "event_type = 'milestone_completed'"),
    # events on each of the last 7 days (the shape of the last week, and its intensity when the
    # log has no durations): day1 = the day before as_of
    **{f"day{lag}": _count(f"lag = {lag}") for lag in range(1, 8)},
    "ses7": _count("event_type = 'session' AND lag <= 7"),
    "ses14": _count("event_type = 'session' AND lag <= 14"),
    "ses30": _count("event_type = 'session'"),
    # durations are summed as whole microseconds held in a DOUBLE: sums of integers below 2**53
    # (285 years of one learner's window) are exact in any order, so that the window carried
    # from the day before (features.carry: added and taken away a day at a time) equals the one
    # aggregated from the log, to the last bit, and DuckDB's parallel sums repeat exactly
    "ses_us7": _sum(DURATION_US, "event_type = 'session' AND lag <= 7"),
    "ses_us30": _sum(DURATION_US, "event_type = 'session'"),
    "ses_timed7": _count_of("duration_s", "event_type = 'session' AND lag <= 7"),
    "ses_timed30": _count_of("duration_s", "event_type = 'session'"),
    "les7": _count("event_type = 'lesson_completed' AND lag <= 7"),
    "les14": _count("event_type = 'lesson_completed' AND lag <= 14"),
    "les30": _count("event_type = 'lesson_completed'"),
    "mil30": _count("event_type = 'milestone_completed'"),
    "qa30": _count("event_type = 'quiz_attempted'"),
    "qp30": _count("event_type = 'quiz_passed'"),
    "can30": _count("event_type = 'subscription_cancelled'"),
    "community7": _count("event_type IN ('community_post', 'community_reply') AND lag <= 7"),
    "post30": _count("event_type = 'community_post'"),
    "reply30": _count("event_type = 'community_reply'"),
    "vid30": _count("event_type = 'video_watched'"),
    "vid_us30": _sum(DURATION_US, "event_type = 'video_watched'"),
    "vid_timed30": _count_of("duration_s", "event_type = 'video_watched'"),
    # channel is nullable: a learner whose events all lack a channel has mob30 0, not NULL
    "mob30": _count_of("1", "channel = 'mobile'"),
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
# up buckets 1..k and its own window. Days are matched by equality (a hash join), as above;
# conditional aggregates are CASEs for the reason given at _WINDOW_AGGREGATES.
_HISTORY_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT e.customer_id, coalesce(b.bucket, 1) AS bucket,
       max(e.ts) AS last_ts,
       max(CASE WHEN e.event_type = 'session' THEN e.ts END) AS last_session_ts,
       max(CASE WHEN e.event_type = 'milestone_completed' THEN e.ts END) AS last_milestone_ts,
       CAST(count_if(e.event_type = 'lesson_completed') AS BIGINT) AS lessons,
       CAST(count_if(e.event_type = 'milestone_completed') AS BIGINT) AS milestones
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
       CAST(sum(h.lessons) AS BIGINT) AS lessons_before,
       CAST(sum(h.milestones) AS BIGINT) AS milestones_before
FROM {spine} AS s JOIN {history} AS h ON h.customer_id = s.customer_id AND h.bucket <= s.bucket
GROUP BY s.row_id
"""

_TYPE_FIRSTS_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT event_type,
       min(ts) AS first_ts,
       min(CASE WHEN duration_s IS NOT NULL THEN ts END) AS first_timed_ts
FROM {events}
WHERE ts < {until}
GROUP BY event_type
"""

# The kinds of events (type, has a duration) among the first rows before the first as_of: a
# LIMIT stops the scan after a few vectors (the log's rarest type, cancellations, is first
# met ~3.6k rows in at 200k learners).
_SAMPLE_ROWS = 200_000
_SAMPLE_KINDS = """
SELECT DISTINCT event_type, duration_s IS NOT NULL AS timed
FROM (SELECT event_type, duration_s FROM {events} WHERE ts < {before} LIMIT {rows})
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


def measure_columns() -> str:
    """The window's aggregates as ``_MEASURES`` selects them: 0 for a learner without events in
    the window (a missing timestamp stays missing), durations in seconds."""
    columns = []
    for name in _WINDOW_AGGREGATES:
        if name.endswith("_ts"):
            continue
        value = f"coalesce(w.{name}, 0)"
        seconds = _DURATION_SUMS.get(name)
        columns.append(f"{value} / 1000000 AS {seconds}" if seconds else f"{value} AS {name}")
    return ", ".join(columns)


# --- literals -------------------------------------------------------------------------------------


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def timestamp_literal(value: pd.Timestamp) -> str:
    """A DuckDB TIMESTAMP literal of a naive (UTC) timestamp."""
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


__all__ = [
    "CUSTOMER_COLUMNS",
    "DAY_US",
    "EVENT_COLUMNS",
    "RISK_COUNT",
    "WINDOW_DAYS",
    "timestamp_literal",
]
