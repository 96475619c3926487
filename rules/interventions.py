"""Intervention priority, recommended action, value at risk and the control group.

The data lives in ``interventions.yaml``: priorities P1..P4, the product x status synergy rows of
DESIGN §5, a default priority and action per status tag, value weights per product tier and the
control-group share. The functions here are vectorised and pure.

Control group: a learner is in the control group for an action when
``u = int(sha256(f"{customer_id}\\x1f{action}" as UTF-8)[:8], big-endian) / 2**64`` is below
``control_share``. The draw depends on nothing but the two strings, so it is the same on every run
and every machine, and a learner who changes action is drawn afresh for the new one.

Value at risk: ``monthly value x months at risk``, where monthly value is ``mrr``, or the product
tier's weight when ``mrr`` is null or 0 (free learners are still worth something), and the months
at risk are ``max(0, E(healthy p) - E(p_churn))``, the expected months over the capped horizon
that the learner's risk costs against a healthy learner's (``rules.lifetime``). With no model
score it is ``risk_indicator_count / 12`` (the share of the 12 risk indicators that are on) x
one month's value: there is no calibrated probability to project a lifetime from.

Escalations (IV_01, ...) raise a tier's learners in some status tags to a more urgent priority,
keeping the action of their synergy row or tag default; they never lower a priority. The daily
capacity for personal outreach is applied to a whole day's decisions by :mod:`rules.capacity`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rules.lifetime import Lifetime

RISK_INDICATOR_TOTAL = 12
"""How many named risk indicators ``risk_indicator_count`` counts (DESIGN §5)."""

CONTROL_SEPARATOR = "\x1f"
"""Joins customer_id and action before hashing (the ASCII unit separator, absent from ids)."""


class PriorityAction(BaseModel):
    """A priority (P1..P4) and the action a CS team takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    priority: str = Field(pattern=r"^P\d$")
    action: str = Field(min_length=1)


class SynergyRow(PriorityAction):
    """One row of the product tag x status tag synergy matrix."""

    product_tag: str = Field(pattern=r"^PT_\d{3}$")
    status_tag: str = Field(pattern=r"^ST_\d{3}$")


class Escalation(BaseModel):
    """Raise the learners of one product tier in some status tags to a more urgent priority."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^IV_\d{2,}$")
    description: str = Field(min_length=1)
    product_tag: str = Field(pattern=r"^PT_\d{3}$")
    status_tags: tuple[Annotated[str, Field(pattern=r"^ST_\d{3}$")], ...] = Field(min_length=1)
    priority: str = Field(pattern=r"^P\d$")


class Capacity(BaseModel):
    """How many learners the CS team reaches personally per day, and what the others get.

    Attributes:
        personal_outreach_per_day: learners a day may keep a personal priority (those before
            ``overflow_priority``), control group aside: the control learners get no call.
        overflow_priority: the first automated priority; learners past the capacity get it.
        automated_actions: status tag -> the automated action an overflow learner of that tag
            gets (every tag that can have a personal priority needs one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    personal_outreach_per_day: int = Field(ge=0)
    overflow_priority: str = Field(pattern=r"^P\d$")
    automated_actions: dict[Annotated[str, Field(pattern=r"^ST_\d{3}$")], str]

    @field_validator("automated_actions")
    @classmethod
    def _non_empty_actions(cls, value: dict[str, str]) -> dict[str, str]:
        blank = [tag for tag, action in value.items() if not action.strip()]
        if blank:
            raise ValueError(f"blank automated action for {blank}")
        return value


class Interventions(BaseModel):
    """The content of ``interventions.yaml`` (tags are checked against tags.yaml by the loader)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    priorities: dict[Annotated[str, Field(pattern=r"^P\d$")], str] = Field(min_length=1)
    control_share: float = Field(default=0.1, ge=0.0, le=1.0)
    value_weights: dict[Annotated[str, Field(pattern=r"^PT_\d{3}$")], Annotated[float, Field(ge=0)]]
    synergy: tuple[SynergyRow, ...]
    defaults: dict[str, PriorityAction]
    escalations: tuple[Escalation, ...] = ()
    capacity: Capacity | None = None
    """None: no daily limit on personal outreach (every P1/P2 learner keeps their priority)."""
    lifetime: Lifetime = Lifetime()
    """The lifetime projection's cap and the window ``p_churn`` covers (``rules.lifetime``)."""

    @property
    def priority_order(self) -> list[str]:
        """Priorities from the most urgent (P1) to the least."""
        return sorted(self.priorities)

    @property
    def product_tags(self) -> list[str]:
        """The product tiers, in file order (the keys of ``value_weights``)."""
        return list(self.value_weights)

    def lookup(self, product_tag: str, status_tag: str) -> PriorityAction:
        """The synergy row for the pair, else the status tag's default; then the escalations.

        An escalation that matches replaces the priority when it is more urgent; the action stays.
        """
        found = self.defaults[status_tag]
        for row in self.synergy:
            if row.product_tag == product_tag and row.status_tag == status_tag:
                found = PriorityAction(priority=row.priority, action=row.action)
                break
        raised = [
            escalation.priority
            for escalation in self.escalations
            if escalation.product_tag == product_tag and status_tag in escalation.status_tags
        ]
        priority = min([found.priority, *raised], key=self.priority_order.index)
        return PriorityAction(priority=priority, action=found.action)

    def personal_priorities(self) -> list[str]:
        """Priorities the capacity limits: those before the overflow priority (none without one)."""
        if self.capacity is None:
            return []
        order = self.priority_order
        return order[: order.index(self.capacity.overflow_priority)]


def control_draw(customer_ids: ArrayLike, action: str) -> np.ndarray:
    """The uniform [0, 1) draw of each customer for one action (see the module docstring).

    Args:
        customer_ids: strings (a list, numpy/pandas array or Arrow array).
        action: the action text.
    """
    ids = pa.array(customer_ids).cast(pa.large_string())
    suffix = pa.scalar(CONTROL_SEPARATOR + action, pa.large_string())
    return _draws(pc.binary_join_element_wise(ids, suffix, pa.scalar("", pa.large_string())))


def control_flags(
    customer_ids: ArrayLike, action_codes: np.ndarray, actions: list[str], share: float
) -> np.ndarray:
    """Which learners are in the control group for their action.

    Args:
        customer_ids: one id per row.
        action_codes: index into ``actions`` per row; -1 (no action) is never in the control group.
        actions: the action texts.
        share: the configured control share in [0, 1].
    """
    flags = np.zeros(len(action_codes), dtype=bool)
    rows = np.flatnonzero(np.asarray(action_codes) >= 0)
    if rows.size == 0:
        return flags
    ids = pa.array(customer_ids).cast(pa.large_string()).take(rows)
    # Every learner's message at once (one hashing pass, not one per action).
    suffixes = pa.array([CONTROL_SEPARATOR + action for action in actions], pa.large_string())
    messages = pc.binary_join_element_wise(
        ids, suffixes.take(np.asarray(action_codes)[rows]), pa.scalar("", pa.large_string())
    )
    flags[rows] = _draws(messages) < share
    return flags


VECTORISED_FROM = 100_000
"""Messages from which DuckDB's vectorised, multi-threaded ``sha256`` hashes them instead of
``hashlib`` one by one (a million: 0.5 s of CPU, against 0.35 s and less wall on two threads).
Below it DuckDB saves nothing: at 20k messages its connection and hex digests cost 3x hashlib,
and they break even near 200k on a shared 2-core machine."""


def _draws(messages: pa.Array) -> np.ndarray:
    """``int(sha256(message)[:8], big-endian) / 2**64`` of each (non-null) UTF-8 message."""
    if messages.null_count:
        raise ValueError("control draw: a customer_id is null")
    if len(messages) < VECTORISED_FROM:
        digests = [
            hashlib.sha256(message).digest()
            for message in messages.cast(pa.large_binary()).to_pylist()
        ]
        # Each digest is 32 bytes = four big-endian uint64 words; the first word is the draw.
        words = np.frombuffer(b"".join(digests), dtype=">u8")[::4]
    else:
        words = _sha256_words(messages)
    return words.astype(np.float64) / 2.0**64


def _sha256_words(messages: pa.Array) -> np.ndarray:
    """The first 8 bytes of each message's SHA-256 as uint64, hashed by DuckDB.

    DuckDB's ``sha256`` hashes a VARCHAR's UTF-8 bytes and returns the hex digest: its first 16
    hex digits, read as a hex literal, are the first 8 bytes big-endian. A projection keeps the
    rows' order (DuckDB's ``preserve_insertion_order``, on by default).
    """
    import duckdb  # only for a batch's sizes: importing it costs an online decision 0.1 s

    with duckdb.connect() as con:
        con.register("messages", pa.table({"message": messages}))
        query = "SELECT ('0x' || left(sha256(message), 16))::UBIGINT AS word FROM messages"
        return con.sql(query).to_arrow_table().column("word").to_numpy()


def value_at_risk(
    p_churn: np.ndarray,
    risk_indicator_count: np.ndarray,
    mrr: np.ndarray,
    tier_weight: np.ndarray,
    at_risk: np.ndarray,
) -> np.ndarray:
    """Expected value at risk per learner (see the module docstring for the fallbacks).

    Args:
        p_churn: calibrated churn probability (NaN: no model score).
        risk_indicator_count: risk indicators on, the probability's stand-in without a score.
        mrr: monthly revenue (NaN: unknown).
        tier_weight: the monthly value of the learner's tier, used when mrr is null or 0.
        at_risk: ``rules.lifetime.months_at_risk`` of ``p_churn`` (NaN where it is NaN).
    """
    scored = ~np.isnan(p_churn)
    unscored_share = risk_indicator_count / RISK_INDICATOR_TOTAL
    has_revenue = ~np.isnan(mrr) & (mrr > 0)
    monthly = np.where(has_revenue, mrr, tier_weight)
    return monthly * np.where(scored, at_risk, unscored_share)
