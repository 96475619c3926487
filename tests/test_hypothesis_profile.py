"""hypothesis draws: derandomized under CI (reproducible anywhere), afresh locally."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.conftest import CI_PROFILE, DEV_PROFILE, hypothesis_profile


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({"CI": "true"}, CI_PROFILE),
        ({"CI": "1"}, CI_PROFILE),
        ({}, DEV_PROFILE),
        ({"CI": ""}, DEV_PROFILE),
        ({"CI": "false"}, DEV_PROFILE),
        ({"CI": "true", "HYPOTHESIS_PROFILE": DEV_PROFILE}, DEV_PROFILE),
    ],
)
def test_the_profile_follows_the_ci_variable_unless_one_is_named(environ, profile):
    assert hypothesis_profile(environ) == profile


def test_ci_draws_from_a_fixed_seed_and_local_runs_draw_afresh():
    # given the two registered profiles
    ci, dev = settings.get_profile(CI_PROFILE), settings.get_profile(DEV_PROFILE)
    # then only the CI one is derandomized (and keeps no example database between runs)
    assert ci.derandomize and ci.database is None
    assert not dev.derandomize


def test_this_run_uses_the_profile_of_its_environment():
    # given the environment pytest runs in / then the loaded defaults are that profile's
    expected = settings.get_profile(hypothesis_profile(os.environ))
    assert settings.default.derandomize == expected.derandomize
