"""Tests for rules.config: the packaged rules follow DESIGN §5; broken copies fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rules.config import RulesError
from rules.loading import load_ruleset
from tests.rules.casebook import CASES_DIR, with_casebook_points

INVALID_CASES = yaml.safe_load((CASES_DIR / "invalid_rules.yaml").read_text(encoding="utf-8"))[
    "cases"
]

LIVE = ["ST_001", "ST_002", "ST_003", "ST_004", "ST_005"]
DESIGN_FLOW = (
    {("new", "ST_001"), ("ST_001", "ST_002"), ("ST_002", "ST_003")}
    | {(tag, "ST_004") for tag in ("ST_001", "ST_002", "ST_003")}
    | {("ST_005", "ST_001"), ("ST_004", "ST_001")}
    # a retention campaign whose time box ended without re-engagement (issue 11)
    | {("ST_005", "ST_004")}
    | {(tag, "ST_006") for tag in LIVE}
    # onboarding of a learner first seen when already progressing, mastered or at risk
    | {("new", "ST_002"), ("new", "ST_003"), ("new", "ST_004")}
)
"""DESIGN §5's flow, less the manual ST_004 -> ST_005 (no rule may make it)."""


def test_the_packaged_rules_implement_exactly_the_design_flow(ruleset):
    # when listing every (from, to) move the 16 rules can make
    moves = {(source, rule.to) for rule in ruleset.rules for source in rule.sources}
    # then they are the design's flow, nothing more and nothing less
    assert moves == DESIGN_FLOW
    assert sorted(rule.id for rule in ruleset.rules) == [f"R{i:02d}" for i in range(1, 17)]


def test_the_packaged_tags_are_the_six_of_the_design(ruleset):
    assert ruleset.tag_ids == [f"ST_00{i}" for i in range(1, 7)]
    assert ruleset.manual_tags == ["ST_005"]
    assert ruleset.terminal_tags == ["ST_006"]
    assert set(ruleset.cooldown_days) == set(LIVE)


def test_a_rules_directory_given_by_path_loads_like_the_packaged_one(
    rules_copy, ruleset, known_features
):
    # given a copy of the packaged files in another directory
    # when
    copied = with_casebook_points(load_ruleset(rules_copy, known_features=known_features))
    # then the content is the same, and the source says where it came from
    assert copied.rules == ruleset.rules
    assert copied.interventions == ruleset.interventions
    assert copied.source == str(rules_copy)


def test_without_the_score_columns_as_known_features_the_model_rules_are_refused(ruleset):
    # given only the catalog's names (the caller forgot the score columns)
    names = [name for name in ruleset.features_used if name not in ("p_churn", "confidence")]
    # when / then
    with pytest.raises(RulesError, match="unknown feature 'p_churn'"):
        load_ruleset(known_features=names)


def _select(node: object, step: object) -> object:
    if isinstance(step, dict):
        return next(item for item in node if item.get("id") == step["id"])
    return node[step]


def _parent_and_key(document: dict, path: list) -> tuple[object, object]:
    """The container of the node at ``path``, and the node's key or index in it."""
    node = document
    for step in path[:-1]:
        node = _select(node, step)
    last = path[-1]
    if isinstance(last, dict):
        return node, node.index(_select(node, last))
    return node, last


def _break(directory: Path, case: dict) -> None:
    """Apply one case's edit to the copy in ``directory``."""
    target = directory / case["file"]
    if case.get("remove_file"):
        target.unlink()
        return
    if "text" in case:
        target.write_text(case["text"], encoding="utf-8")
        return
    # A JSON round trip undoes YAML aliases, so an edit changes one rule and not its siblings.
    document = json.loads(json.dumps(yaml.safe_load(target.read_text(encoding="utf-8"))))
    if "set" in case:
        parent, key = _parent_and_key(document, case["set"]["path"])
        parent[key] = case["set"]["value"]
    for path in case.get("delete", []):
        parent, key = _parent_and_key(document, path)
        del parent[key]
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


@pytest.mark.parametrize("case", INVALID_CASES, ids=[case["name"] for case in INVALID_CASES])
def test_a_broken_rules_directory_fails_naming_file_rule_and_field(
    rules_copy, known_features, case
):
    # given a copy of the packaged rules with one thing broken
    _break(rules_copy, case)
    expected = case["error"]
    # when
    with pytest.raises(RulesError) as raised:
        load_ruleset(rules_copy, known_features=known_features)
    error = raised.value
    # then the error names the file, the rule id and the field, and says what is wrong
    assert Path(error.file).name == expected.get("file", case["file"])
    assert error.rule_id == expected["rule_id"]
    assert error.field == expected["field"]
    assert expected["message"] in error.message
    text = str(error)
    assert text.startswith(error.file)
    if error.rule_id is not None:
        assert f"rule {error.rule_id}" in text
    if error.field is not None:
        assert f"field {error.field}" in text


def test_the_invalid_cases_cover_every_required_error_kind():
    # given the messages the invalid cases expect
    messages = " | ".join(case["error"]["message"] for case in INVALID_CASES)
    # then every kind the loader must reject is exercised
    for fragment in (
        "unknown feature",
        "unknown tag",
        "cannot be reached",
        "entered by hand only",
        "is terminal: no rule may leave it",
        "used by two rules",
        "Input should be '<'",  # bad op
        "needs a value",
        "needs a number",
    ):
        assert fragment in messages, fragment


def test_operating_points_resolve_to_the_models_numbers(known_features):
    # given the packaged rules, which name @early_warning (R05) and @recovered (R07, R08)
    raw = load_ruleset(known_features=known_features)
    assert [(rule_id, leaf.value) for rule_id, _, leaf in raw.references] == [
        ("R05", "@early_warning"),
        ("R07", "@recovered"),
        ("R08", "@recovered"),
        ("R13", "@early_warning"),  # R13 reuses R05's condition
    ]

    # when resolved against a model's points
    resolved = raw.with_operating_points({"early_warning": 0.42, "recovered": 0.07}, "v3")

    # then the leaves hold the numbers and nothing else changed
    assert resolved.references == []
    assert resolved.rule("R05").condition.all[0].value == 0.42
    assert resolved.rule("R07").condition.all[1].value == 0.07
    assert resolved.rule("R04") == raw.rule("R04")


def test_a_champion_without_an_operating_point_a_rule_uses_is_an_error(known_features):
    # given the packaged rules and a champion that records only early_warning
    raw = load_ruleset(known_features=known_features)

    # when / then the error names the rule, the point, what the champion records and the way out
    with pytest.raises(RulesError) as raised:
        raw.with_operating_points({"early_warning": 0.4}, "models:/lstep-churn@champion (v2)")
    assert raised.value.rule_id == "R07"
    assert "'@recovered', which models:/lstep-churn@champion (v2) does not record" in str(
        raised.value
    )
    assert "(it records: @early_warning)" in str(raised.value)
    assert "--rules-only" in str(raised.value)
