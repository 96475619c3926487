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


def test_a_non_positive_window_is_refused():
    with pytest.raises(RulesError, match="label window is 0 days"):
        load_rules().with_score_horizon(0)
