"""The transition graph of a rule set: as Mermaid text (shown by ``lstep rules check``), and the
campaign triggers no path through it can fire."""

from __future__ import annotations

from rules.campaigns import StateTrigger, TransitionTrigger
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


def unreachable_triggers(ruleset: RuleSet) -> list[str]:
    """The campaigns whose trigger no rule (or manual move, or priority) can produce, in words.

    A transition trigger needs a rule from one of its sources (any, when none is given) into its
    tag; a state trigger needs a reachable tag (``new`` or a manual entry reaches it through the
    rules) and, when it names a priority, a product tier that the interventions (synergy row,
    tag default, escalation, or the capacity's overflow) can give that priority in that tag.
    """
    problems = []
    for campaign in ruleset.campaigns.campaigns:
        trigger = campaign.trigger
        if isinstance(trigger, TransitionTrigger):
            sources = set(trigger.sources)
            moves = [
                rule
                for rule in ruleset.rules
                if rule.to == trigger.into and (not sources or sources & set(rule.sources))
            ]
            if not moves:
                which = f" from {', '.join(trigger.sources)}" if trigger.sources else ""
                problems.append(
                    f"{campaign.id} ({campaign.name}): no rule moves a learner into "
                    f"{trigger.into}{which}"
                )
        elif trigger.tag not in _reachable_tags(ruleset):
            problems.append(f"{campaign.id} ({campaign.name}): no rule reaches {trigger.tag}")
        elif trigger.priority is not None and not _priority_possible(ruleset, trigger):
            problems.append(
                f"{campaign.id} ({campaign.name}): the interventions never give priority "
                f"{trigger.priority} in {trigger.tag}"
                + (f" to {trigger.product_tag}" if trigger.product_tag else "")
            )
    return problems


def _reachable_tags(ruleset: RuleSet) -> set[str]:
    reached = {NEW, *ruleset.manual_tags}
    frontier = set(reached)
    while frontier:
        frontier = {rule.to for rule in ruleset.rules if set(rule.sources) & frontier} - reached
        reached |= frontier
    return reached


def _priority_possible(ruleset: RuleSet, trigger: StateTrigger) -> bool:
    interventions = ruleset.interventions
    products = [trigger.product_tag] if trigger.product_tag else interventions.product_tags
    personal = interventions.personal_priorities()
    for product in products:
        own = interventions.lookup(product, trigger.tag).priority
        possible = {own}
        if own in personal and trigger.tag in interventions.capacity.automated_actions:
            possible.add(interventions.capacity.overflow_priority)
        if trigger.priority in possible:
            return True
    return False
