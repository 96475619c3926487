"""The retention grid, the tag flows and the behaviour filter on tiny frames counted by hand."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from serving.app.dashboard_cohorts import (
    MANUAL,
    NEW,
    grid_of_weeks,
    holding_behaviour,
    known_rules,
    moves_by_rule,
    present_behaviours,
    retention_grid,
    tag_flows,
    week_spans,
)
from serving.app.dashboard_data import DashboardFilters, learners_of

LATEST = date(2026, 4, 20)
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "product_tag": ["PT_001", "PT_002", "PT_001", "PT_003"],
        # a's weeks end 03-08, 03-15, ... 04-05 (week 4), 04-12, 04-19, 04-26 (after LATEST);
        # b's end 03-12, ... 04-02 (week 3), 04-09, 04-16, 04-23; c's 04-07, 04-14, 04-21
        "enrolled_at": pd.to_datetime(
            ["2026-03-02 09:30", "2026-03-06 00:00", "2026-04-01 23:00", "2026-04-10 00:00"],
            utc=True,
        ),
    }
)
# (id, learner, day, from, to, rule, reason): the history starts on 04-01; d was never seen
ROWS = [
    (1, "a", "2026-04-01", None, "ST_001", "R01", "first eligible day"),
    (2, "b", "2026-04-01", None, "ST_002", "R11", "first seen progressing"),
    (3, "c", "2026-04-01", None, "ST_001", "R01", "first eligible day"),
    (4, "a", "2026-04-08", "ST_001", "ST_004", "R06", "declining"),
    (5, "c", "2026-04-08", "ST_001", "ST_003", "R02", "mastery"),
    (6, "c", "2026-04-08", "ST_003", "ST_004", None, "CS lead: stalled"),  # later the same day
    (7, "a", "2026-04-15", "ST_004", "ST_006", "R09", "churned"),
    (8, "b", "2026-04-16", "ST_002", "ST_006", "R09", "churned"),  # the last day of b's week 5
]
LOG = pd.DataFrame(
    ROWS, columns=["id", "customer_id", "as_of", "from_tag", "to_tag", "rule_id", "reason"]
).assign(as_of=lambda frame: pd.to_datetime(frame["as_of"]))


def _cell(grid: pd.DataFrame, cohort: str, week: int) -> pd.Series:
    return grid.set_index(["cohort", "week"]).loc[(cohort, week)]


def test_the_grid_counts_each_known_learners_tag_at_the_end_of_each_week():
    # given the log above, when the grid is computed as of the latest batch day
    grid = retention_grid(LOG, CUSTOMERS, LATEST)
    # then there are weeks 0..6 for both cohorts (week 6 is the last known: a's ends 04-19)
    assert grid["week"].max() == 6 and len(grid) == 2 * 7
    assert set(grid["cohort_size"]) == {2}  # d counts in April's size though never seen
    # March, week 3: only b's week is known (a's ended 03-29, before the history) -> 1/1 live
    assert _cell(grid, "2026-03", 3)[["known", "live", "ST_002"]].tolist() == [1, 1, 1]
    # week 4: a Active (04-05), b Progressing (04-09) -> 2 known, 2 live
    week4 = _cell(grid, "2026-03", 4)
    assert week4[["known", "live", "ST_001", "ST_002"]].tolist() == [2, 2, 1, 1]
    # week 5: a Declining (04-12), b Churned on 04-16, its week's last day -> half live
    week5 = _cell(grid, "2026-03", 5)
    assert week5[["known", "live", "ST_004", "ST_006"]].tolist() == [2, 1, 1, 1]
    assert week5["share_live"] == 0.5
    # week 6: a Churned (04-19); b's week ends 04-23, after the latest day -> unknown, not live
    assert _cell(grid, "2026-03", 6)[["known", "share_live"]].tolist() == [1, 0.0]
    # April: c Active at the end of week 0 (04-07), Declining at week 1's (the day's last move)
    assert _cell(grid, "2026-04", 0)[["known", "ST_001"]].tolist() == [1, 1]
    assert _cell(grid, "2026-04", 1)[["known", "ST_003", "ST_004"]].tolist() == [1, 0, 1]


def test_unknown_weeks_are_blank_not_zero():
    grid = retention_grid(LOG, CUSTOMERS, LATEST)
    # March's weeks 0-2 end before the history's first day; April's 2+ after the latest day
    for cohort, week in [("2026-03", 0), ("2026-03", 2), ("2026-04", 2), ("2026-04", 6)]:
        cell = _cell(grid, cohort, week)
        assert cell["known"] == 0 and pd.isna(cell["share_live"]), (cohort, week)


def test_the_grid_of_chosen_learners_and_before_any_week_ends():
    chosen = pd.DataFrame({"customer_id": ["a", "c"]})
    grid = retention_grid(LOG, CUSTOMERS, LATEST, chosen)
    assert _cell(grid, "2026-03", 4)[["cohort_size", "known", "ST_001"]].tolist() == [1, 1, 1]
    assert _cell(grid, "2026-04", 0)["cohort_size"] == 1  # d is not chosen
    # as of 04-01 no week of anyone has ended inside the history: nothing to draw
    assert retention_grid(LOG, CUSTOMERS, date(2026, 4, 1)).empty


def test_the_grid_of_some_learners_week_spans_is_the_grid_of_those_learners():
    # Given everyone's week spans found once, numbered by a shuffled list of the learners
    everyone = learners_of(CUSTOMERS, pd.DataFrame({"customer_id": [], "tag": []}),
                           DashboardFilters()).sample(frac=1, random_state=3)  # fmt: skip
    everyone, cells = everyone.reset_index(drop=True), []
    for latest in (LATEST, date(2026, 4, 5), date(2026, 4, 1)):
        weeks = week_spans(LOG, CUSTOMERS, latest, everyone)
        for chosen in (["a", "b", "c", "d"], ["a", "c"], ["b"], ["d"], []):
            # When a mask keeps some learners' spans and cohorts
            keep = everyone["customer_id"].isin(chosen).to_numpy()
            kept = weeks.filter(pa.array(keep[weeks["row"].to_numpy()]))
            grid = grid_of_weeks(kept, everyone["cohort"][keep])
            # Then the grid is retention_grid of those learners
            learners = pd.DataFrame({"customer_id": chosen}, dtype="str")
            expected = retention_grid(LOG, CUSTOMERS, latest, learners)
            pd.testing.assert_frame_equal(grid, expected, check_index_type=False)
            cells.append(len(grid))
    assert min(cells) == 0 < max(cells)  # grids with cells and without were compared


def test_flows_count_moves_between_tags_with_onboarding_as_new():
    # when the first week's moves are counted
    flows = tag_flows(LOG, date(2026, 4, 1), date(2026, 4, 8))
    counted = {(row.from_tag, row.to_tag): row.moves for row in flows.itertuples()}
    # then two learners started Active, one Progressing, and three moves followed
    assert counted == {
        (NEW, "ST_001"): 2, (NEW, "ST_002"): 1, ("ST_001", "ST_004"): 1,
        ("ST_001", "ST_003"): 1, ("ST_003", "ST_004"): 1,
    }  # fmt: skip
    churned = tag_flows(LOG, date(2026, 4, 1), LATEST, rule="R09")
    assert churned.set_index("from_tag")["moves"].to_dict() == {"ST_002": 1, "ST_004": 1}
    manual = tag_flows(LOG, date(2026, 4, 1), LATEST, rule=MANUAL)
    assert manual[["from_tag", "to_tag", "moves"]].values.tolist() == [["ST_003", "ST_004", 1]]
    only_b = tag_flows(LOG, date(2026, 4, 9), LATEST, learners=pd.DataFrame({"customer_id": ["b"]}))
    assert only_b[["from_tag", "to_tag", "moves"]].values.tolist() == [["ST_002", "ST_006", 1]]


def test_moves_by_rule_name_the_rules_reason_and_count_its_moves():
    by_rule = moves_by_rule(LOG, date(2026, 4, 8), LATEST).set_index("rule_id")
    assert by_rule["moves"].to_dict() == {"R09": 2, "R02": 1, "R06": 1, MANUAL: 1}
    assert by_rule.loc["R09", "description"] == "churned"
    assert by_rule.loc[MANUAL, "description"] == "CS lead: stalled"
    assert moves_by_rule(LOG, date(2026, 4, 17), LATEST).empty
    assert known_rules(LOG, ["R01", "R16"]) == ["R01", "R02", "R06", "R09", "R11", "R16", MANUAL]


SCORES = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "behaviour_tags": ["BT_001,BT_003", "BT_003", "", None],
    }
)


def test_the_behaviour_filter_keeps_the_learners_holding_the_tag():
    assert present_behaviours(SCORES) == ["BT_001", "BT_003"]
    learners = learners_of(CUSTOMERS, pd.DataFrame({"customer_id": [], "tag": []}),
                           DashboardFilters())  # fmt: skip
    holders = holding_behaviour(learners, SCORES, "BT_003")
    assert sorted(holders["customer_id"]) == ["a", "b"]
    assert list(holders.columns) == list(learners.columns)
    assert holding_behaviour(learners, SCORES, "BT_001")["customer_id"].tolist() == ["a"]
    assert holding_behaviour(learners, SCORES, "BT_00").empty  # whole ids, not pieces
    assert present_behaviours(SCORES.drop(columns="behaviour_tags")) == []


def test_the_filters_take_a_behaviour_tag_and_refuse_what_is_not_one():
    assert DashboardFilters(behaviour="BT_004").narrows_learners
    assert DashboardFilters(behaviour=" ").behaviour is None
    with pytest.raises(ValidationError, match="BT_4"):
        DashboardFilters(behaviour="BT_4")
