"""Tests for rules.interventions: the control-group draw and value at risk."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rules.interventions import control_draw, control_flags, value_at_risk


def test_the_draw_is_the_first_8_bytes_of_sha256_of_id_and_action():
    # given an id and an action, hashed independently here
    digest = hashlib.sha256(b"C-0001\x1fimmediate CSM intervention").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    # when
    draw = control_draw(["C-0001"], "immediate CSM intervention")
    # then
    assert draw[0] == pytest.approx(expected, rel=1e-15)


def test_the_draw_is_stable_across_calls_and_input_types():
    ids = [f"L{i}" for i in range(50)]
    first = control_draw(ids, "a")
    assert np.array_equal(first, control_draw(np.array(ids, dtype=object), "a"))
    assert np.array_equal(first[10:20], control_draw(ids[10:20], "a"))


def test_a_different_action_gives_a_different_draw():
    ids = [f"L{i}" for i in range(50)]
    assert not np.array_equal(control_draw(ids, "a"), control_draw(ids, "b"))


@pytest.mark.parametrize("share", [0.1, 0.25])
def test_the_control_share_holds_within_one_and_a_half_points_on_100k_ids(share):
    # given 100k learners split over two actions
    ids = np.array([f"customer-{i:06d}" for i in range(100_000)], dtype=object)
    codes = np.arange(100_000) % 2
    # when
    flags = control_flags(
        ids, codes, ["standard nurturing sequence", "upgrade nurturing campaign"], share
    )
    # then the share is met overall and per action
    assert abs(flags.mean() - share) <= 0.015
    for code in (0, 1):
        assert abs(flags[codes == code].mean() - share) <= 0.015


def test_a_learner_without_an_action_is_never_in_the_control_group():
    flags = control_flags(np.array(["a", "b"], dtype=object), np.array([-1, -1]), ["x"], 1.0)
    assert not flags.any()


def test_value_at_risk_uses_mrr_then_the_tier_weight_then_the_risk_count():
    # given: p and mrr; p and mrr 0; p and no mrr; no p, count 6 and mrr 30; 3 months at risk
    # where there is a score (NaN without one, as rules.lifetime gives)
    p_churn = np.array([0.5, 0.5, 0.5, np.nan])
    risk_count = np.array([0.0, 0.0, 0.0, 6.0])
    mrr = np.array([80.0, 0.0, np.nan, 30.0])
    weight = np.array([49.0, 5.0, 250.0, 49.0])
    at_risk = np.array([3.0, 3.0, 3.0, np.nan])
    # when
    value = value_at_risk(p_churn, risk_count, mrr, weight, at_risk)
    # then monthly value x months at risk with a score; without one, count / 12 x one month's mrr
    assert value.tolist() == [240.0, 15.0, 750.0, 15.0]
