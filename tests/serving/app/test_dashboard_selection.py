"""A filter's learners as masks over everyone equal those the joins select (tiny frames, and the
small workspace's dashboard)."""

from __future__ import annotations

import pandas as pd
import pytest

from serving.app.dashboard_cohorts import behaviours_held, holding_behaviour, with_behaviour
from serving.app.dashboard_data import DashboardFilters, kpi_trend, narrow_learners
from serving.app.dashboard_selection import (
    behaviour_rows,
    everyone_at,
    holders,
    holding,
    kpi_positions,
    selected,
)


def test_the_holders_mask_keeps_the_learners_the_semi_join_keeps():
    # Given learners, and scores with a learner nobody lists, a repeated learner, an empty and
    # a null tag set
    learners = pd.DataFrame({"customer_id": ["d", "b", "a", "c"], "tier": ["1", "2", "3", "4"]})
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "z", "c"],
            "behaviour_tags": ["BT_001,BT_003", "BT_003", "", None, "BT_003", "BT_002"],
        }
    )
    # When the tags are factorised and the rows found once
    lookup, rows = behaviour_rows(scores, learners)
    assert rows.tolist() == [2, 1, 3, 0, -1, 3]
    # Then each behaviour's mask keeps the rows holding_behaviour keeps, whole ids only
    for behaviour, expected in [("BT_003", {"a", "b"}), ("BT_001", {"a"}), ("BT_002", {"c"}),
                                ("BT_00", set()), ("BT_009", set())]:  # fmt: skip
        mask = holders(lookup, rows, len(learners), behaviour)
        assert set(learners["customer_id"][mask]) == expected
        assert expected == set(holding_behaviour(learners, scores, behaviour)["customer_id"])


def test_a_filter_s_mask_selects_the_learners_the_joins_select(dashboard):
    # Given the workspace's frames and everyone at the latest day
    _, cache = dashboard
    frames = cache.frames()
    latest = frames.latest_day
    everyone = everyone_at(frames, latest)
    behaviour = behaviours_held(frames)[0]
    tier = str(everyone["product_tag"].iloc[0])
    for filters in [DashboardFilters(tier=tier), DashboardFilters(behaviour=behaviour),
                    DashboardFilters(tier=tier, behaviour=behaviour)]:  # fmt: skip
        # When a filter is a mask over everyone
        chosen = everyone[selected(frames, filters, latest)]
        # Then it keeps the learners narrowing and the behaviour's semi-join keep
        joined = with_behaviour(frames, narrow_learners(everyone, filters), filters.behaviour)
        assert 0 < len(chosen) < len(everyone)
        assert sorted(chosen["customer_id"]) == sorted(joined["customer_id"])
        # And the KPIs narrowed by the learners' positions are those narrowed by their ids
        positions = kpi_positions(cache, frames, latest)[selected(frames, filters, latest)]
        inputs, history = cache.kpi_inputs(frames), cache.kpi_history(frames)
        assert history.of_positions(positions).chosen is not None  # masked, not found again
        by_id = kpi_trend(inputs, frames.customers, frames.days, chosen, history)
        by_position = kpi_trend(inputs, frames.customers, frames.days, chosen, history, positions)
        pd.testing.assert_frame_equal(by_position, by_id)
    with pytest.raises(ValueError, match="BT_999"):
        holding(frames, latest, "BT_999")
