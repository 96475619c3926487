"""Each learner's own day of a spread campaign (``rules.spread``): stable, one day in every
``per_days``, spread evenly, and drawn apart from the learner's control group and variant."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from rules.interventions import control_draw
from rules.spread import days_of, on_their_day

IDS = [f"learner_{number:05d}" for number in range(7_000)]


def test_a_learners_day_is_stable_and_within_the_window():
    days = days_of(IDS, "CP_22", 7)
    assert days.min() >= 0 and days.max() <= 6
    assert np.array_equal(days, days_of(list(reversed(IDS)), "CP_22", 7)[::-1])


def test_the_days_spread_evenly_and_differ_by_campaign():
    # Given 7,000 learners' days of a weekly campaign
    days = days_of(IDS, "CP_22", 7)
    # Then each weekday holds about a seventh of them (1,000; 5 standard deviations: 140)
    counts = np.bincount(days, minlength=7)
    assert counts.min() > 860 and counts.max() < 1_140
    # And another campaign's days are drawn apart: a seventh agree, as by chance
    assert abs((days == days_of(IDS, "CP_23", 7)).mean() - 1 / 7) < 0.03


def test_the_day_is_drawn_apart_from_the_variant_and_the_control_group():
    # the variant's draw is control_draw(learner, campaign): a day read off it would put a
    # weekday's learners in one variant
    variant_days = np.minimum((control_draw(IDS, "CP_22") * 7).astype(int), 6)
    assert abs((days_of(IDS, "CP_22", 7) == variant_days).mean() - 1 / 7) < 0.03


def test_each_learner_has_exactly_one_day_in_every_window():
    # Given 14 consecutive days of a weekly campaign
    start = date(2026, 3, 2)
    ours = np.array([on_their_day(IDS, "CP_22", 7, start + timedelta(d)) for d in range(14)])
    # Then each learner's days are one a week, 7 days apart
    assert (ours[:7].sum(axis=0) == 1).all() and (ours[7:].sum(axis=0) == 1).all()
    assert np.array_equal(ours[:7], ours[7:])
    assert on_their_day([], "CP_22", 7, start).shape == (0,)
