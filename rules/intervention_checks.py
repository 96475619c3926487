"""Cross-checks of ``interventions.yaml`` against the status tags, run by the loader at start-up."""

from __future__ import annotations

from rules.errors import RulesError
from rules.interventions import Interventions


def check_interventions(interventions: Interventions, tag_ids: list[str], file: str) -> None:
    """Check interventions.yaml against the tags (``tag_ids``) and itself.

    Synergy rows and defaults name known tags, products and priorities, with one default per tag;
    escalations have unique ids and name known products, tags and priorities; the capacity's
    overflow priority is known and not the first, and every tag a learner can have a personal
    priority in has an automated action to fall back on.

    Raises:
        RulesError: naming ``file``, the escalation id (for an escalation) and the field.
    """
    products = interventions.product_tags
    priorities = interventions.priority_order
    pairs: set[tuple[str, str]] = set()
    for index, row in enumerate(interventions.synergy):
        field = f"synergy[{index}]"
        _require(row.status_tag, tag_ids, "status tag", file, f"{field}.status_tag")
        _require(row.product_tag, products, "product tag", file, f"{field}.product_tag")
        _require(row.priority, priorities, "priority", file, f"{field}.priority")
        if (row.product_tag, row.status_tag) in pairs:
            raise RulesError(
                file, f"{row.product_tag} x {row.status_tag} is listed twice", field=field
            )
        pairs.add((row.product_tag, row.status_tag))
    for tag_id, default in interventions.defaults.items():
        _require(tag_id, tag_ids, "status tag", file, f"defaults.{tag_id}")
        _require(default.priority, priorities, "priority", file, f"defaults.{tag_id}.priority")
    missing = [tag_id for tag_id in tag_ids if tag_id not in interventions.defaults]
    if missing:
        raise RulesError(file, f"no default priority and action for {missing}", field="defaults")
    _check_escalations(interventions, tag_ids, file)
    _check_capacity(interventions, tag_ids, file)


def _check_escalations(interventions: Interventions, tag_ids: list[str], file: str) -> None:
    """Escalations have unique ids and name known products, tags and priorities."""
    seen: set[str] = set()
    for index, escalation in enumerate(interventions.escalations):
        field, rule_id = f"escalations[{index}]", escalation.id
        if rule_id in seen:
            raise RulesError(file, "this id is used twice", rule_id=rule_id, field=f"{field}.id")
        seen.add(rule_id)
        checks = [
            (escalation.product_tag, interventions.product_tags, "product tag", "product_tag"),
            (escalation.priority, interventions.priority_order, "priority", "priority"),
        ]
        checks += [
            (tag, tag_ids, "status tag", f"status_tags[{i}]")
            for i, tag in enumerate(escalation.status_tags)
        ]
        for value, allowed, what, name in checks:
            if value not in allowed:
                raise RulesError(
                    file,
                    f"unknown {what} {value!r}; known: {', '.join(allowed)}",
                    rule_id=rule_id,
                    field=f"{field}.{name}",
                )


def _check_capacity(interventions: Interventions, tag_ids: list[str], file: str) -> None:
    """A known overflow priority after P1, and an automated action for every tag that needs one."""
    capacity = interventions.capacity
    if capacity is None:
        return
    priorities = interventions.priority_order
    _require(capacity.overflow_priority, priorities, "priority", file, "capacity.overflow_priority")
    if capacity.overflow_priority == priorities[0]:
        raise RulesError(
            file,
            f"{priorities[0]} is the most urgent priority: the overflow goes to a later one",
            field="capacity.overflow_priority",
        )
    for tag_id in capacity.automated_actions:
        _require(tag_id, tag_ids, "status tag", file, f"capacity.automated_actions.{tag_id}")
    personal = interventions.personal_priorities()
    needed = {
        tag_id
        for product in interventions.product_tags
        for tag_id in tag_ids
        if interventions.lookup(product, tag_id).priority in personal
    }
    missing = sorted(needed - set(capacity.automated_actions))
    if missing:
        raise RulesError(
            file,
            f"no automated action for {missing}: learners of these tags can have a personal "
            f"priority ({', '.join(personal)}) and move to {capacity.overflow_priority} when "
            "the day is over capacity",
            field="capacity.automated_actions",
        )


def _require(value: str, allowed: list[str], what: str, file: str, field: str) -> None:
    """Raise a RulesError when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        known = ", ".join(allowed)
        raise RulesError(file, f"unknown {what} {value!r}; known: {known}", field=field)


__all__ = ["check_interventions"]
