"""The catalog features of one or a few learners, in memory: numpy over their sorted events.

The batch job computes features with DuckDB (``features.windows.build_features``); the service
needs the same numbers for one learner in well under a millisecond, without a DuckDB workspace or
a pandera validation of a one-row frame. This module is that second implementation. The catalog
(``features/catalog.yaml``) stays the one definition of what each feature means: the column order,
the dtypes and the availability rule (``needs``, ``needs_duration``) are read from it, and
``features.feature_sql`` (``FEATURE_SQL``) is the reference each expression below mirrors, measure
for measure. ``tests/features/test_online.py`` proves the two equal (nulls included) on random logs
and on the simulator.

Conventions are those of ``features.windows``: ``as_of`` t is a day meaning 00:00 UTC; only events
with ``ts < t`` count; the window is [t - 30d, t); ``lag`` is the days from an event's UTC day to
t's day, so lag 1..7 is exactly "the last 7 days". Instants are int64 microseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import FeatureCatalog, load_catalog
from features.online_inputs import (
    CANCEL,
    FEATURE,
    LESSON,
    MILESTONE,
    MOBILE,
    NO_CHANNEL,
    OTHER_CODE,
    POST,
    QUIZ_ATTEMPT,
    QUIZ_PASS,
    REPLY,
    SESSION,
    VIDEO,
    Customer,
    LearnerEvents,
    TypeAvailability,
    instant_us,
)
from features.window_sql import DAY_US, RISK_COUNT, WINDOW_DAYS
from features.windows import feature_dtypes

# --- measures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measures:
    """What the feature expressions read: ``features.window_sql``' measures of one (learner, as_of).

    Window counts and sums are 0 without events; the ``*_us`` instants are None without one.
    """

    as_of_us: int
    enrolled_us: int
    product_tag: str
    mrr: float
    tenure_us: int
    window_days: int
    last_us: int | None
    last_session_us: int | None
    last_milestone_us: int | None
    lessons_total: int
    milestones_total: int
    ev7: int
    ev30: int
    wk1: int
    slope_x10: int
    ad7: int
    ad14: int
    ad30: int
    ad_since_enrol: int
    ses7: int
    ses14: int
    ses30: int
    ses_s7: float
    ses_s30: float
    ses_timed7: int
    ses_timed30: int
    les7: int
    les14: int
    les30: int
    mil30: int
    qa30: int
    qp30: int
    can30: int
    community7: int
    post30: int
    reply30: int
    vid30: int
    vid_s30: float
    vid_timed30: int
    mob30: int
    chan30: int
    items30: int
    day_counts: tuple[int, ...]
    """Events on each of the last 7 days (lag 1 first)."""
    active_lags: tuple[int, ...]
    """The lags of the window's active days, newest (smallest lag) first."""
    lag_before: int | None
    """Days from the day of the last event before the window to t's day (None without one)."""

    @property
    def ev_prior23(self) -> int:
        return self.ev30 - self.ev7

    @property
    def ses_prior23(self) -> int:
        return self.ses30 - self.ses7

    @property
    def ses_s_prior23(self) -> float:
        return self.ses_s30 - self.ses_s7

    @property
    def ses_timed_prior23(self) -> int:
        return self.ses_timed30 - self.ses_timed7


def measures(events: LearnerEvents, customer: Customer, as_of_us: int) -> Measures:
    """The measures of ``customer`` at ``as_of_us`` (a midnight) from their events."""
    end = int(np.searchsorted(events.ts_us, as_of_us, side="left"))
    start = int(np.searchsorted(events.ts_us, as_of_us - WINDOW_DAYS * DAY_US, side="left"))
    history = events.take(slice(0, end))
    window = events.take(slice(start, end))
    as_of_day = as_of_us // DAY_US
    lag = as_of_day - window.ts_us // DAY_US  # 1..30
    days = np.unique(lag)
    window_days = min(WINDOW_DAYS, as_of_day - customer.enrolled_us // DAY_US)
    counts = _type_counts(window.type_code, lag)
    timed = ~np.isnan(window.duration_s)
    # whole microseconds, as the SQL's sums (features.window_sql.DURATION_US; durations are >= 0)
    duration_us = np.floor(window.duration_s * 1e6 + 0.5)
    is_session, is_video = window.type_code == SESSION, window.type_code == VIDEO
    in7, weeks = lag <= 7, lag <= 28
    community = (window.type_code == POST) | (window.type_code == REPLY)
    features_used = window.item[(window.type_code == FEATURE)]
    return Measures(
        as_of_us=as_of_us,
        enrolled_us=customer.enrolled_us,
        product_tag=customer.product_tag,
        mrr=customer.mrr,
        tenure_us=as_of_us - customer.enrolled_us,
        window_days=int(window_days),
        last_us=int(history.ts_us[-1]) if end else None,
        last_session_us=_last(history, SESSION),
        last_milestone_us=_last(history, MILESTONE),
        lessons_total=int(np.count_nonzero(history.type_code == LESSON)),
        milestones_total=int(np.count_nonzero(history.type_code == MILESTONE)),
        ev7=int(np.count_nonzero(in7)),
        ev30=len(window),
        wk1=int(np.count_nonzero((lag >= 22) & weeks)),
        slope_x10=int(np.sum(3 - 2 * ((lag[weeks] - 1) // 7))),
        ad7=int(np.count_nonzero(days <= 7)),
        ad14=int(np.count_nonzero(days <= 14)),
        ad30=len(days),
        ad_since_enrol=int(np.count_nonzero(days <= max(window_days, 0))),
        ses7=counts[SESSION, 0],
        ses14=counts[SESSION, 1],
        ses30=counts[SESSION, 2],
        ses_s7=_seconds(duration_us[is_session & timed & in7]),
        ses_s30=_seconds(duration_us[is_session & timed]),
        ses_timed7=int(np.count_nonzero(is_session & timed & in7)),
        ses_timed30=int(np.count_nonzero(is_session & timed)),
        les7=counts[LESSON, 0],
        les14=counts[LESSON, 1],
        les30=counts[LESSON, 2],
        mil30=counts[MILESTONE, 2],
        qa30=counts[QUIZ_ATTEMPT, 2],
        qp30=counts[QUIZ_PASS, 2],
        can30=counts[CANCEL, 2],
        community7=int(np.count_nonzero(community & in7)),
        post30=counts[POST, 2],
        reply30=counts[REPLY, 2],
        vid30=counts[VIDEO, 2],
        vid_s30=_seconds(duration_us[is_video & timed]),
        vid_timed30=int(np.count_nonzero(is_video & timed)),
        mob30=int(np.count_nonzero(window.channel_code == MOBILE)),
        chan30=int(np.count_nonzero(window.channel_code != NO_CHANNEL)),
        items30=len({item for item in features_used.tolist() if item is not None}),
        day_counts=tuple(np.bincount(lag[in7], minlength=8)[1:8].tolist()),
        active_lags=tuple(days.tolist()),
        lag_before=int(as_of_day - history.ts_us[start - 1] // DAY_US) if start else None,
    )


def _seconds(duration_us: np.ndarray) -> float:
    """A sum of whole microseconds in seconds, as the SQL divides it."""
    return float(np.sum(duration_us)) / 1_000_000


def _type_counts(codes: np.ndarray, lag: np.ndarray) -> dict[tuple[int, int], int]:
    """(type code, 0|1|2) -> events of that type in the last 7 days | 14 days | window."""
    out: dict[tuple[int, int], int] = {}
    for column, limit in enumerate((7, 14, WINDOW_DAYS)):
        tally = np.bincount(codes[lag <= limit].astype("int64"), minlength=OTHER_CODE + 1)
        out.update({(code, column): int(n) for code, n in enumerate(tally.tolist())})
    return out


def _last(history: LearnerEvents, code: int) -> int | None:
    hits = np.flatnonzero(history.type_code == code)
    return int(history.ts_us[hits[-1]]) if len(hits) else None


# --- the feature expressions (features.feature_sql.FEATURE_SQL, in Python) ------------------------


def _days_since(instant_us: int | None, as_of_us: int) -> float | None:
    return None if instant_us is None else (as_of_us - instant_us) / DAY_US


def _minutes(seconds: float, *, events: int, timed: int) -> float | None:
    """Seconds as minutes; null when the learner had such events but none carried a duration."""
    return None if events > 0 and timed == 0 else seconds / 60


def _trend(recent: float, prior: float) -> float:
    """(r7 - r23) / (r7 + r23) on per-day rates, 0 when both are zero (catalog: trends)."""
    r7, r23 = recent / 7.0, prior / 23.0
    return 0.0 if r7 + r23 == 0 else (r7 - r23) / (r7 + r23)


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _tenure_at_least(m: Measures, days: int) -> bool:
    return m.tenure_us >= days * DAY_US


def _session_time_unknown(m: Measures) -> bool:
    """A sub-window has sessions but none carried a duration: counting 0 minutes fakes a drop."""
    return (m.ses7 > 0 and m.ses_timed7 == 0) or (m.ses_prior23 > 0 and m.ses_timed_prior23 == 0)


def _avg_session_minutes(m: Measures) -> float | None:
    return None if m.ses_timed30 == 0 else m.ses_s30 / 60 / m.ses_timed30


def _last_gap(m: Measures) -> int | None:
    """Days between the last two active days; the earlier may precede the window."""
    if m.ad30 >= 2:
        return m.active_lags[1] - m.active_lags[0]
    if m.ad30 == 1 and m.lag_before is not None:
        return m.lag_before - m.active_lags[0]
    return None


def _mean_gap(m: Measures) -> float | None:
    if m.ad30 < 2:
        return None
    return (m.active_lags[-1] - m.active_lags[0]) / (m.ad30 - 1)


def _max_gap(m: Measures) -> int | None:
    return int(np.max(np.diff(m.active_lags))) if m.ad30 >= 2 else None


def _silence_vs_usual_gap(m: Measures) -> float | None:
    mean = _mean_gap(m)
    return None if mean is None else m.active_lags[0] / mean


def _longest_streak(m: Measures) -> int:
    """Most consecutive active days (lags one apart) in the window."""
    longest = run = 0
    previous = None
    for lag in m.active_lags:
        run = run + 1 if previous is not None and lag == previous + 1 else 1
        longest, previous = max(longest, run), lag
    return longest


def _milestone_stall(m: Measures) -> bool:
    if m.last_milestone_us is None:
        return _tenure_at_least(m, WINDOW_DAYS)
    return m.as_of_us - m.last_milestone_us >= WINDOW_DAYS * DAY_US


def _low_frequency(m: Measures) -> bool:
    share = _ratio(m.ad30, m.window_days)
    return share is not None and share < 0.10 and _tenure_at_least(m, 7)


def _short_sessions(m: Measures) -> bool:
    average = _avg_session_minutes(m)
    return average is not None and average < 5


FEATURES: dict[str, Callable[[Measures], Any]] = {
    "days_since_last_event": lambda m: _days_since(
        m.last_us if m.last_us is not None else m.enrolled_us, m.as_of_us
    ),
    "days_since_last_session": lambda m: _days_since(m.last_session_us, m.as_of_us),
    "active_days_7d": lambda m: m.ad7,
    "active_days_14d": lambda m: m.ad14,
    "active_days_30d": lambda m: m.ad30,
    "active_day_share_30d": lambda m: m.ad30 / m.window_days if m.window_days > 0 else None,
    "events_7d": lambda m: m.ev7,
    "events_30d": lambda m: m.ev30,
    **{
        f"events_{lag}_day{'s' if lag > 1 else ''}_ago": (lambda m, i=lag - 1: m.day_counts[i])
        for lag in range(1, 8)
    },
    "events_per_active_day_7d": lambda m: _ratio(m.ev7, m.ad7),
    "events_per_active_day_30d": lambda m: _ratio(m.ev30, m.ad30),
    "last_gap_days": _last_gap,
    "mean_gap_days_30d": _mean_gap,
    "max_gap_days_30d": _max_gap,
    "silence_vs_usual_gap": _silence_vs_usual_gap,
    "longest_active_streak_30d": _longest_streak,
    "sessions_7d": lambda m: m.ses7,
    "sessions_14d": lambda m: m.ses14,
    "sessions_30d": lambda m: m.ses30,
    "session_minutes_7d": lambda m: _minutes(m.ses_s7, events=m.ses7, timed=m.ses_timed7),
    "session_minutes_30d": lambda m: _minutes(m.ses_s30, events=m.ses30, timed=m.ses_timed30),
    "avg_session_minutes_30d": _avg_session_minutes,
    "activity_trend_7v23": lambda m: _trend(m.ev7, m.ev_prior23),
    "events_change_7v23": lambda m: (
        (m.ev7 / 7.0) / (m.ev_prior23 / 23.0) - 1 if m.ev_prior23 > 0 else None
    ),
    "sessions_trend_7v23": lambda m: _trend(m.ses7, m.ses_prior23),
    "minutes_trend_7v23": lambda m: (
        None if _session_time_unknown(m) else _trend(m.ses_s7, m.ses_s_prior23)
    ),
    "weekly_events_slope_4w": lambda m: m.slope_x10 / 10.0,
    "lessons_7d": lambda m: m.les7,
    "lessons_30d": lambda m: m.les30,
    "lessons_total": lambda m: m.lessons_total,
    "milestones_30d": lambda m: m.mil30,
    "milestones_total": lambda m: m.milestones_total,
    "days_since_last_milestone": lambda m: _days_since(m.last_milestone_us, m.as_of_us),
    "quiz_attempts_30d": lambda m: m.qa30,
    "quiz_pass_rate_30d": lambda m: _ratio(m.qp30, m.qa30),
    "cancellations_30d": lambda m: m.can30,
    "community_posts_30d": lambda m: m.post30,
    "community_replies_30d": lambda m: m.reply30,
    "distinct_features_30d": lambda m: m.items30,
    "mobile_share_30d": lambda m: _ratio(m.mob30, m.chan30),
    "video_share_30d": lambda m: _ratio(m.vid30, m.ev30),
    "video_minutes_30d": lambda m: _minutes(m.vid_s30, events=m.vid30, timed=m.vid_timed30),
    "tenure_days": lambda m: m.tenure_us / DAY_US,
    "is_cold_start": lambda m: m.tenure_us < WINDOW_DAYS * DAY_US,
    "product_tag": lambda m: m.product_tag,
    "mrr": lambda m: None if m.mrr != m.mrr else m.mrr,  # NaN: unknown
    "risk_inactive_7d": lambda m: m.ev7 == 0 and _tenure_at_least(m, 7),
    "risk_inactive_14d": lambda m: m.ad14 == 0 and _tenure_at_least(m, 14),
    # r7 <= r23 / 2 in integers, as the batch does: no float rounding at -0.5
    "risk_activity_drop": lambda m: m.ev_prior23 > 0 and 46 * m.ev7 <= 7 * m.ev_prior23,
    "risk_session_time_drop": lambda m: (
        not _session_time_unknown(m)
        and m.ses_s_prior23 > 0
        and 46 * m.ses_s7 <= 7 * m.ses_s_prior23
    ),
    "risk_low_frequency": _low_frequency,
    "risk_no_lesson_14d": lambda m: m.les14 == 0 and _tenure_at_least(m, 14),
    "risk_milestone_stall": _milestone_stall,
    "risk_quiz_struggle": lambda m: m.qa30 >= 3 and 2 * m.qp30 < m.qa30,
    "risk_community_withdrawal": lambda m: (
        m.post30 + m.reply30 - m.community7 > 0 and m.community7 == 0
    ),
    "risk_short_sessions": _short_sessions,
    "risk_steady_decline": lambda m: m.slope_x10 / 10.0 < 0 and m.wk1 > 0 and 2 * m.ev7 <= m.wk1,
    "risk_onboarding_stall": lambda m: (
        _tenure_at_least(m, 7) and m.tenure_us < WINDOW_DAYS * DAY_US and m.ad_since_enrol <= 2
    ),
}
"""Each catalog feature (risk_indicator_count aside: the sum of the masked risk flags) as a
function of the measures; the mirror of ``features.feature_sql.FEATURE_SQL``."""


@cache
def _plan() -> tuple[FeatureCatalog, dict[str, str]]:
    """The catalog and its pandas dtypes, after checking every feature has an expression."""
    catalog = load_catalog()
    names = set(catalog.names) - {RISK_COUNT}
    if names != set(FEATURES):
        raise ValueError(
            "features/catalog.yaml and features/online.py disagree: catalog features without "
            f"an expression {sorted(names - set(FEATURES))}; expressions not in the catalog "
            f"{sorted(set(FEATURES) - names)}"
        )
    return catalog, feature_dtypes(catalog)


def learner_features(
    events: LearnerEvents, customer: Customer, as_of: date, availability: TypeAvailability
) -> dict[str, Any]:
    """One learner's catalog features at ``as_of`` (None for a null), in catalog order.

    Args:
        events: the learner's events (any time; only those before as_of are read).
        customer: the learner's customer record.
        as_of: the day; features use events before its 00:00 UTC.
        availability: when event types first appeared in the whole log (not only this learner's).
    """
    catalog, _ = _plan()
    as_of_us = instant_us(as_of)
    m = measures(events, customer, as_of_us)
    available = availability.available(as_of_us, catalog)
    risk_flags = set(catalog.risk_indicators)
    row: dict[str, Any] = {}
    for spec in catalog.features:
        if spec.name == RISK_COUNT:
            row[RISK_COUNT] = sum(bool(row[name]) for name in risk_flags)
        elif available[spec.name]:
            row[spec.name] = FEATURES[spec.name](m)
        else:
            row[spec.name] = False if spec.dtype == "bool" else None
    return row


def features_frame(
    learners: Sequence[tuple[Customer, LearnerEvents]],
    as_of: date,
    availability: TypeAvailability,
) -> pd.DataFrame:
    """The feature frame of ``learners`` at ``as_of``: what ``build_features`` returns for them.

    Returns:
        customer_id, as_of (naive datetime64[us] at midnight), then the catalog features in
        catalog order with the dtypes of ``features.windows.feature_dtypes()``; one row per
        learner, in the order given.
    """
    catalog, dtypes = _plan()
    rows = [learner_features(events, who, as_of, availability) for who, events in learners]
    day = np.datetime64(pd.Timestamp(as_of).date(), "us")
    columns: dict[str, Any] = {
        "customer_id": pd.array([who.customer_id for who, _ in learners], dtype="str"),
        "as_of": np.full(len(learners), day, dtype="datetime64[us]"),
    }
    for name in catalog.names:
        columns[name] = _column([row[name] for row in rows], dtypes[name])
    # arrays of the final dtypes, not Series: a Series per column costs ~0.1 ms each
    return pd.DataFrame(columns, copy=False)


def _column(values: list[Any], dtype: str) -> Any:
    """``values`` (None for null) as an array of ``dtype``."""
    if dtype == "float64":
        return np.array([np.nan if value is None else value for value in values], dtype="float64")
    if dtype == "Int64":
        missing = np.array([value is None for value in values], dtype=bool)
        numbers = np.array([0 if value is None else value for value in values], dtype="int64")
        return pd.arrays.IntegerArray(numbers, missing)
    if dtype in ("int64", "bool"):
        return np.array(values, dtype=dtype)
    return pd.array(values, dtype=dtype)


__all__ = [
    "FEATURES",
    "Measures",
    "features_frame",
    "learner_features",
    "measures",
]
