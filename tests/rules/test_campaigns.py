"""The campaign catalogue: loading, trigger matching, reachability and templates."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rules.campaign_matching import match_campaigns
from rules.campaign_rendering import render_message, render_problems
from rules.campaigns import SAMPLE_CONTEXT, TEMPLATE_FIELDS, template_names
from rules.config import RulesError
from rules.graph import unreachable_triggers
from rules.loading import load_ruleset
from tests.rules.casebook import CASES_DIR, with_casebook_points

BOOK = yaml.safe_load((CASES_DIR / "campaigns.yaml").read_text(encoding="utf-8"))
MATCHING, INVALID = BOOK["matching"], BOOK["invalid"]
RULE_FILES = ("tags.yaml", "transitions.yaml", "interventions.yaml")


def copy_rules_with_campaigns(target: Path) -> Path:
    """A writable copy of the packaged rules, campaigns, behaviours and templates included."""
    source = Path(str(resources.files("rules")))
    target.mkdir(parents=True)
    for name in (*RULE_FILES, "campaigns.yaml", "behaviours.yaml"):
        shutil.copy(source / name, target / name)
    shutil.copytree(source / "templates", target / "templates")
    return target


def _select(node, step):
    if isinstance(step, dict):
        return next(item for item in node if item.get("id") == step["id"])
    return node[step]


def _edit(directory: Path, case: dict) -> None:
    """Apply one invalid case's edit (see the casebook's header)."""
    if "template" in case:
        (directory / "templates" / case["template"]["name"]).write_text(case["template"]["text"])
        return
    target = directory / case.get("file", "campaigns.yaml")
    document = json.loads(json.dumps(yaml.safe_load(target.read_text(encoding="utf-8"))))
    *path, last = case["set"]["path"]
    node = document
    for step in path:
        node = _select(node, step)
    key = node.index(_select(node, last)) if isinstance(last, dict) else last
    node[key] = case["set"]["value"]
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def test_the_catalogue_has_the_24_campaigns_and_8_behaviour_tags(ruleset):
    assert sorted(ruleset.campaigns.ids) == [f"CP_{i:02d}" for i in range(1, 25)]
    assert [b.id for b in ruleset.behaviours] == [f"BT_{i:03d}" for i in range(1, 9)]


def test_the_seed_synergy_rows_each_have_a_campaign(ruleset):
    # given the five synergy rows of interventions.yaml (the seed's matrix)
    for row in ruleset.interventions.synergy:
        decisions = pd.DataFrame(
            {
                "from_tag": [row.status_tag],
                "to_tag": [row.status_tag],
                "changed": [False],
                "priority": [
                    ruleset.interventions.lookup(row.product_tag, row.status_tag).priority
                ],
                "behaviour_tags": [""],
            }
        )
        # then a learner decided into it triggers a campaign that names the row's tag and tier
        found = match_campaigns(ruleset.campaigns, decisions, [row.product_tag])[0]
        trigger = ruleset.campaigns.campaigns[found].trigger
        assert (trigger.tag, trigger.product_tag) == (row.status_tag, row.product_tag)


@pytest.mark.parametrize("case", MATCHING, ids=[case["name"] for case in MATCHING])
def test_a_decision_maps_to_the_first_matching_campaign(ruleset, case):
    row = BOOK["defaults"] | case["decision"]
    decisions = pd.DataFrame([row]).drop(columns="product_tag")
    found = match_campaigns(ruleset.campaigns, decisions, [row["product_tag"]])[0]
    assert (ruleset.campaigns.ids[found] if found >= 0 else None) == case["campaign"]


def test_matching_many_decisions_at_once_gives_each_its_own(ruleset):
    rows = [BOOK["defaults"] | case["decision"] for case in MATCHING]
    decisions = pd.DataFrame(rows)
    found = match_campaigns(ruleset.campaigns, decisions, decisions["product_tag"])
    got = [ruleset.campaigns.ids[i] if i >= 0 else None for i in found]
    assert got == [case["campaign"] for case in MATCHING]


def test_matching_categorical_decisions_gives_what_their_strings_give(ruleset):
    # given the matching cases as the engine hands them over: tags and priorities as
    # categoricals over every tag and priority (most of which no trigger names; nulls are
    # "no tag"), and the product tiers as a numpy array
    rows = [BOOK["defaults"] | case["decision"] for case in MATCHING]
    as_strings = pd.DataFrame(rows)
    categories = {
        "from_tag": ruleset.tag_ids,
        "to_tag": ruleset.tag_ids,
        "priority": ruleset.interventions.priority_order,
    }
    as_categoricals = as_strings.assign(
        **{name: pd.Categorical(as_strings[name], categories=c) for name, c in categories.items()}
    )
    products = as_strings["product_tag"].to_numpy(object)
    # when matched both ways
    from_strings = match_campaigns(ruleset.campaigns, as_strings, as_strings["product_tag"])
    from_categoricals = match_campaigns(ruleset.campaigns, as_categoricals, products)
    # then every decision maps to the same campaign, the expected one
    assert from_categoricals.tolist() == from_strings.tolist()
    got = [ruleset.campaigns.ids[i] if i >= 0 else None for i in from_categoricals]
    assert got == [case["campaign"] for case in MATCHING]


def test_the_engines_arrays_match_as_the_frame_and_each_catalogue_by_its_own_triggers(ruleset):
    # given the matching cases as the rules engine holds them before it builds a frame: a dict
    # of categoricals and arrays
    frame = pd.DataFrame([BOOK["defaults"] | case["decision"] for case in MATCHING])
    arrays = {
        "from_tag": pd.Categorical(frame["from_tag"], categories=ruleset.tag_ids),
        "to_tag": pd.Categorical(frame["to_tag"], categories=ruleset.tag_ids),
        "priority": pd.Categorical(
            frame["priority"], categories=ruleset.interventions.priority_order, ordered=True
        ),
        "changed": frame["changed"].to_numpy(bool),
        "behaviour_tags": frame["behaviour_tags"].to_numpy(object),
        "tenure_days": frame["tenure_days"].to_numpy(float),
    }
    products = frame["product_tag"].to_numpy(object)
    # and a second catalogue holding only the campaign the first case matches
    catalogue = ruleset.campaigns
    first_match = match_campaigns(catalogue, frame, frame["product_tag"])[0]
    alone = catalogue.model_copy(update={"campaigns": (catalogue.campaigns[first_match],)})
    # when the arrays are matched against both (the first catalogue's triggers compiled already)
    found = match_campaigns(catalogue, arrays, products)
    found_alone = match_campaigns(alone, arrays, products)
    # then the arrays match as the frame does, and the second catalogue by its own one trigger
    assert found.tolist() == match_campaigns(catalogue, frame, frame["product_tag"]).tolist()
    assert found_alone[0] == 0
    assert set(found_alone.tolist()) <= {-1, 0}


def test_a_move_from_a_tag_no_trigger_names_is_not_a_new_learners(ruleset):
    # given a catalogue of the welcome alone ({into: ST_001, from: [new]}): its triggers name
    # ST_001 only
    catalogue = ruleset.campaigns
    welcome = catalogue.model_copy(update={"campaigns": (catalogue.get("CP_01"),)})
    decisions = pd.DataFrame(
        {
            "from_tag": ["ST_004", None],
            "to_tag": ["ST_001", "ST_001"],
            "changed": [True, True],
            "priority": ["P4", "P4"],
            "behaviour_tags": ["", ""],
        }
    )
    # when a learner back from risk and a new learner are matched
    found = match_campaigns(welcome, decisions, ["PT_001", "PT_001"])
    # then only the new learner is welcomed: a tag the triggers do not name is still a tag
    assert found.tolist() == [-1, 0]


def test_an_onboarding_arrives_when_the_catalogue_sets_no_arrival_days(ruleset):
    # given a learner enrolled a year ago, tagged active for the first time
    decisions = pd.DataFrame(
        {
            "from_tag": [None],
            "to_tag": ["ST_001"],
            "changed": [True],
            "priority": ["P4"],
            "behaviour_tags": [""],
            "tenure_days": [365.0],
        }
    )
    unlimited = ruleset.campaigns.model_copy(update={"arrival_days": None})
    # when matched with the packaged arrival days and with none
    onboarded = match_campaigns(ruleset.campaigns, decisions, ["PT_001"])[0]
    arrived = match_campaigns(unlimited, decisions, ["PT_001"])[0]
    # then the packaged catalogue gives the tag's default, the unlimited one the welcome
    assert ruleset.campaigns.arrival_days == 7
    assert ruleset.campaigns.ids[onboarded] == "CP_22"
    assert unlimited.ids[arrived] == "CP_01"


@pytest.mark.parametrize("case", INVALID, ids=[case["name"] for case in INVALID])
def test_a_broken_catalogue_fails_naming_file_id_and_field(tmp_path, known_features, case):
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    _edit(directory, case)
    with pytest.raises(RulesError) as raised:
        load_ruleset(directory, known_features=known_features)
    error, expected = raised.value, case["error"]
    assert Path(error.file).name == case.get("file", "campaigns.yaml")
    assert error.rule_id == expected["id"]
    assert error.field == expected["field"]
    assert expected["message"] in error.message


def test_a_directory_without_campaigns_loads_with_none(tmp_path, known_features):
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    (directory / "campaigns.yaml").unlink()
    (directory / "behaviours.yaml").unlink()
    ruleset = with_casebook_points(load_ruleset(directory, known_features=known_features))
    assert ruleset.campaigns.campaigns == () and ruleset.behaviours == ()


def test_every_packaged_trigger_can_be_reached(ruleset):
    assert unreachable_triggers(ruleset) == []


@pytest.mark.parametrize(
    ("campaign_id", "trigger", "fragment"),
    [
        ("CP_13", {"into": "ST_005"}, "no rule moves a learner into ST_005"),
        ("CP_02", {"into": "ST_001", "from": ["ST_002"]}, "into ST_001 from ST_002"),
        ("CP_05", {"tag": "ST_004", "product_tag": "PT_003", "priority": "P1"}, "priority P1"),
        ("CP_22", {"tag": "ST_001", "priority": "P1"}, "never give priority P1 in ST_001"),
    ],
)
def test_rules_check_flags_triggers_no_rule_can_reach(
    tmp_path, known_features, campaign_id, trigger, fragment
):
    # given a catalogue whose trigger asks for a move or a priority the rules never make
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    _edit(
        directory,
        {"set": {"path": ["campaigns", {"id": campaign_id}, "trigger"], "value": trigger}},
    )
    ruleset = with_casebook_points(load_ruleset(directory, known_features=known_features))
    # then it loads (it is valid data) but rules check names it
    problems = unreachable_triggers(ruleset)
    assert len(problems) == 1
    assert problems[0].startswith(campaign_id) and fragment in problems[0]


def test_every_template_of_the_24_campaigns_renders(ruleset):
    assert render_problems(ruleset.campaigns) == []
    rendered = 0
    for campaign in ruleset.campaigns.campaigns:
        for _, name, variant in template_names(campaign):
            template_id, channel, _ = name.split(".")
            message = render_message(template_id, channel, variant, SAMPLE_CONTEXT)
            assert message.body and "None" not in message.body
            assert bool(message.subject) == (channel == "email"), name
            rendered += 1
    assert rendered >= 24


def test_a_variant_renders_its_own_template_when_it_has_one():
    base = render_message("upgrade_value", "email", "A", SAMPLE_CONTEXT)
    other = render_message("upgrade_value", "email", "B", SAMPLE_CONTEXT)
    assert base.subject != other.subject
    assert render_message("upgrade_value", "email", "", SAMPLE_CONTEXT) == base


def test_a_missing_variable_at_render_time_names_it(tmp_path, known_features):
    directory = copy_rules_with_campaigns(tmp_path / "rules")
    # an attribute of a known field is not caught by the load-time scan, but by rendering
    (directory / "templates" / "learning_digest.email.j2").write_text("{{ reasons.first }}\n")
    ruleset = with_casebook_points(load_ruleset(directory, known_features=known_features))
    problems = render_problems(ruleset.campaigns)
    assert len(problems) == 1
    assert "CP_22" in problems[0] and "learning_digest.email.j2" in problems[0]
    assert "first" in problems[0]


def test_the_sandbox_refuses_unsafe_templates(tmp_path):
    from jinja2.exceptions import SecurityError

    (tmp_path / "evil.email.j2").write_text("{{ greeting.__class__.__mro__ }}\n")
    with pytest.raises(SecurityError):
        render_message("evil", "email", "", SAMPLE_CONTEXT, templates_dir=tmp_path)


def test_the_sample_context_has_every_template_field():
    assert set(SAMPLE_CONTEXT) == set(TEMPLATE_FIELDS)


def test_the_decisions_channel_is_the_first_steps_personalised(ruleset):
    from rules.campaign_matching import campaign_columns

    # given two Freemium learners moving into ST_004 (CP_13: email, push for mobile-primary)
    row = BOOK["defaults"] | {"to_tag": "ST_004", "changed": True, "priority": "P2"}
    decisions = pd.DataFrame([row | {"behaviour_tags": "BT_002"}, row]).drop(columns="product_tag")
    campaign_id, channel = campaign_columns(ruleset.campaigns, decisions, ["PT_003", "PT_003"])
    assert list(campaign_id) == ["CP_13", "CP_13"]
    assert list(channel) == ["push", "email"]
