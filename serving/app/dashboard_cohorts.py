"""The dashboard's cohort and flow figures: pure DuckDB aggregations over the store's frames.

- ``retention_grid``: enrolment cohort (month) x weeks since enrolment, the share of the cohort's
  known learners still live (not ST_006) at the end of each week, with the tag mix;
  ``week_spans`` / ``grid_of_weeks`` the same in two steps (everyone's weeks found once per
  history, then counted for a filter's learners).
- ``tag_flows`` / ``moves_by_rule``: the moves between tags over a period (the Sankey's links)
  and the same moves by rule, with the rule's description from the audit log's reason.
- ``present_behaviours`` / ``holding_behaviour``: the behaviour tags (BT_xxx) the latest scores
  carry, and the learners holding one; ``behaviours_held`` / ``with_behaviour`` the same over the
  cached frames (the filter's options, and the filter refusing a tag no learner holds).

A learner's tag on a day is their last transition on or before it (the audit log's order, ``id``,
breaks ties within a day). The audit log only knows a learner from their first transition (the
first batch day that saw them): a week ending before it, or after the latest batch day, is unknown
and counted nowhere, never as churned nor as live. Nothing loops over learners or weeks: each
transition becomes the span of weeks it covers, and the counts per week are a running sum of
span openings and closings, as ``dashboard_data.tag_series`` counts days.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pyarrow as pa

from rules.behaviours import SEPARATOR
from serving.app.dashboard import DashboardFrames
from serving.app.dashboard_data import query_connection
from serving.core.tags import CHURNED_TAG, STATUS_TAGS

NEW = "new"
"""The from-tag of an onboarding move (the audit log's null ``from_tag``)."""
MANUAL = "manual"
"""The rule id of a person's move (the audit log's null ``rule_id``)."""
GRID_COLUMNS = ["cohort", "week", "cohort_size", "known", "live", "share_live", *STATUS_TAGS]
FLOW_COLUMNS = ["id", "customer_id", "as_of", "from_tag", "to_tag", "rule_id", "reason"]
WEEK_DAYS = 7
LAST_DAY_OF_WEEK = WEEK_DAYS - 1


def _log(
    transitions: pd.DataFrame, learners: pd.DataFrame | None, columns: list[str]
) -> duckdb.DuckDBPyConnection:
    """A connection with the audit log's ``columns`` registered as ``log``, narrowed to
    ``learners`` (a scan reads every registered column: the long reasons only when asked)."""
    con = query_connection()
    con.register("full_log", transitions[columns])
    if learners is None:
        con.execute("CREATE VIEW log AS SELECT * FROM full_log")
    else:
        con.register("chosen", learners[["customer_id"]])
        con.execute(
            "CREATE VIEW log AS SELECT * FROM full_log SEMI JOIN chosen USING (customer_id)"
        )
    return con


def _weeks_sql(extra: str = "") -> str:
    """Each transition as the weeks since enrolment whose last day it is the learner's tag on
    (``cohort``, ``tag``, weeks ``lo``..``hi``; with the people's ``extra`` columns, e.g. ", row").

    Week ``w`` of a learner enrolled on day ``e`` is the days ``e + 7w .. e + 7w + 6``; a
    transition on day ``a`` holds until the learner's next one (day ``b``), or to the end of the
    latest batch day: it is the tag at the end of week ``w`` when ``a <= e + 7w + 6 < b``.
    """
    return f"""
        WITH spans AS (
            SELECT p.cohort, l.to_tag AS tag{extra},
                   date_diff('day', p.enrolled, l.as_of::DATE) AS opened,
                   date_diff('day', p.enrolled, coalesce(
                       lead(l.as_of::DATE) OVER (PARTITION BY l.customer_id ORDER BY l.id),
                       $latest::DATE + 1)) AS closed
            FROM log l JOIN people p USING (customer_id)
            WHERE l.as_of::DATE <= $latest::DATE
        ), weeks AS (
            SELECT cohort, tag{extra.replace("p.", "")},
                   greatest(0, ceil((opened - {LAST_DAY_OF_WEEK}) / {WEEK_DAYS}.0))::BIGINT AS lo,
                   (ceil((closed - {LAST_DAY_OF_WEEK}) / {WEEK_DAYS}.0) - 1)::BIGINT AS hi
            FROM spans
        )
        SELECT * FROM weeks WHERE lo <= hi
    """


_CHANGES_SQL = """
    SELECT cohort, tag, week, sum(change)::BIGINT AS change FROM (
        SELECT cohort, tag, lo AS week, 1 AS change FROM weeks
        UNION ALL
        SELECT cohort, tag, hi + 1 AS week, -1 AS change FROM weeks
    ) GROUP BY ALL
"""
"""The weeks' openings and closings per cohort, tag and week (a running sum counts them)."""


def retention_grid(
    transitions: pd.DataFrame,
    customers: pd.DataFrame,
    latest_day: date,
    learners: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per enrolment cohort and week since enrolment, the share of known learners still live.

    Args:
        transitions: the audit log (``id``, ``customer_id``, ``as_of``, ``from_tag``, ``to_tag``,
            ``rule_id``, ``reason``).
        customers: the customers contract (``customer_id``, ``enrolled_at``).
        latest_day: the latest batch day: weeks ending after it are unknown.
        learners: only these learners (``customer_id``); None for everyone.

    Returns:
        ``GRID_COLUMNS``, one row per cohort and week from 0 to the last week known for any
        cohort, oldest cohort first: ``cohort_size`` the cohort's (selected) learners,
        ``known`` those whose tag at the week's end is known, ``live`` those of them not in
        ST_006, ``share_live`` = live / known (NaN when none is known: a blank cell, not 0) and
        one count per status tag.
    """
    con = _people_log(transitions, customers, learners)
    con.execute(f"CREATE TABLE weeks AS {_weeks_sql()}", {"latest": pd.Timestamp(latest_day)})
    con.execute(f"CREATE TABLE changes AS {_CHANGES_SQL}")
    return _widen(con.execute(_GRID_SQL).df())


def _people_log(
    transitions: pd.DataFrame, customers: pd.DataFrame, learners: pd.DataFrame | None
) -> duckdb.DuckDBPyConnection:
    """``_log`` with the (chosen) customers' enrolment day and cohort as ``people``."""
    con = _log(transitions, learners, ["id", "customer_id", "as_of", "to_tag"])
    enrolled = pd.to_datetime(customers["enrolled_at"], utc=True).dt.tz_localize(None)
    # The ids stay in their column's (Arrow) strings: a numpy copy costs a Python str each.
    people = pd.DataFrame({"customer_id": customers["customer_id"], "enrolled": enrolled})
    con.register("all_people", people)
    chosen = "SEMI JOIN chosen USING (customer_id)" if learners is not None else ""
    con.execute(
        "CREATE TABLE people AS SELECT customer_id::VARCHAR AS customer_id, "
        "enrolled::DATE AS enrolled, "
        f"strftime(enrolled, '%Y-%m') AS cohort FROM all_people {chosen}"
    )
    return con


def week_spans(
    transitions: pd.DataFrame, customers: pd.DataFrame, latest_day: date, learners: pd.DataFrame
) -> pa.Table:
    """Every transition as the weeks it is its learner's tag at the end of (``retention_grid``
    before it counts them), with the learner's ``row`` in ``learners`` (all the customers').

    Found once per history: the grid of some learners is then their rows' (``grid_of_weeks``),
    without the window over the whole log each filter ran again (~0.6 s at a million).
    """
    con = _people_log(transitions, customers, None)
    rows = pd.DataFrame({"customer_id": learners["customer_id"], "row": range(len(learners))})
    con.register("rows", rows)
    con.execute("CREATE TABLE numbered AS SELECT * FROM people JOIN rows USING (customer_id)")
    con.execute("DROP TABLE people")
    con.execute("ALTER TABLE numbered RENAME TO people")
    latest = {"latest": pd.Timestamp(latest_day)}
    return con.sql(_weeks_sql(", p.row"), params=latest).to_arrow_table()


def grid_of_weeks(weeks: pa.Table, cohorts: pd.Series) -> pd.DataFrame:
    """``retention_grid`` of the learners whose ``week_spans`` rows are ``weeks`` and whose
    enrolment months are ``cohorts`` (one per learner)."""
    con = query_connection()
    con.register("weeks", weeks)
    con.register("people", pd.DataFrame({"cohort": cohorts.to_numpy(dtype=object)}))
    con.execute(f"CREATE TABLE changes AS {_CHANGES_SQL}")
    return _widen(con.execute(_GRID_SQL).df())


_GRID_SQL = f"""
    WITH sizes AS (SELECT cohort, count(*) AS cohort_size FROM people GROUP BY cohort),
    span AS (SELECT coalesce(max(week) - 1, -1) AS last_week FROM changes),
    cells AS (
        SELECT s.cohort, s.cohort_size, w.range AS week, t.tag
        FROM sizes s, span, range(0, span.last_week + 1) w,
             (SELECT unnest({list(STATUS_TAGS)!r}) AS tag) t
    )
    SELECT c.cohort, c.week, c.cohort_size, c.tag,
           sum(coalesce(ch.change, 0)) OVER (
               PARTITION BY c.cohort, c.tag ORDER BY c.week
           )::BIGINT AS learners
    FROM cells c LEFT JOIN changes ch USING (cohort, tag, week)
"""


def _widen(counts: pd.DataFrame) -> pd.DataFrame:
    """The grid's long counts (cohort, week, tag) as one row per cell with a column per tag."""
    if counts.empty:
        return pd.DataFrame(columns=GRID_COLUMNS)
    wide = counts.pivot_table(
        index=["cohort", "week", "cohort_size"], columns="tag", values="learners", aggfunc="sum"
    )
    wide = wide.reindex(columns=list(STATUS_TAGS)).fillna(0).astype("int64").reset_index()
    wide["known"] = wide[list(STATUS_TAGS)].sum(axis=1)
    wide["live"] = wide["known"] - wide[CHURNED_TAG]
    wide["share_live"] = (wide["live"] / wide["known"].where(wide["known"] > 0)).astype(float)
    wide = wide.sort_values(["cohort", "week"], ignore_index=True)
    return wide.astype({"week": "int64", "cohort_size": "int64"})[GRID_COLUMNS]


def _period(con: duckdb.DuckDBPyConnection, start: date, end: date, rule: str | None) -> str:
    """The log's moves inside ``start..end`` (of ``rule`` when given) as a view ``moves``."""
    where = "as_of::DATE BETWEEN $start::DATE AND $end::DATE"
    if rule is not None:
        where += " AND coalesce(rule_id, $manual) = $rule"
    con.execute(
        f"CREATE TABLE moves AS SELECT coalesce(from_tag, $new) AS from_tag, to_tag, "
        f"coalesce(rule_id, $manual) AS rule_id, reason FROM log WHERE {where}",
        {
            "start": pd.Timestamp(start), "end": pd.Timestamp(end), "new": NEW,
            "manual": MANUAL, **({"rule": rule} if rule is not None else {}),
        },
    )  # fmt: skip
    return "moves"


def tag_flows(
    transitions: pd.DataFrame,
    start: date,
    end: date,
    *,
    rule: str | None = None,
    learners: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The moves between tags on the batch days ``start..end`` (both included).

    Args:
        transitions: the audit log.
        start: the period's first day; ``end`` its last.
        rule: only this rule's moves (``MANUAL`` for a person's); None for every move.
        learners: only these learners' moves (``customer_id``); None for everyone.

    Returns:
        ``from_tag`` (``NEW`` for an onboarding), ``to_tag``, ``moves``: most moves first.
    """
    con = _log(transitions, learners, FLOW_COLUMNS)
    _period(con, start, end, rule)
    return con.execute(
        "SELECT from_tag, to_tag, count(*) AS moves FROM moves GROUP BY ALL "
        "ORDER BY moves DESC, from_tag, to_tag"
    ).df()


def moves_by_rule(
    transitions: pd.DataFrame,
    start: date,
    end: date,
    *,
    rule: str | None = None,
    learners: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The moves on ``start..end`` by rule: ``rule_id``, ``description``, ``moves``.

    The description is the rule's reason as the audit log recorded it (the most frequent one,
    should a rule's text have changed over the period); a person's moves are ``MANUAL``, their
    description the most frequent reason given. Most moves first.
    """
    con = _log(transitions, learners, FLOW_COLUMNS)
    _period(con, start, end, rule)
    return con.execute(
        "SELECT rule_id, mode(reason) AS description, count(*) AS moves FROM moves "
        "GROUP BY rule_id ORDER BY moves DESC, rule_id"
    ).df()


def known_rules(transitions: pd.DataFrame, rule_ids: list[str]) -> list[str]:
    """The rule ids a flow can be narrowed to: the rules' and any in the log, and ``MANUAL``."""
    logged = transitions["rule_id"].dropna().astype(str).unique().tolist()
    return [*sorted(set(rule_ids) | set(logged)), MANUAL]


def present_behaviours(scores: pd.DataFrame) -> list[str]:
    """The behaviour tags some learner holds in ``scores`` (their ``behaviour_tags``), sorted."""
    if "behaviour_tags" not in scores:
        return []
    # The column has few distinct values (combinations of eight tags): split those, not 1M rows.
    distinct = scores["behaviour_tags"].dropna().astype(str).unique()
    return sorted({tag for text in distinct for tag in text.split(SEPARATOR) if tag})


def holding_behaviour(learners: pd.DataFrame, scores: pd.DataFrame, behaviour: str) -> pd.DataFrame:
    """The rows of ``learners`` whose score in ``scores`` holds ``behaviour`` (BT_xxx)."""
    con = query_connection()
    con.register("learners", learners)
    con.register("scores", scores[["customer_id", "behaviour_tags"]])
    return con.execute(
        "SELECT * FROM learners SEMI JOIN (SELECT customer_id FROM scores "
        "WHERE list_contains(string_split(behaviour_tags, ?), ?)) USING (customer_id)",
        [SEPARATOR, behaviour],
    ).df()[list(learners.columns)]


def with_behaviour(
    frames: DashboardFrames, learners: pd.DataFrame, behaviour: str | None
) -> pd.DataFrame:
    """``learners`` narrowed to those holding ``behaviour`` on the latest batch day.

    Raises:
        ValueError: no learner holds ``behaviour`` (naming the tags held).
    """
    if behaviour is None:
        return learners
    check_held(frames, behaviour)
    return holding_behaviour(learners, frames.latest_scores, behaviour)


def check_held(frames: DashboardFrames, behaviour: str) -> None:
    """Refuse a behaviour tag the latest scores do not carry.

    Raises:
        ValueError: no learner holds ``behaviour`` (naming the tags held).
    """
    held = behaviours_held(frames)
    if behaviour not in held:
        raise ValueError(
            f"behaviour tag {behaviour!r} is held by no learner on {frames.latest_day}: "
            f"one of {', '.join(held) or 'none'}"
        )


def behaviours_held(frames: DashboardFrames) -> list[str]:
    """The behaviour tags the latest scores carry (the filter's options), read once per history."""
    return frames.remembered(("behaviours-held",), lambda: present_behaviours(frames.latest_scores))


__all__ = [
    "GRID_COLUMNS",
    "MANUAL",
    "NEW",
    "behaviours_held",
    "check_held",
    "grid_of_weeks",
    "holding_behaviour",
    "known_rules",
    "moves_by_rule",
    "present_behaviours",
    "retention_grid",
    "tag_flows",
    "week_spans",
    "with_behaviour",
]
