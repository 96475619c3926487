"""Request and response bodies of the HTTP service (``serving.api.service``), as pydantic models.

BentoML builds the OpenAPI document (``/docs.json``) and validates every request from these
models: a body that breaks them gets a 400 that names the offending field (``learners.0.events.2.
event_type``), before any service code runs. The vocabularies (event types, channels, products,
status tags) come from the same constants as the file contracts, so an inline event that passes
here has the shape ``features.validation`` expects; the contract checks that need data (events
after ``now``, before enrolment) run in the service and answer 422.

Every request model forbids unknown fields, so a misspelt ``"aply": true`` is an error rather than
a silent dry run.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS
from serving.core import overrides
from serving.core.asks import LearnerAsk
from serving.core.tags import STATUS_TAGS

MIN_AS_OF = date(2000, 1, 1)
MAX_AS_OF = date(2199, 12, 31)
"""Bounds of a scoring day: far outside any course history, well inside pandas' timestamps."""
MAX_EVENTS_PER_LEARNER = 20_000
"""Inline events of one learner: a 30-day window of even a very busy learner holds far fewer."""
CUSTOMER_ID_MAX_LENGTH = 64
"""The state store's customer_id column width."""

CustomerId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=CUSTOMER_ID_MAX_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # no control characters
    ),
]
EventType = Literal[CANONICAL_EVENT_TYPES]  # type: ignore[valid-type]
Channel = Literal[CHANNELS]  # type: ignore[valid-type]
ProductTag = Literal[tuple(PRODUCT_TAGS)]  # type: ignore[valid-type]
StatusTag = Literal[tuple(STATUS_TAGS)]  # type: ignore[valid-type]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
FeatureSource = Literal["snapshot", "event_store", "inline"]
EXPECTED_MONTHS = (
    "expected remaining months over the capped horizon (24 by default), the current month "
    "included, from the monthly hazard of p_churn (constant hazard, rules/lifetime.py); null: "
    "no model score or not stored"
)
PROJECTED_VALUE = "mrr x expected_months (no discounting); null: mrr or the score unknown"


class _Request(BaseModel):
    """Base of every request body: immutable, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(frozen=True)


# --- requests -------------------------------------------------------------------------------------


def _no_number_instant(value: Any) -> Any:
    """An instant is an ISO 8601 string (or a datetime), never a bare number: an epoch count
    in some unit is too easy to get wrong by a factor of 1,000."""
    if isinstance(value, int | float):
        raise ValueError(
            f"{value!r} is a number: send an ISO 8601 string, e.g. 2026-01-31T08:00:00Z"
        )
    return value


def _no_text_number(value: Any) -> Any:
    """A quantity is a JSON number: "60" is text, and text is not silently read as a number."""
    if isinstance(value, str):
        raise ValueError(f"{value!r} is text: send a number, e.g. 60.0")
    return value


Instant = Annotated[datetime, BeforeValidator(_no_number_instant)]
"""A timestamp of the contracts: ISO 8601 (a naive one means UTC); numbers are refused."""
Quantity = Annotated[float, BeforeValidator(_no_text_number)]
"""A number of the contracts: JSON numbers only; text is refused."""


class EventIn(_Request):
    """One recent event of a learner, in the canonical vocabulary (DESIGN §3).

    A timestamp without a time zone means UTC, as in the event files. Timestamps are ISO 8601
    strings and quantities JSON numbers: the API takes what the file contracts take, no more.
    """

    ts: Instant
    event_type: EventType
    duration_s: Quantity | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    channel: Channel | None = None
    item: str | None = Field(default=None, max_length=256)


class CustomerIn(_Request):
    """A learner's customer record, for learners the event store does not know yet."""

    product_tag: ProductTag
    enrolled_at: Instant
    mrr: Quantity | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class LearnerIn(_Request):
    """A learner to score: by id (features from the event store) or with inline recent events.

    With ``events`` the features are computed from these events merged with the learner's stored
    ones (an event equal to a stored one in every field counts once), so sending only the events
    the event store does not have yet is enough. ``customer`` replaces the stored customer record,
    and is required for a learner the event store does not know.
    """

    customer_id: CustomerId
    events: list[EventIn] | None = Field(default=None, max_length=MAX_EVENTS_PER_LEARNER)
    customer: CustomerIn | None = None

    @model_validator(mode="after")
    def _valid(self) -> LearnerIn:
        _check_customer_has_events(self.customer, self.events)
        return self


def _check_customer_has_events(customer: CustomerIn | None, events: list[EventIn] | None) -> None:
    if customer is not None and events is None:
        raise ValueError(
            "customer is only used with inline events: add events, or drop customer to score "
            "the learner from the event store"
        )


def _check_day(name: str, day: date | None) -> None:
    if day is not None and not MIN_AS_OF <= day <= MAX_AS_OF:
        raise ValueError(f"{name} must be between {MIN_AS_OF} and {MAX_AS_OF}, got {day}")


class ScoreRequest(_Request):
    """Body of ``POST /score``.

    ``as_of`` is the scoring day (features use events strictly before its midnight UTC); today
    (UTC) when omitted. ``apply: true`` writes the proposed tag moves to the state store and
    needs the API token; by default nothing is written (a dry run).
    """

    learners: list[LearnerIn] = Field(min_length=1)
    as_of: date | None = None
    apply: bool = False

    @property
    def event_count(self) -> int:
        """Inline events of all learners together."""
        return sum(len(learner.events or ()) for learner in self.learners)

    @model_validator(mode="after")
    def _valid(self) -> ScoreRequest:
        _check_day("as_of", self.as_of)
        counts = Counter(learner.customer_id for learner in self.learners)
        repeated = sorted(customer_id for customer_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(
                f"learners: customer_id {repeated[:5]} given more than once; send each learner once"
            )
        return self


class ExplainRequest(_Request):
    """Body of ``POST /explain``: one learner, by id or with inline events, as in ``/score``."""

    customer_id: CustomerId
    as_of: date | None = None
    events: list[EventIn] | None = Field(default=None, max_length=MAX_EVENTS_PER_LEARNER)
    customer: CustomerIn | None = None

    @model_validator(mode="after")
    def _valid(self) -> ExplainRequest:
        _check_day("as_of", self.as_of)
        _check_customer_has_events(self.customer, self.events)
        return self

    def learner(self) -> LearnerIn:
        """The learner part of the request."""
        return LearnerIn(customer_id=self.customer_id, events=self.events, customer=self.customer)

    def ask(self, as_of: date, now: datetime) -> LearnerAsk:
        """The request as the online path takes it."""
        return learner_ask(self.learner(), as_of, now)


class StatusRequest(_Request):
    """Body of ``POST /status``."""

    customer_id: CustomerId


class OverrideRequest(_Request):
    """Body of ``POST /override`` (needs the API token), on the data's clock.

    ``tag: ST_005`` starts a time-boxed retention campaign (the exit rules keep running); any
    other tag moves the learner and holds them there; no tag holds them at their current tag.
    ``effective`` is the first data day it applies to (default: the day after the latest
    completed batch day); ``expires`` the first data day it no longer applies to, or
    ``for_days`` its length (default: the campaign box for ST_005, until cleared otherwise).
    ``clear: true`` ends the learner's open override instead (from ``effective``).
    """

    customer_id: CustomerId
    tag: StatusTag | None = None
    actor: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    effective: date | None = None
    expires: date | None = None
    for_days: Annotated[int, Field(ge=1, le=3660)] | None = None
    clear: bool = False

    @model_validator(mode="after")
    def _valid(self) -> OverrideRequest:
        _check_day("effective", self.effective)
        _check_day("expires", self.expires)
        if self.clear and (self.tag, self.expires, self.for_days) != (None, None, None):
            raise ValueError("clear: true ends an override: give no tag, expires or for_days")
        return self

    def to_request(self) -> overrides.OverrideRequest:
        """The request as the store plans it."""
        return overrides.OverrideRequest(
            customer_id=self.customer_id, actor=self.actor, reason=self.reason, tag=self.tag,
            effective=self.effective, expires=self.expires, days=self.for_days,
        )  # fmt: skip


# --- responses ------------------------------------------------------------------------------------


class ReasonOut(_Response):
    """One reason code: a feature's share of the churn probability, in percentage points."""

    feature: str
    value: bool | int | float | str | None
    points: float
    text: str


class IndicatorOut(_Response):
    """A risk indicator that is on: the flag rule-side risk moves fire on."""

    feature: str
    text: str


class LearnerScore(_Response):
    """A learner's score, proposed tag move and intervention (one item of ``/score``)."""

    customer_id: str
    as_of: date
    p_churn: Probability | None = Field(
        description="calibrated churn probability; null: rules only"
    )
    p_low: Probability | None
    p_high: Probability | None
    confidence: Probability | None
    current_tag: StatusTag | None = Field(description="tag in the state store; null: new learner")
    proposed_tag: StatusTag | None
    rule_id: str | None
    rule_description: str | None
    why: str | None = Field(
        description="the facts that made the rule fire, in words, e.g. 'no activity for 17 "
        "days; daily events -62% vs the 23 days before'; null when no rule moved or held them"
    )
    signal: str | None
    priority: str | None
    action: str | None
    campaign_id: str | None = Field(
        default=None,
        description="the campaign the decision triggers (rules/campaigns.yaml, CP_01..CP_24): "
        "the first whose trigger matches; null: none",
    )
    channel: str | None = Field(
        default=None,
        description="the campaign's first channel for this learner (email, push, in_app, "
        "csm_task, webhook), after personalisation by behaviour tags; null: no campaign",
    )
    control: bool = Field(description="in the control group: gets no intervention")
    over_capacity: bool | None = Field(
        description="the day's capacity for personal outreach moved the learner to automated "
        "outreach; null: decided on demand, without the rest of the day, so the capacity was not "
        "applied and priority is the rules' own"
    )
    reasons: list[ReasonOut]
    risk_indicators: list[IndicatorOut] = Field(
        description="the risk indicators that are on (in every mode, model or rules-only)"
    )
    behaviour_tags: list[str] = Field(
        default_factory=list,
        description="the behaviour tags the learner holds (BT_001..BT_008, rules/behaviours.yaml)",
    )
    value_at_risk: float | None = Field(
        default=None,
        description="p_churn x monthly value (mrr, or the tier's weight when mrr is null or 0) x "
        "expected_months; without a model score, risk indicators on / 12 x one month's value",
    )
    expected_months: float | None = Field(default=None, description=EXPECTED_MONTHS)
    projected_value: float | None = Field(default=None, description=PROJECTED_VALUE)
    model_version: str | None
    feature_source: FeatureSource = Field(
        description="snapshot: the batch job's features of the day; event_store: computed from "
        "the stored events; inline: computed from the events in the request"
    )
    applied: bool = Field(description="the proposed move was written to the state store")
    not_applied_reason: str | None = None


class ScoreResponse(_Response):
    """Body returned by ``POST /score``."""

    as_of: date
    dry_run: bool
    rules_only: bool
    model_version: str | None
    transitions_written: int
    learners: list[LearnerScore]


class ExplainResponse(_Response):
    """Body returned by ``POST /explain``: every feature's points, largest first.

    The points add up to ``100 * (p_raw - p_base)``: they explain the model's raw probability;
    ``p_churn`` is that probability after calibration (a monotone map with no per-feature split).
    """

    customer_id: str
    as_of: date
    p_churn: Probability
    p_low: Probability
    p_high: Probability
    confidence: Probability
    p_base: Probability
    p_raw: Probability
    model_version: str
    feature_source: FeatureSource
    reasons: list[ReasonOut]


class OverrideOut(_Response):
    """The learner's open manual override: data days beside the instant it was recorded."""

    tag: StatusTag
    kind: Literal["campaign", "hold"]
    actor: str
    reason: str
    created_at: datetime
    effective_as_of: date
    expires: date | None


class TransitionOut(_Response):
    """One entry of the audit log."""

    as_of: date
    from_tag: StatusTag | None
    to_tag: StatusTag
    rule_id: str | None
    actor: str | None
    reason: str
    why: str | None = Field(
        default=None, description="the facts the rule fired on, in words; null for a manual move"
    )
    signal: str | None
    p_churn: Probability | None
    confidence: Probability | None
    model_version: str | None
    run_id: str | None
    created_at: datetime


class ScoreOut(_Response):
    """The learner's latest stored score: what the last batch day decided for them."""

    as_of: date
    p_churn: Probability | None
    confidence: Probability | None
    priority: str | None
    action: str | None
    campaign_id: str | None = None
    channel: str | None = None
    control: bool
    value_at_risk: float | None
    expected_months: float | None = Field(default=None, description=EXPECTED_MONTHS)
    projected_value: float | None = Field(default=None, description=PROJECTED_VALUE)
    behaviour_tags: list[str] | None = Field(
        default=None,
        description="the behaviour tags held that day (BT_001..BT_008); null: not stored",
    )
    model_version: str | None

    @field_validator("behaviour_tags", mode="before")
    @classmethod
    def _split_stored_tags(cls, value: object) -> object:
        """The scores table keeps the ids joined by ',' ('' for none)."""
        if isinstance(value, str):
            return [part for part in value.split(",") if part]
        return value


class StatusResponse(_Response):
    """Body returned by ``POST /status`` and ``POST /override``."""

    customer_id: str
    tag: StatusTag
    tag_name: str
    since: date
    score: ScoreOut | None = Field(
        default=None, description="the latest batch day's score and intervention; null if none"
    )
    override: OverrideOut | None
    history: list[TransitionOut]


# --- from a request to the online path ----------------------------------------------------------


def learner_ask(learner: LearnerIn, as_of: date, now: datetime) -> LearnerAsk:
    """A request's learner as the online path takes it (plain values)."""
    events = None
    if learner.events is not None:
        events = tuple(event.model_dump() for event in learner.events)
    customer = None if learner.customer is None else learner.customer.model_dump()
    return LearnerAsk(learner.customer_id, as_of, now, events=events, customer=customer)


__all__ = [
    "CUSTOMER_ID_MAX_LENGTH",
    "MAX_AS_OF",
    "MAX_EVENTS_PER_LEARNER",
    "MIN_AS_OF",
    "CustomerIn",
    "EventIn",
    "ExplainRequest",
    "ExplainResponse",
    "IndicatorOut",
    "LearnerIn",
    "LearnerScore",
    "OverrideOut",
    "OverrideRequest",
    "ReasonOut",
    "ScoreRequest",
    "ScoreResponse",
    "StatusRequest",
    "StatusResponse",
    "TransitionOut",
    "learner_ask",
]
