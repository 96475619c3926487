"""Behaviour tags: conditions over window features, several per learner, used by the engine."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from rules import decide
from rules.behaviours import BehaviourLookup, behaviour_tags, holds
from tests.rules.casebook import load_casebook, scored_frame, state_frame

QUIET = {
    "active_days_7d": 1,
    "mobile_share_30d": 0.1,
    "community_posts_30d": 0,
    "milestones_30d": 0,
    "lessons_30d": 2,
    "distinct_features_30d": 2,
    "video_share_30d": 0.05,
    "community_replies_30d": 0,
    "quiz_attempts_30d": 0,
    "quiz_pass_rate_30d": np.nan,
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ""),
        ({"active_days_7d": 5}, "BT_001"),
        ({"active_days_7d": 4}, ""),
        ({"mobile_share_30d": 0.7}, "BT_002"),
        ({"mobile_share_30d": 0.69}, ""),
        ({"community_posts_30d": 3}, "BT_003"),
        ({"milestones_30d": 4}, "BT_004"),
        ({"lessons_30d": 20}, "BT_004"),  # any of the two paces
        ({"milestones_30d": 3, "lessons_30d": 19}, ""),
        ({"distinct_features_30d": 6}, "BT_005"),
        ({"video_share_30d": 0.2}, "BT_006"),
        ({"community_replies_30d": 5}, "BT_007"),
        ({"quiz_attempts_30d": 8, "quiz_pass_rate_30d": 0.7}, "BT_008"),
        ({"quiz_attempts_30d": 8, "quiz_pass_rate_30d": 0.69}, ""),
        ({"quiz_attempts_30d": 8}, ""),  # no pass rate: null compares false
        (
            {"video_share_30d": 0.9, "active_days_7d": 7, "mobile_share_30d": 1.0},
            "BT_001,BT_002,BT_006",
        ),
    ],
)
def test_each_behaviour_tag_holds_on_its_condition(ruleset, changes, expected):
    frame = pd.DataFrame([QUIET | changes])
    assert behaviour_tags(ruleset.behaviours, frame).tolist() == [expected]


def test_a_missing_feature_column_holds_nothing(ruleset):
    # given a frame without the video columns
    frame = pd.DataFrame([QUIET | {"active_days_7d": 6}]).drop(columns=["video_share_30d"])
    assert behaviour_tags(ruleset.behaviours, frame).tolist() == ["BT_001"]


def test_many_learners_are_tagged_at_once_in_their_order(ruleset):
    rows = [QUIET | {"active_days_7d": 6}, QUIET, QUIET | {"mobile_share_30d": 0.8}] * 1000
    tags = behaviour_tags(ruleset.behaviours, pd.DataFrame(rows))
    assert tags[:3].tolist() == ["BT_001", "", "BT_002"]
    assert (tags[3:6] == tags[:3]).all() and len(tags) == 3000


def test_the_lookup_from_the_conditions_holds_what_the_tags_column_holds(ruleset):
    # given learners holding no tag, one tag and three tags
    rows = [QUIET, QUIET | {"active_days_7d": 6}, QUIET | {"video_share_30d": 0.9}]
    rows.append(QUIET | {"video_share_30d": 0.9, "active_days_7d": 7, "mobile_share_30d": 1.0})
    frame = pd.DataFrame(rows)
    # when the engine's lookup is built from the conditions, and another from the tags column
    from_conditions = BehaviourLookup.of(ruleset.behaviours, frame)
    from_column = BehaviourLookup(pd.Series(from_conditions.tags()))
    # then both give the tags, and each tag to the same learners
    assert from_conditions.tags().tolist() == ["", "BT_001", "BT_006", "BT_001,BT_002,BT_006"]
    for behaviour in ruleset.behaviours:
        assert from_conditions.holds(behaviour.id).tolist() == (
            from_column.holds(behaviour.id).tolist()
        )
    assert from_conditions.holds("BT_001").tolist() == [False, True, False, True]


def test_holds_matches_whole_ids_only():
    tags = pd.Series(["BT_001,BT_002", "BT_0021", "", None, "BT_002"])
    assert holds(tags, "BT_002").tolist() == [True, False, False, False, True]


def test_decide_gives_each_learner_their_behaviour_tags_and_campaign(ruleset):
    # given two learners of the engine's casebook, one of them mobile-primary
    book = load_casebook("transitions.yaml")
    cases = book["cases"][:2]
    scored = scored_frame(book, cases).assign(mobile_share_30d=[0.9, 0.2])
    decisions = decide(ruleset, state_frame(book, cases), scored, date(2025, 6, 1))
    by_id = decisions.set_index("customer_id")
    assert by_id.loc[cases[0]["customer_id"], "behaviour_tags"] == "BT_002"
    assert by_id.loc[cases[1]["customer_id"], "behaviour_tags"] == ""
    # every decision with a tag maps to a campaign and that campaign's first channel
    tagged = decisions[decisions["to_tag"].notna()]
    assert tagged["campaign_id"].notna().all()
    assert set(tagged["channel"].dropna()) <= {"email", "push", "in_app", "csm_task", "webhook"}
