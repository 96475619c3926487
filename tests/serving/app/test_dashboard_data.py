"""The dashboard's aggregations on tiny frames whose answers can be counted by hand."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from pydantic import ValidationError

from serving.app.dashboard_data import (
    DashboardFilters,
    call_rows,
    days_in_range,
    latest_tags,
    learners_of,
    narrow_learners,
    rows_of,
    tag_series,
    tag_spans,
    value_by_tier_tag,
    value_of_rows,
    with_learner,
)

D1, D2, D3 = date(2026, 5, 1), date(2026, 5, 2), date(2026, 5, 3)


def _log(rows: list[tuple[str, date, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": range(1, len(rows) + 1),
            "customer_id": [row[0] for row in rows],
            "as_of": pd.to_datetime([row[1] for row in rows]),
            "to_tag": [row[2] for row in rows],
        }
    )


LOG = _log(
    [
        ("a", D1, "ST_001"),
        ("b", D1, "ST_001"),
        ("a", D2, "ST_004"),
        ("c", D2, "ST_001"),
        ("c", D2, "ST_002"),  # two moves on one day: the day ends in the second
        ("b", D3, "ST_006"),
    ]
)
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "product_tag": ["PT_001", "PT_003", "PT_001", "PT_002"],
        "enrolled_at": pd.to_datetime(
            ["2026-03-05", "2026-04-01", "2026-04-20", "2026-04-30"], utc=True
        ),
    }
)


def test_tag_series_counts_each_learners_last_tag_at_the_end_of_each_day():
    # given the log above, when counted on the three days
    series = tag_series(LOG, None, [D3, D1, D2]).set_index("day")
    # then each day counts each learner once, in their last tag of the day
    assert series.loc[pd.Timestamp(D1), ["ST_001", "ST_004"]].tolist() == [2, 0]
    assert series.loc[pd.Timestamp(D2)].to_dict() == {
        "ST_001": 1, "ST_002": 1, "ST_003": 0, "ST_004": 1, "ST_005": 0, "ST_006": 0,
    }  # fmt: skip
    assert series.loc[pd.Timestamp(D3), ["ST_001", "ST_006"]].tolist() == [0, 1]
    assert (series.sum(axis=1) == [2, 3, 3]).all()


def test_tag_series_of_chosen_learners_and_of_a_day_before_the_log():
    chosen = pd.DataFrame({"customer_id": ["a"]})
    series = tag_series(LOG, chosen, [date(2026, 4, 30), D2]).set_index("day")
    assert series.loc[pd.Timestamp(date(2026, 4, 30))].sum() == 0
    assert series.loc[pd.Timestamp(D2)].to_dict()["ST_004"] == 1
    assert series.loc[pd.Timestamp(D2)].sum() == 1


def test_tag_spans_close_each_tag_on_the_learners_next_move_and_narrow_to_the_same_series():
    # Given the log's spans found once
    spans = tag_spans(LOG).to_pandas().sort_values(["customer_id", "opened"], kind="stable")
    # Then each tag is closed on the learner's next move's day, the last one left open
    a_and_b = spans[spans["customer_id"].isin(["a", "b"])]
    assert a_and_b["tag"].tolist() == ["ST_001", "ST_004", "ST_001", "ST_006"]
    assert a_and_b["closed"].tolist()[0] == pd.Timestamp(D2)
    assert a_and_b["closed"].isna().tolist() == [False, True, False, True]
    # and a series of them, everyone's or some learners', is the series found from the log
    chosen = [None, pd.DataFrame({"customer_id": ["a"]}), pd.DataFrame({"customer_id": ["b", "c"]})]
    for learners in chosen:
        again = tag_series(LOG, learners, [D1, D2, D3], tag_spans(LOG))
        assert again.equals(tag_series(LOG, learners, [D1, D2, D3]))
    narrowed = tag_series(LOG, chosen[2], [D3], tag_spans(LOG)).set_index("day")
    assert narrowed.loc[pd.Timestamp(D3)].to_dict()["ST_006"] == 1
    assert narrowed.loc[pd.Timestamp(D3)].sum() == 2


def test_learners_of_filters_by_tier_cohort_and_tag_at_the_ranges_end():
    tags = latest_tags(LOG, D2)
    assert dict(zip(tags["customer_id"], tags["tag"], strict=True)) == {
        "a": "ST_004", "b": "ST_001", "c": "ST_002",
    }  # fmt: skip
    everyone = learners_of(CUSTOMERS, tags, DashboardFilters())
    assert len(everyone) == 4 and pd.isna(everyone.set_index("customer_id").loc["d", "tag"])
    pro = learners_of(CUSTOMERS, tags, DashboardFilters(tier="PT_001"))
    assert sorted(pro["customer_id"]) == ["a", "c"]
    april_pro = learners_of(CUSTOMERS, tags, DashboardFilters(tier="PT_001", cohort="2026-04"))
    assert april_pro["customer_id"].tolist() == ["c"]
    risk = learners_of(CUSTOMERS, tags, DashboardFilters(tag="ST_004"))
    assert risk["customer_id"].tolist() == ["a"]


def test_narrowing_everyone_selects_what_learners_of_the_filters_selects():
    # Given everyone's tier, cohort and tag at D2 (d has no tag: no transition)
    tags = latest_tags(LOG, D2)
    everyone = learners_of(CUSTOMERS, tags, DashboardFilters())
    # When each filter narrows everyone / Then the rows are those learners_of selects
    filters = [
        DashboardFilters(tier="PT_001"), DashboardFilters(tier="PT_001", cohort="2026-04"),
        DashboardFilters(tag="ST_004"), DashboardFilters(cohort="2026-04", tag="ST_001"),
        DashboardFilters(),
    ]  # fmt: skip
    for chosen in filters:
        narrowed = narrow_learners(everyone, chosen).sort_values("customer_id")
        expected = learners_of(CUSTOMERS, tags, chosen).sort_values("customer_id")
        # (d's missing tag is NaN in one frame and None in the other: both are "no tag")
        assert narrowed.fillna("-").to_dict("records") == expected.fillna("-").to_dict("records")
    assert narrow_learners(everyone, DashboardFilters(tier="PT_001"))["customer_id"].tolist() in (
        ["a", "c"], ["c", "a"],
    )  # fmt: skip
    assert narrow_learners(everyone, DashboardFilters(tag="ST_006")).empty


def test_filters_refuse_what_they_cannot_mean_naming_it():
    with pytest.raises(ValidationError, match="PT_009"):
        DashboardFilters(tier="PT_009")
    with pytest.raises(ValidationError, match="2026-13"):
        DashboardFilters(cohort="2026-13")
    with pytest.raises(ValidationError, match="ST_100"):
        DashboardFilters(tag="ST_100")
    with pytest.raises(ValidationError, match="starts"):
        DashboardFilters(start=D3, end=D1)
    assert DashboardFilters(tier=" ", tag="").narrows_learners is False
    assert days_in_range([D3, D1, D2], DashboardFilters(start=D2)) == [D2, D3]


SCORES = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d", "e"],
        "priority": ["P1", "P2", "P1", "P3", "P1"],
        "action": ["call"] * 5,
        "control": [False, False, False, False, True],
        "p_churn": [0.9, 0.5, 0.7, 0.2, 0.95],
        "value_at_risk": [10.0, 50.0, 30.0, 5.0, 99.0],
        "projected_value": [100.0, 200.0, None, 40.0, 300.0],
    }
)


def test_call_rows_keep_urgent_treated_learners_in_the_asked_order():
    rows, matched = call_rows(SCORES, None)
    assert matched == 3  # d is P3, e is in the control group
    assert rows["customer_id"].tolist() == ["c", "a", "b"]  # P1 by value at risk, then P2
    by_p = call_rows(SCORES, None, sort="p_churn")[0]["customer_id"].tolist()
    assert by_p == ["a", "c", "b"]
    by_value = call_rows(SCORES, None, sort="value_at_risk", limit=1)
    assert by_value[0]["customer_id"].tolist() == ["b"] and by_value[1] == 3
    found, count = call_rows(SCORES, None, search=" B ")
    assert found["customer_id"].tolist() == ["b"] and count == 1
    chosen = pd.DataFrame({"customer_id": ["a", "d"]})
    assert call_rows(SCORES, chosen)[0]["customer_id"].tolist() == ["a"]


def test_value_by_tier_tag_sums_the_selected_learners_values():
    learners = learners_of(CUSTOMERS, latest_tags(LOG, D2), DashboardFilters())
    values = value_by_tier_tag(SCORES, learners).set_index(["product_tag", "tag"])
    assert values.loc[("PT_003", "ST_001"), "value_at_risk"] == 50.0
    assert values.loc[("PT_001", "ST_002"), "projected_value"] == 0.0  # c has no projection
    assert values.loc[("PT_002", "untagged"), "learners"] == 1
    assert values["value_at_risk"].sum() == 95.0  # e is not a customer of the selection


def test_rows_joined_to_everyone_once_then_masked_are_those_of_the_filters_learners():
    # Given the scores and the log's spans joined once to everyone at D3 (d has no tag)
    everyone = learners_of(CUSTOMERS, latest_tags(LOG, D3), DashboardFilters())
    scored = with_learner(SCORES[["customer_id", "value_at_risk", "projected_value"]], everyone)
    spans = with_learner(tag_spans(LOG), everyone)
    filters = [
        DashboardFilters(), DashboardFilters(tier="PT_001"), DashboardFilters(tag="ST_006"),
        DashboardFilters(cohort="2026-04"), DashboardFilters(tier="PT_001", tag="ST_002"),
        DashboardFilters(tier="PT_002", tag="ST_001"),  # d: no tag, so in no tag's rows
    ]  # fmt: skip
    for chosen in filters:
        learners = narrow_learners(everyone, chosen)
        # When a filter masks the joined rows
        values = value_of_rows(rows_of(scored, chosen))
        series = tag_series(LOG, None, [D1, D2, D3], rows_of(spans, chosen))
        # Then they give what joining the filter's learners gives
        assert values.equals(value_by_tier_tag(SCORES, learners)), chosen
        assert series.equals(tag_series(LOG, learners, [D1, D2, D3])), chosen
    # and a mask selects the learners' own rows: a, c of PT_001, b alone in ST_006 at D3
    tier = rows_of(spans, DashboardFilters(tier="PT_001")).to_pandas()
    assert sorted(set(tier["customer_id"])) == ["a", "c"]
    assert set(rows_of(scored, DashboardFilters(tag="ST_006"))["customer_id"].to_pylist()) == {"b"}
    assert rows_of(scored, DashboardFilters(tier="PT_002", tag="ST_001")).num_rows == 0
