"""Loading a rules directory (``tags.yaml``, ``transitions.yaml``, ``interventions.yaml``,
``behaviours.yaml``, ``campaigns.yaml``) into a ``RuleSet``, and the checks across its files:
every error names the file, the entry and what is wrong (``RulesError``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml
from pydantic import ValidationError as PydanticValidationError

from rules.behaviours import load_behaviours
from rules.campaigns import Vocabulary, load_campaigns
from rules.conditions import (
    ConditionError,
    iter_leaves,
    parse_condition,
)
from rules.config import (
    INTERVENTIONS_FILE,
    MODEL_SCORE_COLUMNS,
    NEW,
    OPERATING_POINTS,
    REFERENCE_SCORES,
    STATE_COLUMNS,
    TAGS_FILE,
    TRANSITIONS_FILE,
    Rule,
    RuleSet,
    TagsFile,
    TagSpec,
    pydantic_message,
)
from rules.errors import RulesError
from rules.intervention_checks import check_interventions
from rules.interventions import Interventions

# --- loading -------------------------------------------------------------------------------------


def load_ruleset(rules_dir: Path | str | None = None, *, known_features: Iterable[str]) -> RuleSet:
    """Load and validate a rules directory.

    Args:
        rules_dir: a directory with the three YAML files; None for the packaged rules.
        known_features: every column a condition may read: the feature catalog's names plus the
            score columns (p_churn, p_low, p_high, confidence).

    Raises:
        RulesError: naming the file, rule id and field of the first problem found.
    """
    directory = resources.files("rules") if rules_dir is None else Path(rules_dir)
    known_features = set(known_features)  # read twice: the rules', then the behaviours' check
    tags_file, tags = _load_tags(directory)
    _check_cooldowns(tags, tags_file)
    _check_manual_moves(tags, tags_file)
    rules_file, rules = _load_rules(directory)
    interventions_file, interventions = _load_interventions(directory)
    _check_rule_tags(rules, tags, rules_file)
    _check_features(rules, known_features | STATE_COLUMNS, rules_file)
    _check_operating_points(rules, rules_file)
    _check_signals(rules, rules_file)
    _check_reachable(rules, tags.tags, rules_file)
    check_interventions(interventions, [tag.id for tag in tags.tags], interventions_file)
    behaviours = load_behaviours(directory, known_features, _read_yaml)
    vocabulary = Vocabulary(
        tags=[tag.id for tag in tags.tags],
        products=interventions.product_tags,
        priorities=interventions.priority_order,
        behaviours=[behaviour.id for behaviour in behaviours],
    )
    return RuleSet(
        source=str(directory),
        tags=tags.tags,
        cooldown_days=tags.cooldown_days,
        campaign=tags.campaign,
        rules=rules,
        interventions=interventions,
        behaviours=behaviours,
        campaigns=load_campaigns(directory, vocabulary, _read_yaml),
    )


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(directory: Traversable | Path, name: str) -> tuple[str, dict]:
    """Read one YAML file of the directory as a mapping; return its path and content."""
    path = directory / name
    file = str(path)
    if not path.is_file():
        raise RulesError(
            file,
            f"not found: a rules directory needs {TAGS_FILE}, {TRANSITIONS_FILE} and "
            f"{INTERVENTIONS_FILE}",
        )
    try:
        # libyaml's loader when PyYAML has it: the pure-Python one takes ~0.3 s for the packaged
        # rules, a fifth of an interactive `lstep explain`; both load the same safe subset.
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())  # one line: pyyaml's message spans several
        raise RulesError(file, f"not valid YAML: {problem}") from None
    if not isinstance(content, dict):
        raise RulesError(file, f"expected a mapping at the top, got {type(content).__name__}")
    return file, content


def _load_tags(directory: Traversable | Path) -> tuple[str, TagsFile]:
    """Parse tags.yaml and check that tag ids are unique."""
    file, content = _read_yaml(directory, TAGS_FILE)
    try:
        tags = TagsFile.model_validate(content)
    except PydanticValidationError as error:
        field, message = pydantic_message(error)
        raise RulesError(file, message, field=field) from None
    seen: set[str] = set()
    for index, tag in enumerate(tags.tags):
        if tag.id in seen:
            raise RulesError(file, f"tag {tag.id} is listed twice", field=f"tags[{index}].id")
        seen.add(tag.id)
    return file, tags


def _load_rules(directory: Traversable | Path) -> tuple[str, tuple[Rule, ...]]:
    """Parse transitions.yaml into rules, in file order, with unique ids."""
    file, content = _read_yaml(directory, TRANSITIONS_FILE)
    raw_rules = content.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulesError(file, "expected a non-empty list of rules", field="rules")
    extra = sorted(set(content) - {"rules"})
    if extra:
        raise RulesError(file, f"unknown top-level keys {extra}", field=extra[0])
    rules = tuple(_parse_rule(raw, index, file) for index, raw in enumerate(raw_rules))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RulesError(file, "this id is used by two rules", rule_id=rule.id, field="id")
        seen.add(rule.id)
    return file, rules


def _parse_rule(raw: object, index: int, file: str) -> Rule:
    """Validate one raw rule, its condition tree included."""
    if not isinstance(raw, dict):
        raise RulesError(file, f"expected a mapping, got {raw!r}", field=f"rules[{index}]")
    rule_id = str(raw.get("id", f"#{index + 1}"))
    fields = dict(raw)
    if "condition" in fields:
        try:
            fields["condition"] = parse_condition(fields["condition"])
        except ConditionError as error:
            raise RulesError(file, error.message, rule_id=rule_id, field=error.path) from None
    try:
        return Rule.model_validate(fields)
    except PydanticValidationError as error:
        field, message = pydantic_message(error)
        raise RulesError(file, message, rule_id=rule_id, field=field) from None


def _load_interventions(directory: Traversable | Path) -> tuple[str, Interventions]:
    """Parse interventions.yaml (cross-checks against the tags come later)."""
    file, content = _read_yaml(directory, INTERVENTIONS_FILE)
    try:
        return file, Interventions.model_validate(content)
    except PydanticValidationError as error:
        field, message = pydantic_message(error)
        raise RulesError(
            file, message, rule_id=_escalation_id(content, error), field=field
        ) from None


def _escalation_id(content: dict, error: PydanticValidationError) -> str | None:
    """The id of the escalation an error is in (``#n`` when it has none), else None."""
    loc = error.errors()[0]["loc"]
    if len(loc) < 2 or loc[0] != "escalations" or not isinstance(loc[1], int):
        return None
    raw = content["escalations"][loc[1]]
    has_id = isinstance(raw, dict) and raw.get("id") is not None
    return str(raw["id"]) if has_id else f"#{loc[1] + 1}"


def _check_rule_tags(rules: tuple[Rule, ...], tags: TagsFile, file: str) -> None:
    """Every from/to is a known tag; no rule into a manual tag, out of a terminal one, or a loop."""
    by_id = {tag.id: tag for tag in tags.tags}
    known = f"known tags: {', '.join(by_id)} (and '{NEW}' as a source)"
    for rule in rules:
        for index, source in enumerate(rule.sources):
            if source != NEW and source not in by_id:
                raise RulesError(
                    file,
                    f"unknown tag {source!r}; {known}",
                    rule_id=rule.id,
                    field=f"from[{index}]",
                )
            if source in by_id and by_id[source].terminal:
                raise RulesError(
                    file,
                    f"{source} is terminal: no rule may leave it",
                    rule_id=rule.id,
                    field=f"from[{index}]",
                )
            if source == rule.to:
                raise RulesError(
                    file,
                    f"a rule must move to another tag, not {source} -> {source}",
                    rule_id=rule.id,
                    field=f"from[{index}]",
                )
        if rule.to not in by_id:
            raise RulesError(file, f"unknown tag {rule.to!r}; {known}", rule_id=rule.id, field="to")
        if by_id[rule.to].entry == "manual":
            raise RulesError(
                file,
                f"{rule.to} is entered by hand only (a CS override): an "
                "automatic rule may not move into it",
                rule_id=rule.id,
                field="to",
            )


def _check_features(rules: tuple[Rule, ...], known_features: set[str], file: str) -> None:
    """Every leaf reads a known column, and each column is compared with one kind of value."""
    kinds: dict[str, tuple[bool, str]] = {}
    for rule in rules:
        for path, leaf in iter_leaves(rule.condition):
            if leaf.feature not in known_features:
                close = difflib.get_close_matches(leaf.feature, sorted(known_features), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise RulesError(
                    file,
                    f"unknown feature {leaf.feature!r}{hint}",
                    rule_id=rule.id,
                    field=f"{path}.feature",
                )
            if leaf.op in ("is_null", "not_null"):
                continue
            earlier = kinds.setdefault(leaf.feature, (leaf.compares_strings, rule.id))
            if earlier[0] != leaf.compares_strings:
                raise RulesError(
                    file,
                    f"{leaf.feature!r} is compared with a "
                    f"{'string' if leaf.compares_strings else 'number'} here but not "
                    f"in rule {earlier[1]}",
                    rule_id=rule.id,
                    field=f"{path}.value",
                )


def _check_operating_points(rules: tuple[Rule, ...], file: str) -> None:
    """Every ``@name`` is a known operating point, on a probability column."""
    known = ", ".join(f"@{name}" for name in sorted(OPERATING_POINTS))
    for rule in rules:
        for path, leaf in iter_leaves(rule.condition):
            if leaf.reference is None:
                continue
            if leaf.reference not in OPERATING_POINTS:
                raise RulesError(
                    file,
                    f"unknown operating point '@{leaf.reference}'; known: {known}",
                    rule_id=rule.id,
                    field=f"{path}.value",
                )
            if leaf.feature not in REFERENCE_SCORES:
                raise RulesError(
                    file,
                    f"an operating point is a threshold on {', '.join(sorted(REFERENCE_SCORES))}, "
                    f"not on {leaf.feature!r}",
                    rule_id=rule.id,
                    field=f"{path}.value",
                )


def _check_signals(rules: tuple[Rule, ...], file: str) -> None:
    """The declared signal matches the columns the condition reads."""
    for rule in rules:
        features = {leaf.feature for _, leaf in iter_leaves(rule.condition)}
        reads_model = bool(features & MODEL_SCORE_COLUMNS)
        reads_rules = bool(features - MODEL_SCORE_COLUMNS)
        expected = {
            "fact": not reads_model,
            "rules": reads_rules and not reads_model,
            "model": reads_model and not reads_rules,
            "both": reads_model and reads_rules,
        }[rule.signal]
        if not expected:
            raise RulesError(
                file,
                f"signal '{rule.signal}' does not match the condition, which reads "
                f"{'model scores' if reads_model else 'no model score'} and "
                f"{'rule features' if reads_rules else 'no rule feature'} "
                f"(model scores: {', '.join(sorted(MODEL_SCORE_COLUMNS))})",
                rule_id=rule.id,
                field="signal",
            )


def _check_reachable(rules: tuple[Rule, ...], tags: tuple[TagSpec, ...], file: str) -> None:
    """Every tag can be reached from 'new' by rules, or entered by hand (manual tags)."""
    reached = {NEW} | {tag.id for tag in tags if tag.entry == "manual"}
    frontier = set(reached)
    while frontier:
        frontier = {r.to for r in rules if set(r.sources) & frontier} - reached
        reached |= frontier
    for tag in tags:
        if tag.id not in reached:
            raise RulesError(
                file,
                f"tag {tag.id} ({tag.name}) cannot be reached: no chain of rules from '{NEW}' "
                "moves into it",
                field="to",
            )


def _check_cooldowns(tags: TagsFile, file: str) -> None:
    """One cooldown per tag a rule can leave: every non-terminal tag, and nothing else."""
    by_id = {tag.id: tag for tag in tags.tags}
    for tag_id in tags.cooldown_days:
        if tag_id not in by_id:
            raise RulesError(
                file,
                f"unknown tag {tag_id!r}; known: {', '.join(by_id)}",
                field=f"cooldown_days.{tag_id}",
            )
        if by_id[tag_id].terminal:
            raise RulesError(
                file,
                f"{tag_id} is terminal: nothing leaves it, so no cooldown",
                field=f"cooldown_days.{tag_id}",
            )
    missing = [t.id for t in tags.tags if not t.terminal and t.id not in tags.cooldown_days]
    if missing:
        raise RulesError(
            file, f"no cooldown for {missing} (write 0 for none)", field="cooldown_days"
        )


def _check_manual_moves(tags: TagsFile, file: str) -> None:
    """``manual_from`` names other known tags; a manual-entry tag has some; the box fits."""
    known = [tag.id for tag in tags.tags]
    for index, tag in enumerate(tags.tags):
        field = f"tags[{index}].manual_from"
        for source in tag.manual_from:
            if source not in known:
                raise RulesError(
                    file, f"unknown tag {source!r}; known: {', '.join(known)}", field=field
                )
            if source == tag.id:
                raise RulesError(file, f"{tag.id} lists itself: a hold keeps a tag", field=field)
        if tag.entry == "manual" and not tag.manual_from:
            raise RulesError(
                file, f"{tag.id} is entered by hand only, but from no tag", field=field
            )
    for tag in tags.tags:
        cooldown = tags.cooldown_days.get(tag.id, 0)
        if tag.entry == "manual" and cooldown >= tags.campaign.min_days:
            raise RulesError(
                file,
                f"the {tag.id} cooldown ({cooldown} days) must be shorter than the shortest "
                f"campaign ({tags.campaign.min_days} days), or the exit rules could never run",
                field=f"cooldown_days.{tag.id}",
            )


__all__ = ["load_ruleset"]
