"""The rules as the apps load them (``serving.infra.rulesets.load_rules``), on the champion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rules import RulesError
from rules.lifetime import expected_months
from serving.infra.rulesets import load_rules

POINTS = {"early_warning": 0.6, "recovered": 0.08}


def champion_with(horizon_days: int | None) -> SimpleNamespace:
    """A loaded champion's handle as load_rules reads it: version, operating points, window."""
    model = SimpleNamespace(operating_points=POINTS, horizon_days=horizon_days)
    return SimpleNamespace(version="7", model=model)


def test_the_lifetime_projection_reads_p_churn_over_the_champions_label_window():
    # given the packaged rules (score_horizon_days 30) and a champion trained on 14-day labels
    packaged = load_rules()
    assert packaged.interventions.lifetime.score_horizon_days == 30
    # when the rules are loaded on that champion
    resolved = load_rules(champion=champion_with(14))
    # then the projection reads p_churn as a 14-day probability: fewer months for the same p
    lifetime = resolved.interventions.lifetime
    assert lifetime.score_horizon_days == 14
    assert lifetime.horizon_months == packaged.interventions.lifetime.horizon_months
    months = expected_months(np.array([0.2]), lifetime)[0]
    assert months < expected_months(np.array([0.2]), packaged.interventions.lifetime)[0]


def test_a_champion_that_records_no_window_keeps_the_files_value():
    # given a champion saved before the label window was recorded
    resolved = load_rules(champion=champion_with(None))
    # then the operating points resolve and the window is interventions.yaml's
    assert resolved.references == []
    assert resolved.interventions.lifetime.score_horizon_days == 30


def test_the_healthy_reference_is_the_champions_recovered_point():
    # given a champion whose @recovered is 0.05 (the packaged fallback is 0.08)
    assert load_rules().interventions.lifetime.healthy_p_churn == 0.08
    # when the rules are loaded on it, then the months at risk are measured against 0.05
    resolved = load_rules(champion=SimpleNamespace(version="7", model=SimpleNamespace(
        operating_points={**POINTS, "recovered": 0.05}, horizon_days=30)))  # fmt: skip
    assert resolved.interventions.lifetime.healthy_p_churn == 0.05


def test_lifetime_settings_a_champion_brings_are_validated_and_named():
    with pytest.raises(RulesError, match="score_horizon_days"):
        load_rules().with_lifetime(score_horizon_days=0)
    with pytest.raises(RulesError, match="healthy_p_churn"):
        load_rules().with_lifetime(healthy_p_churn=1.5)
