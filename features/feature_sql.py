"""The feature expressions of the window features (DESIGN §4) and the catalog-driven SELECTs.

``FEATURE_SQL`` says, once, what each catalog feature is in SQL over the measures that
``features.window_sql`` builds (its ``_SEQUENCE`` query's columns); ``_feature_select`` wraps
them in the final SELECT, each masked by the catalog's availability rule (``needs`` /
``needs_duration``) over the flags of ``_availability_sql``. Text only, like
``features.window_sql``: DuckDB runs it, and Spark runs it transpiled (``features.spark``).
"""

from __future__ import annotations

from features.catalog import FeatureCatalog, FeatureSpec
from features.window_sql import DAY_US, RISK_COUNT, WINDOW_DAYS, _sql_literal


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


# --- the catalog-driven SELECTs -------------------------------------------------------------------


def _availability_flags(catalog: FeatureCatalog) -> dict[str, tuple[str | None, bool]]:
    """The flags the catalog's availability rules read (``_available_condition``), by name:
    (the event type, None for any type; whether it must carry a duration)."""
    flags: dict[str, tuple[str | None, bool]] = {}
    for spec in catalog.features:
        for event_type in spec.needs:
            flags[f"seen_{event_type}"] = (event_type, False)
        if spec.needs_duration:
            for event_type in spec.needs or (None,):
                flags[f"timed_{event_type or 'any'}"] = (event_type, True)
    return dict(sorted(flags.items()))


def _availability_sql(catalog: FeatureCatalog, dates: str, type_firsts: str) -> str:
    """Per as_of, whether each needed type (and a timed event of it) appeared before it."""
    flags = []
    for name, (event_type, timed) in _availability_flags(catalog).items():
        first = f"f.{'first_timed_ts' if timed else 'first_ts'} < d.as_of"
        seen = (
            first
            if event_type is None
            else f"f.event_type = {_sql_literal(event_type)} AND {first}"
        )
        flags.append(f"coalesce(bool_or({seen}), FALSE) AS {name}")
    return (
        f"SELECT d.as_of, {', '.join(flags)} FROM {dates} AS d "
        f"LEFT JOIN {type_firsts} AS f ON TRUE GROUP BY d.as_of"
    )


def _all_available_sql(catalog: FeatureCatalog, dates: str) -> str:
    """``_availability_sql``'s table when every flag holds at every as_of."""
    flags = ", ".join(f"TRUE AS {name}" for name in _availability_flags(catalog))
    return f"SELECT as_of, {flags} FROM {dates}"


def _all_flags_hold(catalog: FeatureCatalog, kinds: set[tuple[str, bool]]) -> bool:
    """Whether events of the (event type, has a duration) ``kinds`` set every flag."""
    timed_types = {event_type for event_type, timed in kinds if timed}
    seen_types = {event_type for event_type, _ in kinds}
    return all(
        (event_type in timed_types if event_type else bool(timed_types))
        if timed
        else event_type in seen_types
        for event_type, timed in _availability_flags(catalog).values()
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


def _feature_select(catalog: FeatureCatalog, measures: str, *, ordered: bool = True) -> str:
    """The final SELECT: each catalog feature, masked by its availability, in catalog order.

    Its rows come in ``row_id`` order, or in any order when not ``ordered`` (the caller orders
    them).
    """
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
        f"FROM m) SELECT row_id, customer_id, as_of, {output} FROM f"
        + (" ORDER BY row_id" if ordered else "")
    )


__all__ = ["FEATURE_SQL"]
