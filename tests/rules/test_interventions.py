"""Tests for rules.interventions: the control-group draw and value at risk."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rules import interventions
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


def _hashlib_draws(ids: list[str], action: str) -> np.ndarray:
    """The module docstring's draw, one ``hashlib`` digest per learner."""
    digests = [hashlib.sha256(f"{id_}\x1f{action}".encode()).digest() for id_ in ids]
    return np.array([int.from_bytes(digest[:8], "big") / 2**64 for digest in digests])


ODD_IDS = ["", "é", "日本語-ü", "a\x00b", "emoji-😀", " ", "x" * 300, "\x1f", "tab\tid"]


@pytest.mark.parametrize("action", ["immediate CSM intervention", "", "é 😀 action", "\x00"])
def test_a_days_draws_are_the_digests_of_the_docstring_for_odd_ids_and_actions(action):
    # given more learners than are hashed one by one, odd ids among them
    ids = ODD_IDS + [f"customer-{i:06d}" for i in range(interventions.VECTORISED_FROM)]
    # when
    draws = control_draw(ids, action)
    # then every draw is bit-identical to hashlib's
    assert np.array_equal(draws, _hashlib_draws(ids, action))


def test_a_days_draws_are_hashed_in_one_vectorised_pass_not_one_digest_per_learner(monkeypatch):
    # given a day's learners over two actions, and hashlib made unusable
    ids = np.array([f"customer-{i:06d}" for i in range(2 * interventions.VECTORISED_FROM)])
    codes = np.arange(len(ids)) % 2
    expected = np.concatenate(
        [_hashlib_draws(list(ids[codes == code]), action) for code, action in enumerate("ab")]
    )

    def refuse(*_):
        raise AssertionError("hashlib called per learner")

    monkeypatch.setattr(interventions.hashlib, "sha256", refuse)
    # when
    flags = control_flags(ids, codes, ["a", "b"], 0.5)
    # then the flags are those of the per-learner digests
    assert np.array_equal(np.concatenate([flags[codes == 0], flags[codes == 1]]), expected < 0.5)


def test_each_learner_is_drawn_for_their_own_action_in_one_call():
    # given learners with three actions interleaved and some without one
    ids = [f"L{i}" for i in range(30)]
    codes = np.array([i % 4 - 1 for i in range(30)])
    actions = ["a", "b", "c"]
    # when
    flags = control_flags(np.array(ids, dtype=object), codes, actions, 0.5)
    # then each flag is that learner's draw for their action; none without an action
    for row, code in enumerate(codes):
        expected = code >= 0 and control_draw([ids[row]], actions[code])[0] < 0.5
        assert flags[row] == expected


def test_a_null_customer_id_is_refused():
    with pytest.raises(ValueError, match="null"):
        control_draw(["a", None], "x")
