"""The transition graph of a rule set as Mermaid text (shown by ``lstep rules check``)."""

from __future__ import annotations

from rules.config import NEW, RuleSet

OVERRIDE_NODE = "override"
"""The pseudo node from which CS overrides enter manual-entry tags."""


def mermaid(ruleset: RuleSet) -> str:
    """Render the rules as a Mermaid flowchart.

    Nodes are the tags (a stadium for ``new``, a cylinder for terminal tags); one edge per
    (from, to) pair, labelled with the ids of the rules that make that move, in file order.
    Manual-entry tags get a dotted edge from a "CS override" node.
    """
    lines = ["flowchart TD", f'    {NEW}(["new learner"])']
    for tag in ruleset.tags:
        label = f"{tag.id} {tag.name}"
        if tag.terminal:
            lines.append(f'    {tag.id}[("{label}")]')
        elif tag.entry == "manual":
            lines.append(f'    {tag.id}["{label} (manual entry)"]')
        else:
            lines.append(f'    {tag.id}["{label}"]')
    edges: dict[tuple[str, str], list[str]] = {}
    for rule in ruleset.rules:
        for source in rule.sources:
            edges.setdefault((source, rule.to), []).append(rule.id)
    for (source, target), rule_ids in edges.items():
        lines.append(f'    {source} -->|"{", ".join(rule_ids)}"| {target}')
    if ruleset.manual_tags:
        lines.append(f'    {OVERRIDE_NODE}{{{{"CS override"}}}}')
        lines.extend(f"    {OVERRIDE_NODE} -.->|manual| {tag}" for tag in ruleset.manual_tags)
    return "\n".join(lines) + "\n"
