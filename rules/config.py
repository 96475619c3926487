"""The rules as data: pydantic models for the three YAML files (``rules.loading`` loads them).

A rules directory holds ``tags.yaml`` (the status tags and cooldowns), ``transitions.yaml`` (the
rules R01..R15, in precedence order) and ``interventions.yaml`` (priorities, synergy matrix,
value weights, control share), and optionally ``behaviours.yaml`` (behaviour tags BT_001..,
``rules.behaviours``) and ``campaigns.yaml`` with ``templates/`` (the campaign catalogue,
``rules.campaigns``). The packaged directory is ``rules/`` itself; ``--rules DIR`` points
to another one with the same three files.

Everything is checked at load (``rules.loading.load_ruleset``), so that a bad edit fails at
start-up and not in the nightly batch:
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

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from rules.behaviours import Behaviour, behaviour_features
from rules.campaigns import Catalogue
from rules.conditions import (
    Condition,
    Leaf,
    iter_leaves,
    resolve_references,
)
from rules.errors import RulesError
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
            field, message = pydantic_message(error)
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


def format_loc(loc: Iterable[int | str]) -> str:
    """Render a pydantic error location as ``tags[2].entry``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def pydantic_message(error: PydanticValidationError) -> tuple[str, str]:
    """The field and message of the first error, without pydantic's 'Value error, ' prefix."""
    first = error.errors()[0]
    return format_loc(first["loc"]), first["msg"].removeprefix("Value error, ")
