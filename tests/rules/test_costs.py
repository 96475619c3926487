"""The cost per contact by channel (``costs`` in campaigns.yaml): loaded, defaulted, refused."""

from __future__ import annotations

import pytest
import yaml

from rules.campaigns import CHANNELS
from rules.config import RulesError
from rules.costs import ChannelCosts
from rules.loading import load_ruleset
from tests.rules.test_campaigns import copy_rules_with_campaigns


def _with_costs(directory, costs) -> None:
    path = directory / "campaigns.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["costs"] = costs
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def test_every_channel_has_a_cost_and_the_packaged_ones_are_loaded(ruleset):
    # given the packaged catalogue, then each campaign channel has its cost per contact
    assert tuple(ChannelCosts.model_fields) == CHANNELS
    assert ruleset.campaigns.costs.by_channel() == {
        "email": 0.01, "push": 0.005, "in_app": 0.0, "csm_task": 25.0, "webhook": 0.0,
    }  # fmt: skip


def test_a_channel_left_out_keeps_its_default(tmp_path, known_features):
    # given a catalogue that prices only the CSM task
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    _with_costs(directory, {"csm_task": 40})
    # when it loads, then the task costs 40 and e-mail keeps its 0.01
    costs = load_ruleset(directory, known_features=known_features).campaigns.costs
    assert (costs.csm_task, costs.email) == (40.0, 0.01)


@pytest.mark.parametrize(
    ("costs", "field", "message"),
    [
        ({"sms": 0.02}, "costs.sms", "unknown channel 'sms'"),
        ({"email": -0.01}, "costs.email", "greater than or equal to 0"),
        ({"push": "cheap"}, "costs.push", "valid number"),
        ({"csm_task": float("inf")}, "costs.csm_task", "finite number"),
        ([0.01, 0.02], "costs", "expected a mapping"),
    ],
    ids=["unknown-channel", "negative", "not-a-number", "infinite", "not-a-mapping"],
)
def test_a_bad_cost_is_refused_naming_the_field(tmp_path, known_features, costs, field, message):
    # given a catalogue whose costs block is wrong
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    _with_costs(directory, costs)
    # when it loads, then the error names campaigns.yaml, costs.<channel> and what is wrong
    with pytest.raises(RulesError) as raised:
        load_ruleset(directory, known_features=known_features)
    assert raised.value.file.endswith("campaigns.yaml")
    assert raised.value.field == field
    assert message in raised.value.message
