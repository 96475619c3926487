"""The transition graph of a rule set as Mermaid text (shown by ``lstep rules check``)."""

from __future__ import annotations

from rules.config import NEW, RuleSet


def mermaid(ruleset: RuleSet) -> str:
    """Render the rules as a Mermaid flowchart.

    Nodes are the tags (a stadium for ``new``, a cylinder for terminal tags); one edge per
    (from, to) pair, labelled with the ids of the rules that make that move, in file order.
    A manual-entry tag (ST_005, the retention campaign) gets a dotted edge from each tag a person
    may move a learner from (``manual_from``), labelled with the campaign's time box.
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
    box = ruleset.campaign
    label = f"CS campaign, {box.min_days}-{box.max_days} days"
    for tag in ruleset.manual_tags:
        lines.extend(
            f'    {source} -.->|"{label}"| {tag}' for source in ruleset.manual_sources(tag)
        )
    return "\n".join(lines) + "\n"
