"""The campaign catalogue as data (``campaigns.yaml``) and its templates.

A campaign (CP_01..CP_24) is what a decision sets in motion: a trigger (a transition into a tag,
or the day's tag x product x priority, either optionally for a behaviour tag), a channel and a
template, a cadence (steps with delays), a frequency cap per learner, an exit condition and
optional A/B variants. Each decision maps to at most one campaign: the first in file order whose
trigger matches (``rules.campaign_matching``), like the synergy lookup.

Templates are Jinja2 files ``templates/<template>.<channel>.j2`` (an A/B variant may have its own
``<template>.<channel>.<variant>.j2``), rendered in a sandbox with ``StrictUndefined``: the loader
refuses a template that reads a variable the planner does not provide (``TEMPLATE_FIELDS``), and
``lstep rules check`` renders each one with a sample context;
``rules.campaign_rendering.render_message`` is what the dispatcher calls. Nothing here imports
``serving``: ``serving.core.messages`` imports
``CHANNELS`` from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from rules.arrivals import ARRIVAL_DAYS, ARRIVAL_KEY, parse_arrival_days
from rules.costs import COSTS_KEY, ChannelCosts, parse_costs
from rules.errors import RulesError

if TYPE_CHECKING:
    pass

CAMPAIGNS_FILE = "campaigns.yaml"
TEMPLATES_DIR = "templates"
NEW = "new"
CHANNELS: tuple[str, ...] = ("email", "push", "in_app", "csm_task", "webhook")
"""The channels a campaign step may use (``serving.core.messages`` re-exports them)."""
Channel = Literal["email", "push", "in_app", "csm_task", "webhook"]
BehaviourId = Annotated[str, Field(pattern=r"^BT_\d{3}$")]
SUBJECT_PREFIX = "Subject:"

TEMPLATE_FIELDS: dict[str, str] = {
    "customer_id": "the learner's id",
    "name": "the learner's name, or null when the customers file has none",
    "greeting": "'Hi <name>' or a neutral 'Hello'",
    "tag": "the learner's status tag after today's decision (ST_001..ST_006)",
    "tag_name": "its name (Learning:Active ...)",
    "product_tag": "the learner's product tier (PT_001..)",
    "product_name": "its name from campaigns.yaml (PPAL Pro ...)",
    "priority": "the decision's priority (P1..P4)",
    "action": "the decision's action",
    "reasons": "up to three reasons in words (list of strings; may be empty)",
    "behaviours": "the behaviour tags held (list of ids such as BT_002; may be empty)",
    "lessons_total": "lessons completed so far",
    "lessons_30d": "lessons completed in the last 30 days",
    "milestones_total": "milestones reached so far",
    "milestones_30d": "milestones reached in the last 30 days",
    "next_milestone": "the number of the next milestone (milestones_total + 1)",
    "days_inactive": "days since the learner's last event",
    "campaign_id": "CP_01 ..",
    "campaign_name": "the campaign's name",
}
"""The variables a template may read: the planner puts exactly these in a message's context."""

SAMPLE_CONTEXT: dict[str, Any] = {
    "customer_id": "C000042",
    "name": "Ana",
    "greeting": "Hi Ana",
    "tag": "ST_004",
    "tag_name": "Risk:Declining",
    "product_tag": "PT_001",
    "product_name": "PPAL Pro",
    "priority": "P2",
    "action": "retention outreach by the CS team",
    "reasons": ["no activity for 9 days", "daily events -62% vs the 23 days before"],
    "behaviours": ["BT_002", "BT_006"],
    "lessons_total": 14,
    "lessons_30d": 3,
    "milestones_total": 2,
    "milestones_30d": 1,
    "next_milestone": 3,
    "days_inactive": 9,
    "campaign_id": "CP_09",
    "campaign_name": "At-risk early warning",
}
"""A context with every field, for ``rules check``; :func:`sample_contexts` adds the edge cases."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TransitionTrigger(_Frozen):
    """Fires on the day a learner moves into ``into`` (from one of ``sources``, any when empty)."""

    into: str
    sources: tuple[str, ...] = Field(default=(), alias="from")
    behaviour: str | None = None


class StateTrigger(_Frozen):
    """Fires on every day a decision has the tag (and product, priority, behaviour when given)."""

    tag: str
    product_tag: str | None = None
    priority: str | None = None
    behaviour: str | None = None


def _trigger_kind(value: Any) -> str:
    """A trigger with ``into`` is a transition's; any other is a state's (so errors name one)."""
    if isinstance(value, dict):
        return "transition" if "into" in value else "state"
    return "transition" if isinstance(value, TransitionTrigger) else "state"


Trigger = Annotated[
    Annotated[TransitionTrigger, Tag("transition")] | Annotated[StateTrigger, Tag("state")],
    Discriminator(_trigger_kind),
]


class Step(_Frozen):
    """One message of the cadence: ``delay_days`` after the trigger day, on a channel.

    ``prefer`` maps a behaviour tag to the channel used instead for learners who hold it (the
    first listed that the learner holds wins), e.g. ``{BT_002: push}``.
    """

    delay_days: int = Field(ge=0)
    channel: Channel | None = None
    template: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    prefer: dict[BehaviourId, Channel] = Field(default_factory=dict)


class FrequencyCap(_Frozen):
    """At most ``max_messages`` of this campaign per learner within ``per_days`` days."""

    max_messages: int = Field(ge=1)
    per_days: int = Field(ge=1)


class Exit(_Frozen):
    """Pending steps are cancelled on a day the learner's tag is (not) in the list."""

    tag_in: tuple[str, ...] | None = None
    tag_not_in: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Exit:
        if (self.tag_in is None) == (self.tag_not_in is None):
            raise ValueError("give exactly one of tag_in, tag_not_in")
        return self

    def met(self, tags: pd.Series) -> np.ndarray:
        """Which learners (by their tag today) meet the exit condition; a null tag meets none."""
        known = tags.notna().to_numpy()
        listed = tags.isin(self.tag_in or self.tag_not_in).to_numpy()
        return known & (listed if self.tag_in is not None else ~listed)


class Variant(_Frozen):
    """An A/B variant: its id (the template suffix) and its weight."""

    id: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    weight: float = Field(gt=0)


class Campaign(_Frozen):
    """One campaign type (see the module docstring)."""

    id: str = Field(pattern=r"^CP_\d{2}$")
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    trigger: Trigger
    channel: Channel
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    cadence: tuple[Step, ...] = ()
    frequency_cap: FrequencyCap
    exit: Exit | None = None
    variants: tuple[Variant, ...] = ()
    spread: bool = False
    """Planned for each learner on a day of their own in every ``frequency_cap.per_days``
    (``rules.spread``), not on the day they first match: a tag trigger's campaigns only."""

    @model_validator(mode="after")
    def _spread_by_tag(self) -> Campaign:
        if self.spread and isinstance(self.trigger, TransitionTrigger):
            raise ValueError(
                "spread needs a tag trigger: a move into a tag happens on one day, and a "
                "learner whose own day it is not would never get the campaign"
            )
        return self

    @property
    def steps(self) -> tuple[Step, ...]:
        """The cadence, the campaign's channel and template filled in (one day-0 step if none)."""
        steps = self.cadence or (Step(delay_days=0),)
        return tuple(
            step.model_copy(
                update={
                    "channel": step.channel or self.channel,
                    "template": step.template or self.template,
                }
            )
            for step in steps
        )

    @field_validator("cadence")
    @classmethod
    def _delays_in_order(cls, cadence: tuple[Step, ...]) -> tuple[Step, ...]:
        delays = [step.delay_days for step in cadence]
        if delays != sorted(delays):
            raise ValueError(f"cadence delays must not decrease, got {delays}")
        return cadence

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        ids = [variant.id for variant in variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variant ids repeat: {ids}")
        return variants


class Catalogue(_Frozen):
    """The validated ``campaigns.yaml``: product names and the campaigns in precedence order."""

    products: dict[str, str] = Field(default_factory=dict)
    campaigns: tuple[Campaign, ...] = ()
    templates_dir: str | None = None
    """Where the templates were checked (None: no campaigns file)."""
    costs: ChannelCosts = Field(default_factory=ChannelCosts)
    """Cost per contact by channel (``rules.costs``), for the dashboard's intervention ROI."""
    arrival_days: int | None = Field(default=ARRIVAL_DAYS, ge=0)
    """A first tagging is an arrival within this many days of enrolment (``rules.arrivals``)."""

    @property
    def ids(self) -> list[str]:
        """Campaign ids in file order."""
        return [campaign.id for campaign in self.campaigns]

    def get(self, campaign_id: str) -> Campaign:
        """The campaign with this id (KeyError naming the known ids)."""
        for campaign in self.campaigns:
            if campaign.id == campaign_id:
                return campaign
        raise KeyError(f"no campaign {campaign_id!r}; known: {self.ids}")


@dataclass(frozen=True)
class RenderedMessage:
    """A rendered message: a subject (empty when the template has none) and a body."""

    subject: str
    body: str


# --- loading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """What a campaign may name: the rules' tags, products, priorities and behaviour tags."""

    tags: Sequence[str]
    products: Sequence[str]
    priorities: Sequence[str]
    behaviours: Sequence[str]


def load_campaigns(
    directory: Traversable | Path,
    vocabulary: Vocabulary,
    read_yaml: Callable[[Any, str], tuple[str, dict]],
) -> Catalogue:
    """Load ``campaigns.yaml`` and check its names and templates; empty when the file is absent.

    Raises:
        RulesError: naming the file, the campaign id and the field of the first problem: an
            unknown channel, tag, product, priority or behaviour tag, a missing template, a
            template variable the planner does not provide, a repeated id.
    """
    if not (directory / CAMPAIGNS_FILE).is_file():
        return Catalogue()
    file, content = read_yaml(directory, CAMPAIGNS_FILE)
    extra = sorted(set(content) - {"products", "campaigns", COSTS_KEY, ARRIVAL_KEY})
    if extra:
        raise RulesError(file, f"unknown top-level keys {extra}", field=extra[0])
    raw_list = content.get("campaigns")
    if not isinstance(raw_list, list):
        raise RulesError(file, "expected a list of campaigns", field="campaigns")
    campaigns = tuple(_parse_campaign(raw, index, file) for index, raw in enumerate(raw_list))
    products = content.get("products") or {}
    seen: set[str] = set()
    for campaign in campaigns:
        if campaign.id in seen:
            raise RulesError(file, "this id is used twice", rule_id=campaign.id, field="id")
        seen.add(campaign.id)
        _check_names(campaign, vocabulary, file)
        _check_coherence(campaign, file)
    unnamed = [product for product in vocabulary.products if product not in products]
    if campaigns and unnamed:
        raise RulesError(file, f"no name for the products {unnamed}", field="products")
    templates = templates_path(directory)
    for campaign in campaigns:
        _check_templates(campaign, templates, file)
    costs = parse_costs(content.get(COSTS_KEY), file)
    arrival_days = parse_arrival_days(content, file)
    return Catalogue(
        products=products, campaigns=campaigns, templates_dir=str(templates), costs=costs,
        arrival_days=arrival_days,
    )  # fmt: skip


def _parse_campaign(raw: object, index: int, file: str) -> Campaign:
    if not isinstance(raw, dict):
        raise RulesError(file, f"expected a mapping, got {raw!r}", field=f"campaigns[{index}]")
    campaign_id = str(raw.get("id", f"#{index + 1}"))
    try:
        return Campaign.model_validate(raw)
    except PydanticValidationError as error:
        first = error.errors()[0]
        # A union (trigger) reports each member's failure; name the field, not the member.
        loc = [part for part in first["loc"] if part not in ("transition", "state")]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        field = field or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "literal_error":
            message = f"unknown channel {first['input']!r}; channels: {', '.join(CHANNELS)}"
        raise RulesError(file, message, rule_id=campaign_id, field=field) from None


def _check_names(campaign: Campaign, vocabulary: Vocabulary, file: str) -> None:
    """Every tag, product, priority and behaviour tag a campaign names exists."""
    trigger = campaign.trigger
    names: list[tuple[str, str | None, Sequence[str], str]] = []
    if isinstance(trigger, TransitionTrigger):
        names.append(("trigger.into", trigger.into, vocabulary.tags, "tag"))
        names += [
            (f"trigger.from[{i}]", source, [*vocabulary.tags, NEW], "tag")
            for i, source in enumerate(trigger.sources)
        ]
    else:
        names.append(("trigger.tag", trigger.tag, vocabulary.tags, "tag"))
        names.append(("trigger.product_tag", trigger.product_tag, vocabulary.products, "product"))
        names.append(("trigger.priority", trigger.priority, vocabulary.priorities, "priority"))
    names.append(("trigger.behaviour", trigger.behaviour, vocabulary.behaviours, "behaviour tag"))
    if campaign.exit is not None:
        listed = campaign.exit.tag_in or campaign.exit.tag_not_in or ()
        key = "tag_in" if campaign.exit.tag_in is not None else "tag_not_in"
        names += [(f"exit.{key}[{i}]", tag, vocabulary.tags, "tag") for i, tag in enumerate(listed)]
    for i, step in enumerate(campaign.cadence):
        names += [
            (f"cadence[{i}].prefer.{tag}", tag, vocabulary.behaviours, "behaviour tag")
            for tag in step.prefer
        ]
    for field, value, known, kind in names:
        if value is not None and value not in known:
            raise RulesError(
                file,
                f"unknown {kind} {value!r}; known: {', '.join(known)}",
                rule_id=campaign.id,
                field=field,
            )


def _check_coherence(campaign: Campaign, file: str) -> None:
    """The cap leaves room for the cadence, and the exit does not hold where the trigger enrols."""
    steps = len(campaign.steps)
    if campaign.frequency_cap.max_messages < steps:
        raise RulesError(
            file,
            f"{campaign.frequency_cap.max_messages} is below the {steps} steps of the cadence: "
            "the campaign could never be planned",
            rule_id=campaign.id,
            field="frequency_cap.max_messages",
        )
    trigger = campaign.trigger
    entered = trigger.into if isinstance(trigger, TransitionTrigger) else trigger.tag
    if campaign.exit is not None and campaign.exit.met(pd.Series([entered]))[0]:
        raise RulesError(
            file,
            f"the exit condition holds in {entered}, the tag the trigger enrols learners in: "
            "every planned step would be cancelled",
            rule_id=campaign.id,
            field="exit",
        )


@lru_cache(maxsize=8)
def template_environment(templates_dir: str) -> SandboxedEnvironment:
    """A sandboxed environment over one templates folder: undefined variables are errors.

    Kept per folder: an environment compiles each template once (and reloads a changed file);
    a new one per message made the dispatcher compile every template again, ~1 ms a message.
    """
    return SandboxedEnvironment(
        loader=FileSystemLoader(templates_dir),
        undefined=StrictUndefined,
        autoescape=False,  # plain-text messages; a webhook template writes JSON with |tojson
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def templates_path(directory: Traversable | Path | None = None) -> Path:
    """The templates folder of a rules directory (the packaged ``rules/templates`` for None)."""
    base = resources.files("rules") if directory is None else directory
    return Path(str(base / TEMPLATES_DIR))


def template_names(campaign: Campaign) -> list[tuple[str, str, str]]:
    """(field, file name, variant) of every template a campaign may render, in cadence order.

    A variant's own file is optional (the step's file is used without it), so it is listed only
    where it exists; see :func:`_template_file`.
    """
    names = []
    for i, step in enumerate(campaign.steps):
        for channel in dict.fromkeys([step.channel, *step.prefer.values()]):
            for variant in ["", *(v.id for v in campaign.variants)]:
                names.append((f"cadence[{i}].template", step.template, channel, variant))
    return [(field, f"{t}.{c}.j2", v) for field, t, c, v in names]


def _check_templates(campaign: Campaign, templates: Path, file: str) -> None:
    """Each template exists and reads only ``TEMPLATE_FIELDS``."""
    env = template_environment(str(templates))
    for field, name, variant in template_names(campaign):
        stem = name.removesuffix(".j2")
        path = templates / (f"{stem}.{variant}.j2" if variant else name)
        if not path.is_file():
            if variant:
                continue  # a variant without its own file renders the step's template
            raise RulesError(file, f"no template file {path}", rule_id=campaign.id, field=field)
        try:
            source = path.read_text(encoding="utf-8")
            read = meta.find_undeclared_variables(env.parse(source))
            unknown = sorted(read - set(TEMPLATE_FIELDS))
        except TemplateError as error:
            raise RulesError(
                file, f"template {path.name}: {error}", rule_id=campaign.id, field=field
            ) from None
        if unknown:
            raise RulesError(
                file,
                f"template {path.name} reads unknown variable {unknown[0]!r}; a template may read "
                f"{', '.join(TEMPLATE_FIELDS)}",
                rule_id=campaign.id,
                field=field,
            )


__all__ = [
    "CAMPAIGNS_FILE",
    "CHANNELS",
    "SAMPLE_CONTEXT",
    "TEMPLATE_FIELDS",
    "Campaign",
    "Catalogue",
    "Exit",
    "FrequencyCap",
    "RenderedMessage",
    "StateTrigger",
    "Step",
    "TransitionTrigger",
    "Variant",
    "Vocabulary",
    "load_campaigns",
    "template_environment",
    "templates_path",
]
