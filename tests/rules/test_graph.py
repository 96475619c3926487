"""Tests for rules.graph: the Mermaid text of the transition graph."""

from __future__ import annotations

import re

from rules.graph import mermaid


def test_the_graph_has_a_node_per_tag_and_labels_edges_with_rule_ids(ruleset):
    # when
    text = mermaid(ruleset)
    edges = re.findall(r"^\s+(\w+) -->\|\"([^\"]+)\"\| (\w+)$", text, flags=re.MULTILINE)
    # then it is a flowchart with every tag as a node
    assert text.startswith("flowchart TD\n")
    for tag in ruleset.tags:
        assert f"{tag.id} {tag.name}" in text
    # and the moves of the design carry the ids of the rules that make them
    labelled = {(source, target): ids for source, ids, target in edges}
    assert labelled[("ST_004", "ST_001")] == "R07"
    assert labelled[("ST_001", "ST_004")] == "R06, R04, R05"
    assert labelled[("ST_005", "ST_006")] == "R09, R10"
    assert labelled[("new", "ST_001")] == "R01"
    assert labelled[("ST_005", "ST_004")] == "R16"
    assert {rule_id for _, ids, _ in edges for rule_id in ids.split(", ")} == {
        f"R{i:02d}" for i in range(1, 17)
    }
    assert ("ST_006", "ST_001") not in labelled


def test_st005_is_entered_only_by_a_dotted_manual_edge_from_st004(ruleset):
    text = mermaid(ruleset)
    manual = re.findall(r"^\s+(\w+) -\.->\|\"([^\"]+)\"\| ST_005$", text, flags=re.MULTILINE)
    assert manual == [("ST_004", "CS campaign, 14-28 days")]
    assert not re.search(r"-->\|\"[^\"]+\"\| ST_005$", text, flags=re.MULTILINE)
