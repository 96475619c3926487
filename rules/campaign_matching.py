"""Which campaign each decision triggers, and the channel of its first step.

A campaign's trigger (``rules.campaigns``: a transition into a tag, from some tags, or holding a
tag, with a tier, a priority or a behaviour tag) is matched against every decision at once: each
column becomes integer codes once, the catalogue's triggers are compiled to codes once per
catalogue, and each trigger is then a few integer compares; the first match in file order wins.
The rules engine calls this on its own arrays before it builds the decisions' frame
(``rules.decisions``); the capacity cut calls it again for the learners it moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rules.arrivals import ARRIVAL_FEATURE, onboarded
from rules.behaviours import BehaviourLookup
from rules.campaigns import CHANNELS, NEW, Catalogue, Step, TransitionTrigger
from rules.schemas import built_once

Decisions = pd.DataFrame | Mapping[str, Any]
"""Decision columns by name: a frame, or the rules engine's arrays before it builds one."""


def match_campaigns(
    catalogue: Catalogue,
    decisions: Decisions,
    product_tags: Iterable[str | None],
    *,
    behaviours: BehaviourLookup | None = None,
) -> np.ndarray:
    """The campaign of each decision: index into ``catalogue.campaigns``, -1 for none.

    Args:
        catalogue: the campaigns, in precedence order (first match wins).
        decisions: from_tag, to_tag, changed, priority and behaviour_tags per learner: a frame,
            or its columns by name (Series, arrays, categoricals; the rules engine's own);
            ``tenure_days`` too where known, which tells an arrival from an onboarding
            (``rules.arrivals``: an onboarding's first tag matches no transition trigger).
        product_tags: each decision's product tier (aligned with the rows; None: unknown, so
            triggers naming a product do not match).
        behaviours: the lookup of ``decisions["behaviour_tags"]`` when the caller has it.
    """
    rows = len(decisions["changed"])
    found = np.full(rows, -1, dtype=np.int64)
    if not catalogue.campaigns or rows == 0:
        return found
    # Every column becomes integer codes once; each trigger is then a few integer compares.
    triggers = _triggers_of(catalogue)
    words = triggers.words
    to_tag = words.of(decisions["to_tag"])
    new = np.asarray(pd.isna(decisions["from_tag"]), dtype=bool)
    # a from-tag no trigger names reads the sources' last entry (False), a new learner entry 0
    from_tag = np.where(new, 0, words.of(decisions["from_tag"]) + 1)
    from_tag[~new & (from_tag == 0)] = -1
    priority = words.of(decisions["priority"])
    products = words.of(
        product_tags
        if isinstance(product_tags, pd.Series | np.ndarray)
        else pd.Series(list(product_tags), dtype=object)
    )
    changed = np.asarray(decisions["changed"], dtype=bool)
    # an onboarding is audited as a move, but matches as a day without one (``rules.arrivals``)
    tenure = decisions.get(ARRIVAL_FEATURE)
    moved = changed & ~onboarded(new, tenure, catalogue.arrival_days)
    behaviours = behaviours or BehaviourLookup(decisions["behaviour_tags"])
    for index in reversed(range(len(catalogue.campaigns))):  # the first match is written last
        trigger = triggers.codes[index]
        hit = to_tag == trigger.tag
        if trigger.transition:
            hit &= moved
        if trigger.sources is not None:
            hit &= trigger.sources[from_tag]
        if trigger.product is not None:
            hit &= products == trigger.product
        if trigger.priority is not None:
            hit &= priority == trigger.priority
        if trigger.behaviour is not None:
            hit &= behaviours.holds(trigger.behaviour)
        found[hit] = index
    return found


@dataclass(frozen=True)
class _TriggerCodes:
    """One trigger in the codes of ``_Codes``: what ``match_campaigns`` compares."""

    transition: bool
    tag: int
    """The tag entered (a transition's ``into``) or held (a state's ``tag``)."""
    sources: np.ndarray | None
    """Which from-tags match, by code + 1 (entry 0: a new learner; the last, False: a tag no
    trigger names); None: any."""
    product: int | None
    priority: int | None
    behaviour: str | None


@dataclass(frozen=True)
class _Triggers:
    words: _Codes
    codes: tuple[_TriggerCodes, ...]


def _triggers_of(catalogue: Catalogue) -> _Triggers:
    """The catalogue's triggers as codes, compiled on first use (every decision matches them:
    compiling them per call was most of matching one learner)."""
    return built_once(catalogue, "triggers", lambda: _compiled(catalogue))


def _compiled(catalogue: Catalogue) -> _Triggers:
    words = _Codes(catalogue)

    def code(word: str | None) -> int | None:
        return None if word is None else words.code(word)

    compiled = []
    for campaign in catalogue.campaigns:
        trigger = campaign.trigger
        if isinstance(trigger, TransitionTrigger):
            sources = None
            if trigger.sources:
                sources = np.zeros(len(words.words) + 2, dtype=bool)
                for tag in trigger.sources:
                    sources[0 if tag == NEW else words.code(tag) + 1] = True
            into = words.code(trigger.into)
            compiled.append(_TriggerCodes(True, into, sources, None, None, trigger.behaviour))
        else:
            product, priority = code(trigger.product_tag), code(trigger.priority)
            compiled.append(
                _TriggerCodes(
                    False, words.code(trigger.tag), None, product, priority, trigger.behaviour
                )
            )
    return _Triggers(words, tuple(compiled))


class _Codes:
    """Integer codes of the words the triggers name (tags, products, priorities); -1 for others."""

    def __init__(self, catalogue: Catalogue) -> None:
        words: set[str] = set()
        for campaign in catalogue.campaigns:
            trigger = campaign.trigger
            if isinstance(trigger, TransitionTrigger):
                words |= {trigger.into, *trigger.sources} - {NEW}
            else:
                words |= {w for w in (trigger.tag, trigger.product_tag, trigger.priority) if w}
        self.words = sorted(words)
        self._index = {word: code for code, word in enumerate(self.words)}

    def code(self, word: str) -> int:
        return self._index[word]

    def of(self, values: pd.Series | pd.Categorical | np.ndarray) -> np.ndarray:
        """The code of each value; -1 for null and for words no trigger names.

        A categorical is recoded by a table over its few categories (the last entry answers
        for null, code -1): ``cat.set_categories`` builds and checks a new dtype per call. Other
        strings take Arrow's hash lookup (iterating a million Arrow-backed strings in Python
        costs most of a second).
        """
        if isinstance(values.dtype, pd.CategoricalDtype):
            categorical = values.cat if isinstance(values, pd.Series) else values
            categories = categorical.categories
            table = np.array([self._index.get(word, -1) for word in categories] + [-1])
            return table[np.asarray(categorical.codes)].astype(np.int64, copy=False)
        array = pa.array(values, from_pandas=True)
        if pa.types.is_null(array.type):  # an all-null column names nothing
            return np.full(len(values), -1, dtype=np.int64)
        found = pc.index_in(array.cast(pa.string()), value_set=pa.array(self.words))
        return pc.fill_null(found, -1).to_numpy().astype(np.int64)


def step_channels(step: Step, behaviour_tags: np.ndarray | pd.Series) -> np.ndarray:
    """The channel of a step per learner: the first ``prefer`` tag they hold, else the step's."""
    channels = np.full(len(behaviour_tags), step.channel, dtype=object)
    if step.prefer:
        behaviours = BehaviourLookup(behaviour_tags)
        for tag, channel in reversed(list(step.prefer.items())):
            channels[behaviours.holds(tag)] = channel
    return channels


def campaign_columns(
    catalogue: Catalogue,
    decisions: Decisions,
    product_tags: Iterable[str | None],
    *,
    behaviours: BehaviourLookup | None = None,
) -> tuple[pd.Categorical, pd.Categorical]:
    """``campaign_id`` and ``channel`` (the first step's, personalised) per decision; null: none.

    ``decisions``, ``product_tags`` and ``behaviours`` as :func:`match_campaigns` reads them.
    """
    rows = len(decisions["changed"])
    if behaviours is None and rows:
        behaviours = BehaviourLookup(decisions["behaviour_tags"])
    found = match_campaigns(catalogue, decisions, product_tags, behaviours=behaviours)
    channel_code = np.full(rows, -1, dtype=np.int64)
    for index in np.unique(found[found >= 0]).tolist():  # only the campaigns matched
        mine = found == index
        first = catalogue.campaigns[index].steps[0]
        channel_code[mine] = CHANNELS.index(first.channel)
        for tag, channel in reversed(list(first.prefer.items())):  # the first listed wins
            channel_code[mine & behaviours.holds(tag)] = CHANNELS.index(channel)
    campaign_id = pd.Categorical.from_codes(found, dtype=_dtype(tuple(catalogue.ids)))
    channel = pd.Categorical.from_codes(channel_code, dtype=_dtype(CHANNELS))
    return campaign_id, channel


@lru_cache(maxsize=64)
def _dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """A categorical dtype built once: building one checks its categories (an Index per call).
    Dtypes are immutable, so sharing one is safe."""
    return pd.CategoricalDtype(list(categories))


__all__ = ["Decisions", "campaign_columns", "match_campaigns", "step_channels"]
