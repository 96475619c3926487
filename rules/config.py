"""The rules as data: pydantic models for the three YAML files, and the validating loader.

A rules directory holds ``tags.yaml`` (the status tags and cooldowns), ``transitions.yaml`` (the
rules R01..R15, in precedence order) and ``interventions.yaml`` (priorities, synergy matrix,
value weights, control share), and optionally ``behaviours.yaml`` (behaviour tags BT_001..,
``rules.behaviours``) and ``campaigns.yaml`` with ``templates/`` (the campaign catalogue,
``rules.campaigns``). The packaged directory is ``rules/`` itself; ``--rules DIR`` points
to another one with the same three files.

Everything is checked at load, so that a bad edit fails at start-up and not in the nightly batch:
unknown features and tags, tags nothing can reach, automatic rules into a manual-entry tag, rules
out of a terminal tag, duplicate ids, malformed conditions and unknown operating points (a leaf
value ``"@name"`` must be one of ``OPERATING_POINTS``, on a probability). Each error is a
:class:`RulesError` naming the file, the rule id (when there is one) and the field.

Operating points are numbers only a model knows: ``RuleSet.with_operating_points`` resolves them
against the champion's (``ChurnModel.operating_points``), and a champion that lacks one a rule
uses is an error naming the rule and the point, never a silent fallback to some other threshold.
Without a champion (rules-only) they stay unresolved and their leaves are false, as every
comparison with the absent ``p_churn`` is (``rules.conditions``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from rules.behaviours import Behaviour, behaviour_features, load_behaviours
from rules.campaigns import Catalogue, Vocabulary, load_campaigns
from rules.conditions import (
    Condition,
    ConditionError,
    Leaf,
    iter_leaves,
    parse_condition,
    resolve_references,
)
from rules.errors import RulesError
from rules.intervention_checks import check_interventions
from rules.interventions import Interventions

TAGS_FILE = "tags.yaml"
TRANSITIONS_FILE = "transitions.yaml"
INTERVENTIONS_FILE = "interventions.yaml"
NEW = "new"
"""The pseudo source tag of a learner the state store has never seen."""

MODEL_SCORE_COLUMNS: frozenset[str] = frozenset({"p_churn", "p_low", "p_high", "confidence"})
"""Score columns: leaves on them are the model side of the blend, all others the rules side."""

OPERATING_POINTS: frozenset[str] = frozenset({"early_warning", "recovered"})
"""Named thresholds a leaf may use as its value (``"@early_warning"``): what training chooses on
its calibration slice and saves with each model version (``training.early_warning``)."""
REFERENCE_SCORES: frozenset[str] = frozenset({"p_churn", "p_low", "p_high"})
"""The probabilities an operating point is a threshold on (not ``confidence``)."""

STATE_COLUMNS: frozenset[str] = frozenset({"campaign_active"})
"""Columns the engine derives from the stored state, which a condition may read like features.

``campaign_active``: the learner's retention campaign (an ST_005 override of kind ``campaign``)
is running on the decision day; false once its box ended or it was cleared."""

Signal = Literal["fact", "rules", "model", "both"]


class TagSpec(BaseModel):
    """One status tag."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^ST_\d{3}$")
    name: str = Field(min_length=1)
    entry: Literal["auto", "manual"]
    terminal: bool = False
    typical_duration: str
    description: str
    manual_from: tuple[str, ...] = ()


class CampaignBox(BaseModel):
    """How long a retention campaign (the manual-entry tag) runs: a default within bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_days: int = Field(ge=1)
    min_days: int = Field(ge=1)
    max_days: int = Field(ge=1)

    @model_validator(mode="after")
    def _default_within_bounds(self) -> CampaignBox:
        if not self.min_days <= self.default_days <= self.max_days:
            raise ValueError(
                f"default_days {self.default_days} is not within min_days {self.min_days} .. "
                f"max_days {self.max_days}"
            )
        return self


class TagsFile(BaseModel):
    """The content of ``tags.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tags: tuple[TagSpec, ...] = Field(min_length=1)
    cooldown_days: dict[str, Annotated[int, Field(ge=0)]]
    campaign: CampaignBox


class Rule(BaseModel):
    """One transition rule: from some tags (or ``new``) to a tag when the condition holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^R\d{2}$")
    sources: tuple[str, ...] = Field(alias="from", min_length=1)
    to: str
    description: str = Field(min_length=1)
    signal: Signal
    condition: Condition

    @field_validator("sources", mode="before")
    @classmethod
    def _single_source_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line: the audit log quotes it")
        return value


class RuleSet(BaseModel):
    """A validated rules directory: tags, cooldowns, rules in precedence order, interventions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    tags: tuple[TagSpec, ...]
    cooldown_days: dict[str, int]
    campaign: CampaignBox
    rules: tuple[Rule, ...]
    interventions: Interventions
    behaviours: tuple[Behaviour, ...] = ()
    """Behaviour tags BT_001.. (``behaviours.yaml``; none when the directory has no such file)."""
    campaigns: Catalogue = Catalogue()
    """The campaign catalogue (``campaigns.yaml``; empty when the directory has no such file)."""

    @property
    def behaviour_features(self) -> list[str]:
        """Every column a behaviour tag reads, sorted (read where present, null where not)."""
        return behaviour_features(self.behaviours)

    @property
    def tag_ids(self) -> list[str]:
        """Tag ids in file order."""
        return [tag.id for tag in self.tags]

    @property
    def terminal_tags(self) -> list[str]:
        """Tags no rule leaves (ST_006)."""
        return [tag.id for tag in self.tags if tag.terminal]

    @property
    def manual_tags(self) -> list[str]:
        """Tags only a CS override can enter (ST_005)."""
        return [tag.id for tag in self.tags if tag.entry == "manual"]

    def manual_sources(self, tag_id: str) -> tuple[str, ...]:
        """The tags a person may move a learner from into ``tag_id`` (``manual_from``)."""
        return next(tag.manual_from for tag in self.tags if tag.id == tag_id)

    @property
    def features_used(self) -> list[str]:
        """Every column a condition reads from the scored frame, sorted (not STATE_COLUMNS)."""
        return sorted(
            {leaf.feature for rule in self.rules for _, leaf in iter_leaves(rule.condition)}
            - STATE_COLUMNS
        )

    @property
    def string_features(self) -> list[str]:
        """Columns that conditions compare with strings (all others are read as numbers)."""
        return sorted(
            {
                leaf.feature
                for rule in self.rules
                for _, leaf in iter_leaves(rule.condition)
                if leaf.compares_strings
            }
        )

    @property
    def references(self) -> list[tuple[str, str, Leaf]]:
        """(rule id, leaf path, leaf) of every leaf naming an operating point, in file order."""
        return [
            (rule.id, path, leaf)
            for rule in self.rules
            for path, leaf in iter_leaves(rule.condition)
            if leaf.reference is not None
        ]

    def with_operating_points(self, points: Mapping[str, float], source: str) -> RuleSet:
        """These rules with each ``@name`` replaced by the model's threshold of that name.

        Args:
            points: the champion's operating points (``ChurnModel.operating_points``).
            source: what holds them, for the error (``models:/lstep-churn@champion (v3)``).

        Raises:
            RulesError: naming the rule and the operating point that ``points`` lacks.
        """
        for rule_id, path, leaf in self.references:
            if leaf.reference not in points:
                held = ", ".join(f"@{name}" for name in sorted(points)) or "none"
                raise RulesError(
                    self.source,
                    f"uses the operating point '@{leaf.reference}', which {source} does not "
                    f"record (it records: {held}); train a model with `lstep train`, or decide "
                    "on the rules alone (--rules-only)",
                    rule_id=rule_id,
                    field=f"{path}.value",
                )
        rules = tuple(
            rule.model_copy(update={"condition": resolve_references(rule.condition, points)})
            for rule in self.rules
        )
        return self.model_copy(update={"rules": rules})

    def with_lifetime(self, **changes: Any) -> RuleSet:
        """These rules with the lifetime projection's settings changed (validated): the apps
        set the champion's label window (``score_horizon_days``) and its ``@recovered`` point
        (``healthy_p_churn``), recorded with it, over the YAML's fallbacks.

        Raises:
            RulesError: a value the ``lifetime`` settings refuse, named.
        """
        current = self.interventions.lifetime
        try:
            lifetime = type(current).model_validate(current.model_dump() | changes)
        except PydanticValidationError as error:
            field, message = _pydantic_message(error)
            raise RulesError(
                self.source,
                f"the champion's lifetime setting is refused: {message}",
                field=f"lifetime.{field}",
            ) from None
        interventions = self.interventions.model_copy(update={"lifetime": lifetime})
        return self.model_copy(update={"interventions": interventions})

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id.

        Raises:
            KeyError: naming the known ids.
        """
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r}; the rules are {[r.id for r in self.rules]}")


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


def _format_loc(loc: Iterable[int | str]) -> str:
    """Render a pydantic error location as ``tags[2].entry``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_message(error: PydanticValidationError) -> tuple[str, str]:
    """The field and message of the first error, without pydantic's 'Value error, ' prefix."""
    first = error.errors()[0]
    return _format_loc(first["loc"]), first["msg"].removeprefix("Value error, ")


def _load_tags(directory: Traversable | Path) -> tuple[str, TagsFile]:
    """Parse tags.yaml and check that tag ids are unique."""
    file, content = _read_yaml(directory, TAGS_FILE)
    try:
        tags = TagsFile.model_validate(content)
    except PydanticValidationError as error:
        field, message = _pydantic_message(error)
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
        field, message = _pydantic_message(error)
        raise RulesError(file, message, rule_id=rule_id, field=field) from None


def _load_interventions(directory: Traversable | Path) -> tuple[str, Interventions]:
    """Parse interventions.yaml (cross-checks against the tags come later)."""
    file, content = _read_yaml(directory, INTERVENTIONS_FILE)
    try:
        return file, Interventions.model_validate(content)
    except PydanticValidationError as error:
        field, message = _pydantic_message(error)
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
