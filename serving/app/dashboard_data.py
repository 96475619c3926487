"""The dashboard's figures, computed from the store's frames: pure functions, frames in, frames out.

Every aggregation runs in DuckDB over the frames (a million learners' audit log is a few million
rows: a Python loop over learners, or a pandas pass per batch day, would cost seconds). Time is
passed in: the filters' date range and the batch days decide what is counted, never the clock.

- ``learners_of``: the learners a filter selects (tier, enrolment cohort, tag at the range's end).
- ``tag_series``: learners per status tag at the end of each batch day (the report's
  ``tag_history``, computed as +1/-1 at each transition and a running sum, not a pass per day).
- ``value_by_tier_tag``: revenue at risk and projected lifetime value by tier and tag.
- ``call_rows``: the day's call list (``serving.core.calllist``), searched and sorted.
- ``kpi_trend``: the six KPIs on each batch day (``compute_kpis_on_days``: the frames checked and
  the qualifying runs found once, then one pass per day, not per learner).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from features.machine import usable_cores
from features.vocabulary import PRODUCT_TAGS
from serving.app.kpi_days import KpiHistory, kpi_history, kpis_on_days
from serving.app.kpi_inputs import KpiInputs
from serving.app.kpis import LABEL_HORIZON_DAYS
from serving.core.calllist import CALL_LIST_ORDER, URGENT_PRIORITIES
from serving.core.tags import STATUS_TAGS

COHORT = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
BEHAVIOUR = re.compile(r"^BT_\d{3}$")
SORTS: dict[str, tuple[list[str], list[bool]]] = {
    "priority": CALL_LIST_ORDER,
    "value_at_risk": (["value_at_risk", "customer_id"], [False, True]),
    "p_churn": (["p_churn", "customer_id"], [False, True]),
}
"""How the call list can be sorted: column order and directions (ties broken by id)."""
LEARNER_COLUMNS = ["customer_id", "product_tag", "cohort", "tag"]


class DashboardFilters(BaseModel):
    """What a lead narrowed the dashboard to; every field optional (None: everyone).

    Attributes:
        tier: a product tag (PT_001..PT_003).
        cohort: an enrolment month, ``YYYY-MM``.
        tag: a status tag (ST_001..ST_006): learners in it at the end of the date range.
        behaviour: a behaviour tag (BT_xxx): learners holding it on the latest batch day (the
            pages refuse one no learner holds, naming those that are).
        start: the first batch day shown; ``end`` the last.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: str | None = None
    cohort: str | None = None
    tag: str | None = None
    behaviour: str | None = None
    start: date | None = None
    end: date | None = None

    @field_validator("tier", "cohort", "tag", "behaviour", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, value: str | None) -> str | None:
        if value is not None and value not in PRODUCT_TAGS:
            raise ValueError(f"unknown tier {value!r}: one of {', '.join(PRODUCT_TAGS)}")
        return value

    @field_validator("tag")
    @classmethod
    def _known_tag(cls, value: str | None) -> str | None:
        if value is not None and value not in STATUS_TAGS:
            raise ValueError(f"unknown status tag {value!r}: one of {', '.join(STATUS_TAGS)}")
        return value

    @field_validator("behaviour")
    @classmethod
    def _behaviour_id(cls, value: str | None) -> str | None:
        if value is not None and not BEHAVIOUR.match(value):
            raise ValueError(f"behaviour tag {value!r} is not a BT_xxx id")
        return value

    @field_validator("cohort")
    @classmethod
    def _month(cls, value: str | None) -> str | None:
        if value is not None and not COHORT.match(value):
            raise ValueError(f"cohort {value!r} is not an enrolment month YYYY-MM")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DashboardFilters:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"date range starts ({self.start}) after it ends ({self.end})")
        return self

    @property
    def narrows_learners(self) -> bool:
        """Whether the filters select some learners rather than everyone."""
        chosen = (self.tier, self.cohort, self.tag, self.behaviour)
        return any(value is not None for value in chosen)


def query_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for a dashboard query, on the cores the process may use (DuckDB's
    own count is the host's CPUs, a container's quota aside)."""
    return duckdb.connect(config={"threads": usable_cores()})


def days_in_range(days: Sequence[date], filters: DashboardFilters) -> list[date]:
    """The batch days inside the filters' date range, oldest first."""
    return sorted(
        day
        for day in days
        if (filters.start is None or day >= filters.start)
        and (filters.end is None or day <= filters.end)
    )


def latest_tags(transitions: pd.DataFrame, until: date) -> pd.DataFrame:
    """Each learner's tag at the end of ``until`` (their last transition on or before it)."""
    con = query_connection()
    con.register("log", transitions[["id", "customer_id", "as_of", "to_tag"]])
    return con.execute(
        "SELECT customer_id, arg_max(to_tag, id) AS tag FROM log "
        "WHERE as_of <= ? GROUP BY customer_id",
        [pd.Timestamp(until)],
    ).df()


def learners_of(
    customers: pd.DataFrame, tags: pd.DataFrame, filters: DashboardFilters
) -> pd.DataFrame:
    """The learners the filters select, with tier, cohort and tag (``LEARNER_COLUMNS``).

    Args:
        customers: the customers contract (``customer_id``, ``product_tag``, ``enrolled_at``).
        tags: ``latest_tags`` at the range's end; a learner without one has tag None.
        filters: the lead's filters.
    """
    enrolled = pd.to_datetime(customers["enrolled_at"], utc=True).dt.tz_localize(None)
    frame = pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype(str).to_numpy(),
            "product_tag": customers["product_tag"].astype(str).to_numpy(),
            "enrolled": enrolled.to_numpy(),
        }
    )
    con = query_connection()
    con.register("customers", frame)
    con.register("tags", tags)
    where, params = [], []
    for column, value in (("product_tag", filters.tier), ("cohort", filters.cohort)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.tag is not None:
        where.append("tag = ?")
        params.append(filters.tag)
    sql = (
        "SELECT * FROM (SELECT c.customer_id, c.product_tag, strftime(c.enrolled, '%Y-%m') "
        "AS cohort, t.tag FROM customers c LEFT JOIN tags t USING (customer_id))"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    return con.execute(sql, params).df()[LEARNER_COLUMNS]


def narrow_learners(learners: pd.DataFrame, filters: DashboardFilters) -> pd.DataFrame:
    """The rows of ``learners_of`` everyone (no filter) that ``filters`` select: what
    ``learners_of`` with those filters gives, without joining the customers again.

    Args:
        learners: ``learners_of(customers, tags, DashboardFilters())``.
        filters: the lead's filters (tier, cohort and tag narrow; the dates do not).
    """
    return learners[narrowing(learners, filters)].reset_index(drop=True)


def narrowing(learners: pd.DataFrame, filters: DashboardFilters) -> np.ndarray:
    """Whether ``filters``' tier, cohort and tag select each row of ``learners`` (a boolean
    per row): ``narrow_learners``' mask, which a caller may combine with others."""
    keep = np.ones(len(learners), dtype=bool)
    wanted = {"product_tag": filters.tier, "cohort": filters.cohort, "tag": filters.tag}
    for column, value in wanted.items():
        if value is not None:
            keep &= (learners[column] == value).to_numpy(dtype=bool, na_value=False)
    return keep


def tag_spans(transitions: pd.DataFrame) -> pa.Table:
    """Each transition's tag, the day it opens and the day the learner's next transition closes
    it (null: still held), as Arrow (no Python string per row).

    Finding the closing day sorts every learner's log (a window): ~0.2 s at 300k learners. The
    dashboard finds it once per stored history, and a filter's ``tag_series`` only narrows it.

    Args:
        transitions: the audit log (``id``, ``customer_id``, ``as_of``, ``to_tag``).
    """
    con = query_connection()
    con.register("log", transitions[["id", "customer_id", "as_of", "to_tag"]])
    return con.sql(
        "SELECT customer_id, to_tag AS tag, as_of AS opened, "
        "lead(as_of) OVER (PARTITION BY customer_id ORDER BY id) AS closed FROM log"
    ).to_arrow_table()


def tag_series(
    transitions: pd.DataFrame,
    learners: pd.DataFrame | None,
    days: Sequence[date],
    spans: pa.Table | None = None,
) -> pd.DataFrame:
    """Learners per status tag at the end of each of ``days`` (one column per tag).

    Each transition opens its tag on its day and closes it on the learner's next transition's
    day; the count on a day is the running sum of openings minus closings up to it.

    Args:
        transitions: the audit log (``id``, ``customer_id``, ``as_of``, ``to_tag``).
        learners: only these learners' (``customer_id``); None for everyone.
        days: the batch days to count on.
        spans: ``tag_spans(transitions)`` when already found; None finds it here.
    """
    columns = ["day", *STATUS_TAGS]
    if not days:
        return pd.DataFrame(columns=columns)
    con = query_connection()
    con.register("spans", tag_spans(transitions) if spans is None else spans)
    source = "spans"
    if learners is not None:
        con.register("chosen", learners[["customer_id"]])
        source = "(SELECT * FROM spans SEMI JOIN chosen USING (customer_id))"
    deltas = con.execute(
        f"""
        SELECT day, tag, sum(change)::BIGINT AS change FROM (
            SELECT opened AS day, tag, 1 AS change FROM {source}
            UNION ALL
            SELECT closed AS day, tag, -1 AS change FROM {source} WHERE closed IS NOT NULL
        ) GROUP BY day, tag
        """
    ).df()
    wide = deltas.pivot_table(index="day", columns="tag", values="change", aggfunc="sum")
    wide = wide.reindex(columns=list(STATUS_TAGS)).fillna(0).sort_index().cumsum()
    wanted = pd.DatetimeIndex([pd.Timestamp(day) for day in sorted(days)])
    counts = wide.reindex(wide.index.union(wanted)).ffill().reindex(wanted).fillna(0)
    counts = counts.astype("int64").rename_axis("day").reset_index()
    return counts[columns]


def value_by_tier_tag(scores: pd.DataFrame, learners: pd.DataFrame) -> pd.DataFrame:
    """Revenue at risk and projected lifetime value of a day's scores, by tier and tag.

    Args:
        scores: one day's stored scores (``customer_id``, ``value_at_risk``,
            ``projected_value``).
        learners: ``learners_of``: the selected learners with tier and tag.

    Returns:
        ``product_tag``, ``tag``, ``learners``, ``value_at_risk``, ``projected_value`` (sums;
        a learner without a value counts as a learner, not as 0 value), largest risk first.
    """
    scored = with_learner(scores[["customer_id", "value_at_risk", "projected_value"]], learners)
    return value_of_rows(scored)


def value_of_rows(scored: pa.Table) -> pd.DataFrame:
    """``value_by_tier_tag`` of a day's scores already joined to their learners
    (``with_learner``), e.g. narrowed by a filter (``rows_of``)."""
    con = query_connection()
    con.register("scored", scored)
    return con.execute(
        """
        SELECT learner_tier AS product_tag, coalesce(learner_tag, 'untagged') AS tag,
               count(*) AS learners,
               coalesce(sum(value_at_risk), 0) AS value_at_risk,
               coalesce(sum(projected_value), 0) AS projected_value
        FROM scored GROUP BY ALL ORDER BY value_at_risk DESC, product_tag, tag
        """
    ).df()


LEARNER_OF_ROW = {"learner_tier": "product_tag", "learner_cohort": "cohort", "learner_tag": "tag"}
"""The columns ``with_learner`` adds to a row: its learner's ``LEARNER_COLUMNS``."""


def with_learner(rows: pa.Table | pd.DataFrame, learners: pd.DataFrame) -> pa.Table:
    """The ``rows`` (with a ``customer_id``) of ``learners``, each with its learner's tier,
    cohort and tag (``LEARNER_OF_ROW``), as Arrow.

    Joining a million learners' rows costs ~0.2-0.3 s; joined once to everyone
    (``learners_of`` with no filter), a filter then only masks them (``rows_of``): what joining
    the filter's learners gives, for tens of milliseconds.
    """
    con = query_connection()
    con.register("source", rows)
    con.register("learners", learners[["customer_id", *LEARNER_OF_ROW.values()]])
    added = ", ".join(f"l.{column} AS {name}" for name, column in LEARNER_OF_ROW.items())
    return con.sql(
        f"SELECT s.*, {added} FROM source s JOIN learners l USING (customer_id)"
    ).to_arrow_table()


def rows_of(rows: pa.Table, filters: DashboardFilters) -> pa.Table:
    """The rows of ``with_learner`` whose learner the tier, cohort and tag filters select (as
    ``narrow_learners`` selects learners: a learner without a tag has none of the tags)."""
    wanted = {"learner_tier": filters.tier, "learner_cohort": filters.cohort}
    wanted["learner_tag"] = filters.tag
    keep = None
    for column, value in wanted.items():
        if value is not None:
            hit = pc.fill_null(pc.equal(rows[column], value), False)
            keep = hit if keep is None else pc.and_(keep, hit)
    return rows if keep is None else rows.filter(keep)


def call_rows(
    scores: pd.DataFrame,
    learners: pd.DataFrame | None,
    *,
    search: str | None = None,
    sort: Literal["priority", "value_at_risk", "p_churn"] = "priority",
    limit: int = 100,
) -> tuple[pd.DataFrame, int]:
    """The day's call list (urgent, outside the control group), searched and sorted.

    Args:
        scores: one day's stored scores.
        learners: only these learners (``learners_of``); None for everyone.
        search: a piece of a learner id (case-insensitive); None or blank for all.
        sort: ``SORTS``' key.
        limit: how many rows to return.

    Returns:
        The first ``limit`` rows and how many matched in all.
    """
    columns, ascending = SORTS[sort]
    order = ", ".join(
        f"{column} {'ASC' if up else 'DESC'} NULLS LAST"
        for column, up in zip(columns, ascending, strict=True)
    )
    con = query_connection()
    con.register("scores", scores)
    source = "scores"
    if learners is not None:
        con.register("chosen", learners[["customer_id"]])
        source = "(SELECT * FROM scores SEMI JOIN chosen USING (customer_id))"
    where = "priority IN (SELECT unnest(?)) AND NOT control"
    params: list[object] = [list(URGENT_PRIORITIES)]
    if search and search.strip():
        where += " AND contains(lower(customer_id), lower(?))"
        params.append(search.strip())
    matched = con.execute(
        f"SELECT *, count(*) OVER () AS matched FROM {source} WHERE {where} "
        f"ORDER BY {order} LIMIT {int(limit)}",
        params,
    ).df()
    total = int(matched["matched"].iloc[0]) if len(matched) else 0
    return matched.drop(columns="matched"), total


def kpi_trend(
    inputs: KpiInputs,
    customers: pd.DataFrame,
    days: Sequence[date],
    learners: pd.DataFrame | None = None,
    history: KpiHistory | None = None,
    positions: np.ndarray | None = None,
) -> pd.DataFrame:
    """The six KPIs (``serving.app.kpis.compute_kpis_on_days``, the one implementation) on each day.

    Args:
        inputs: the KPIs' inputs loaded up to the last of ``days`` (``load_kpi_inputs``).
        customers: the customers contract.
        days: the batch days to compute them on.
        learners: only these learners' history (``customer_id``); None for everyone.
        history: ``inputs`` and ``customers`` already found as a ``KpiHistory`` reaching the
            last of ``days`` (``DashboardCache.kpi_history``: once per stored history, so that
            a filter only narrows it); None finds it here.
        positions: ``learners`` as positions in ``history.ids`` (``KpiHistory.positions_of``,
            with ``history``): narrowed by a mask, not by their ids; None: by their ids.

    Returns:
        One row per day and KPI: ``day``, ``id``, ``name``, ``value`` (NaN without data),
        ``target``, ``comparison``, ``unit``, and ``treated`` / ``control``: the value split by
        the control group where the KPI is split (``Kpi.treated``/``control``), NaN elsewhere.
    """
    columns = ["day", "id", "name", "value", "target", "comparison", "unit", "treated", "control"]
    floats = {"value": "float64", "treated": "float64", "control": "float64"}
    if not days:
        return pd.DataFrame(columns=columns).astype(floats)
    if history is None:
        history = kpi_history(
            inputs.transitions, inputs.scores, customers, until=max(days),
            outcomes=inputs.outcomes, decisions=inputs.decisions, horizon_days=LABEL_HORIZON_DAYS,
        )  # fmt: skip
    if learners is not None and positions is not None:
        history = history.of_positions(positions)
    elif learners is not None:
        history = history.of_learners(learners["customer_id"].astype(str))
    on_days = kpis_on_days(history, sorted(days))
    rows = [
        {
            "day": pd.Timestamp(day),
            "id": kpi.id,
            "name": kpi.name,
            "value": kpi.value,
            "target": kpi.target,
            "comparison": kpi.comparison,
            "unit": kpi.unit,
            "treated": kpi.treated,
            "control": kpi.control,
        }
        for day, kpis in on_days.items()
        for kpi in kpis
    ]
    return pd.DataFrame(rows, columns=columns).astype(floats)


__all__ = [
    "LEARNER_COLUMNS",
    "LEARNER_OF_ROW",
    "SORTS",
    "DashboardFilters",
    "call_rows",
    "days_in_range",
    "kpi_trend",
    "latest_tags",
    "learners_of",
    "narrow_learners",
    "narrowing",
    "query_connection",
    "rows_of",
    "tag_series",
    "tag_spans",
    "value_by_tier_tag",
    "value_of_rows",
    "with_learner",
]
