"""The status-tag constants agree with rules/tags.yaml, the source of truth."""

from __future__ import annotations

from serving.core.tags import CHURNED_TAG, MANUAL_ONLY_TAG, STATUS_TAGS


def test_status_tags_are_the_rules_tags_with_their_names(ruleset):
    assert {tag.id: tag.name for tag in ruleset.tags} == STATUS_TAGS


def test_the_churned_and_manual_tags_are_what_the_rules_say(ruleset):
    terminal = [tag.id for tag in ruleset.tags if tag.terminal]
    manual = [tag.id for tag in ruleset.tags if tag.entry == "manual"]
    assert terminal == [CHURNED_TAG] and manual == [MANUAL_ONLY_TAG]
