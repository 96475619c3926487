"""Why a rule fired, in words: the leaves of the winning rule's condition that were true.

A CS lead asks "why is this learner at risk?"; the rule's description says what the rule listens
to, not which of the learner's facts made it fire. :func:`why_texts` answers with the true leaves
of the winning rule's condition, joined with "; ":

- a leaf on ``risk_indicator_count`` becomes the risk indicators that were on ("no activity for
  17 days; daily events -62% vs the 23 days before"), since the count alone does not say which;
- a leaf on a risk flag (``risk_inactive_14d == true``) reads as that indicator;
- a leaf on a model score reads "churn probability 0.64 ≥ 0.60";
- any other leaf reads as the feature's phrase ("active on 4 of the last 7 days"), or as
  "<label> <value> <op> <threshold>" when the caller gave no phrase.

Only the leaves that made the condition true count: every child of a true ``all``, and the true
children of an ``any``. The texts come from the caller (:class:`Wording`): ``rules`` imports no
feature catalog. Words are built only for the learners that need them (moved or held), each
distinct value is formatted once, and the joins run in Arrow: a day of a million learners costs
a small fraction of ``decide``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rules.conditions import (
    NULL_OPS,
    ORDERING_OPS,
    AllOf,
    Condition,
    Leaf,
    evaluate,
    iter_leaves,
    leaf_mask,
)
from rules.config import MODEL_SCORE_COLUMNS, RuleSet

SEPARATOR = "; "
DECIMALS = 2
"""Decimals a value without a phrase is shown with (31, 0.25, churn probability 0.64)."""
COUNT_FEATURE = "risk_indicator_count"
"""The leaf that is expanded into the indicators it counts."""
MODEL_LABELS: dict[str, str] = {
    "p_churn": "churn probability",
    "p_low": "churn probability (low end)",
    "p_high": "churn probability (high end)",
    "confidence": "confidence",
}
OP_SIGNS: dict[str, str] = {
    "<": "<",
    "<=": "≤",
    ">": ">",
    ">=": "≥",
    "==": "=",
    "!=": "≠",
    "in": "in",
}


STATE_WORDS: dict[tuple[str, bool], str] = {
    ("campaign_active", True): "the retention campaign is running",
    ("campaign_active", False): "the retention campaign's time box ended (or it was cleared)",
}
"""How the engine's state columns (``rules.config.STATE_COLUMNS``) read, by (column, value)."""


@dataclass(frozen=True)
class Wording:
    """What the caller knows of the features, to put a rule's true leaves into words.

    Attributes:
        labels: feature -> short label ("days since the last activity"); the name without one.
        phrases: feature -> how a value reads, with ``{value}`` ("no activity for {value:.0f}
            days"); for a risk flag, formatted with its evidence's value.
        evidence: risk flag -> the feature whose value its phrase quotes.
        indicators: the risk flags ``risk_indicator_count`` counts, in the order to name them.
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    phrases: Mapping[str, str] = field(default_factory=dict)
    evidence: Mapping[str, str] = field(default_factory=dict)
    indicators: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the words read besides the rules' own: indicators and their evidence."""
        return tuple(dict.fromkeys([*self.indicators, *self.evidence.values()]))

    def label(self, feature: str) -> str:
        """The feature's label (model scores have their own), else its name."""
        return self.labels.get(feature) or MODEL_LABELS.get(feature, feature)


def why_texts(
    ruleset: RuleSet,
    columns: Mapping[str, pd.Series | np.ndarray],
    winner: np.ndarray,
    needed: np.ndarray,
    wording: Wording,
) -> pd.api.extensions.ExtensionArray:
    """The words of each learner's winning rule; null where not ``needed`` or nothing to say.

    Args:
        ruleset: the rules ``winner`` indexes.
        columns: the scored learners' columns by name (the rules' features, and the wording's
            indicators and evidence where present), as the engine reads them (Series or their
            values).
        winner: per learner, the index of the rule that decided (moved or held), -1 for none.
        needed: per learner, whether to put the decision into words (it moved or was held).
        wording: labels, phrases and indicators from the caller.

    Returns:
        Strings aligned with ``winner``: e.g. "no activity for 17 days; daily events -62%
        vs the 23 days before". Null for a learner not needed, without a winner, or whose rule
        has no leaves (the default entry rule).
    """
    wanted = needed & (winner >= 0)
    arrays = {name: np.asarray(column) for name, column in columns.items()}
    said = _Said()
    for index in np.unique(winner[wanted]):
        picked = np.flatnonzero(wanted & (winner == index))
        condition = ruleset.rules[int(index)].condition
        subset = {
            name: pd.Series(arrays[name][picked])
            for name in _columns_read(condition, wording)
            if name in arrays
        }
        for key, mask in _pieces(condition, subset, len(picked), wording).items():
            local, codes, texts = _phrase(key, mask, subset, wording)
            said.add(picked[local], codes, texts)
    return said.joined(len(winner))


class _Said:
    """The pieces of words said so far, as (row, text) pairs, joined per row at the end.

    Pairs scale with what is said, not with rows x pieces; one stable sort by row keeps each
    row's pieces in the order they were said, and one Arrow join makes every row's sentence.
    """

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.texts: list[str] = []

    def add(self, rows: np.ndarray, codes: np.ndarray, texts: list[str]) -> None:
        """Row ``rows[i]`` says ``texts[codes[i]]``."""
        self.rows.append(rows)
        self.codes.append(codes + len(self.texts))
        self.texts.extend(texts)

    def joined(self, rows: int) -> pd.api.extensions.ExtensionArray:
        """Each row's texts joined with the separator; null for a row that said nothing."""
        if not self.rows:
            return pd.array(pa.nulls(rows, pa.string()).to_pandas(), dtype=str)
        where, codes = np.concatenate(self.rows), np.concatenate(self.codes)
        order = np.argsort(where, kind="stable")
        counts = np.bincount(where, minlength=rows)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        values = pa.array(self.texts, pa.string()).take(pa.array(codes[order]))
        lists = pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(counts == 0))
        return pd.array(pc.binary_join(lists, SEPARATOR).to_pandas(), dtype=str)


def _columns_read(condition: Condition, wording: Wording) -> list[str]:
    """The columns a rule's words read: its leaves', plus the indicators' if it quotes them."""
    features = [leaf.feature for _, leaf in iter_leaves(condition)]
    if any(name == COUNT_FEATURE or name in wording.indicators for name in features):
        features += wording.columns
    return list(dict.fromkeys(features))


def _pieces(
    condition: Condition, columns: Mapping[str, pd.Series], rows: int, wording: Wording
) -> dict[tuple[str, ...], np.ndarray]:
    """What to say of one rule's true leaves, in order: piece key -> rows that say it."""
    pieces: dict[tuple[str, ...], np.ndarray] = {}
    bounds: dict[tuple[str, str], Leaf] = {}  # (feature, op) -> the leaf said first
    same: dict[tuple[str | None, ...], tuple[str, ...]] = {}  # what a flag says -> its key
    for leaf, live in _true_leaves(condition, columns, np.ones(rows, bool), rows):
        for key, mask in _expand(leaf, live, columns, wording):
            # Two flags that read the same (inactive 7 and 14 days: "no activity for 14
            # days") are said once.
            key = same.setdefault(_says(key, wording), key)
            pieces[key] = pieces[key] | mask if key in pieces else mask
        earlier = bounds.setdefault((leaf.feature, leaf.op), leaf)
        if earlier is not leaf and leaf.op in ORDERING_OPS:
            _say_the_stricter(pieces, earlier, leaf)
    return pieces


def _says(key: tuple[str, ...], wording: Wording) -> tuple[str | None, ...]:
    """What a piece reads as, for a flag (its evidence and phrase, or label); else the key."""
    kind, name = key
    if kind != "flag":
        return key
    evidence, phrase = wording.evidence.get(name), wording.phrases.get(name)
    return ("flag", evidence, phrase) if evidence and phrase else ("flag", wording.label(name))


def _say_the_stricter(pieces: dict[tuple[str, ...], np.ndarray], first: Leaf, then: Leaf) -> None:
    """Two bounds on one score ("≥ 0.40" and "≥ 0.60", R13): where both hold, say the stricter."""
    if first.reference is not None or then.reference is not None:
        return  # an unresolved operating point (rules-only): its leaf is never true
    first_key, then_key = ("leaf", first.model_dump_json()), ("leaf", then.model_dump_json())
    if first_key not in pieces or then_key not in pieces or first_key == then_key:
        return
    larger_is_stricter = then.op in (">", ">=")
    stricter = (then.value > first.value) == larger_is_stricter
    if stricter:
        pieces[first_key] &= ~pieces[then_key]
    else:
        pieces[then_key] &= ~pieces[first_key]


def _true_leaves(
    condition: Condition, columns: Mapping[str, pd.Series], live: np.ndarray, rows: int
) -> Iterator[tuple[Leaf, np.ndarray]]:
    """Each leaf with the rows where it helped make ``condition`` true (``live``: it was).

    Every child of a true ``all`` made it true; of an ``any``, only the children that were.
    """
    if isinstance(condition, Leaf):
        yield condition, live & leaf_mask(condition, columns[condition.feature])
        return
    if isinstance(condition, AllOf):
        for child in condition.all:
            yield from _true_leaves(child, columns, live, rows)
        return
    for child in condition.any:
        fired = evaluate(child, columns, MODEL_SCORE_COLUMNS, rows).fired
        yield from _true_leaves(child, columns, live & fired, rows)


def _expand(
    leaf: Leaf, live: np.ndarray, columns: Mapping[str, pd.Series], wording: Wording
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """(key, rows) of the pieces a true leaf stands for; one flag named twice is said once."""
    flags = [name for name in wording.indicators if name in columns]
    if leaf.feature == COUNT_FEATURE and flags:
        said = np.zeros(len(live), bool)
        for flag in flags:
            on = live & (columns[flag].to_numpy(float) > 0.5)
            said |= on
            yield ("flag", flag), on
        # A count the flags do not add up to (flags missing from the frame) reads as a count.
        if (live & ~said).any():
            yield ("leaf", leaf.model_dump_json()), live & ~said
        return
    if leaf.feature in wording.indicators and leaf.op == "==" and leaf.value is True:
        yield ("flag", leaf.feature), live
        return
    yield ("leaf", leaf.model_dump_json()), live


def _phrase(
    key: tuple[str, ...], mask: np.ndarray, columns: Mapping[str, pd.Series], wording: Wording
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One piece's words on the rows of ``mask``: (rows, codes, texts), see ``_formatted``."""
    kind, name = key
    if kind == "flag":
        label = wording.label(name)
        evidence, phrase = wording.evidence.get(name), wording.phrases.get(name)
        if evidence is None or phrase is None or evidence not in columns:
            return _formatted(np.zeros(len(mask)), mask, lambda _value: label)
        values = columns[evidence].to_numpy(float)
        return _formatted(values, mask, lambda value: _say(phrase, value, label), _decimals(phrase))
    leaf = Leaf.model_validate_json(name)
    phrase = wording.phrases.get(leaf.feature)
    decimals = _decimals(phrase) if phrase is not None else DECIMALS
    values = columns[leaf.feature].to_numpy()
    return _formatted(values, mask, _leaf_words(leaf, wording), decimals)


def _leaf_words(leaf: Leaf, wording: Wording) -> Callable[[Any], str]:
    """How one leaf's value reads: the feature's phrase, or label, value, op and threshold."""
    label = wording.label(leaf.feature)
    if leaf.op in NULL_OPS:
        said = f"{label}: not recorded" if leaf.op == "is_null" else f"{label}: recorded"
        return lambda _value: said
    if isinstance(leaf.value, bool) and leaf.op in ("==", "!="):
        holds = (leaf.value is True) == (leaf.op == "==")
        said = STATE_WORDS.get((leaf.feature, holds)) or (label if holds else f"not {label}")
        return lambda _value: said
    phrase = wording.phrases.get(leaf.feature)
    if phrase is not None:
        return lambda value: _say(phrase, value, label)
    threshold = (
        "[" + ", ".join(_number(item) for item in leaf.value) + "]"
        if isinstance(leaf.value, tuple)
        else _number(leaf.value)
    )
    sign = OP_SIGNS[leaf.op]
    if leaf.feature in MODEL_SCORE_COLUMNS:
        return lambda value: f"{label} {value:.2f} {sign} {float(leaf.value):.2f}"
    return lambda value: f"{label} {_number(value)} {sign} {threshold}"


def _say(phrase: str, value: Any, label: str) -> str:
    """A phrase with the learner's value; the bare label when the value is missing."""
    return label if pd.isna(value) else phrase.format(value=float(value))


def _number(value: Any) -> str:
    """A value as a reader expects it: 31 (not 31.0), 0.25, a string as is."""
    if isinstance(value, str):
        return value
    number = float(value)
    return f"{number:.0f}" if number.is_integer() else f"{number:.2f}".rstrip("0").rstrip(".")


def _decimals(phrase: str) -> int | None:
    """Decimals of the fraction a phrase shows of ``{value}`` ("{value:+.0%}": 2), or None."""
    for _, field_name, spec, _ in Formatter().parse(phrase):
        found = re.search(r"\.(\d+)([f%])", spec or "") if field_name == "value" else None
        if found:
            return int(found.group(1)) + (2 if found.group(2) == "%" else 0)
    return None


def _formatted(
    values: np.ndarray, mask: np.ndarray, words: Callable[[Any], str], decimals: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``words`` of the values on the rows of ``mask``, each distinct value formatted once.

    Numbers are first rounded to the ``decimals`` the words show: a million continuous scores
    then need a few hundred formatted strings, not a million.

    Returns:
        The rows of ``mask``, and for each the code of its text in the list of texts.
    """
    rows = np.flatnonzero(mask)
    picked = values[rows]
    if decimals is not None and picked.dtype.kind == "f":
        picked = np.round(picked, decimals)
    codes, uniques = pd.factorize(picked, use_na_sentinel=False)
    return rows, codes.astype(np.int64), [words(value) for value in uniques]


__all__ = ["MODEL_LABELS", "SEPARATOR", "Wording", "why_texts"]
