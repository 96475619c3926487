"""The learner simulator: a seeded online-course population, its event log and its true churn odds.

``simulate`` writes ``events.parquet``, ``customers.parquet``, ``truth.parquet`` and ``meta.json``.

How a learner lives (all of it in ``advance_day``, the one transition function):

- Engagement ``z`` is a logit-scale Ornstein-Uhlenbeck process pulled towards the learner's
  level (base level, plus a lift once they reach mastery, minus an accumulated slow decline).
  Random shocks (mostly bad: a new job, a sick child) hit it now and then; some learners are prone
  to slow declines that start at a memoryless random time, so the state at any day says all there
  is to know about the future.
- A paused learner (vacation, 10-45 days) is silent and comes back: silence is evidence, not proof.
- Churn is a daily hazard that rises with low engagement and with its recent fall
  (``z_slow - z``), lower for paid tiers. Paid churners usually emit ``subscription_cancelled``;
  freemium ones go silent. After churn there is never another event.
- On an active day (probability from engagement, lower at weekends) the learner completes lessons
  at their pace; every few lessons make a milestone; enough milestones make mastery.

The detailed events of the active days (sessions, quizzes, community, features, videos, channels)
are drawn afterwards from the recorded active days; they never feed back into the dynamics.

Ground truth: for each truth row, ``estimate_label_probability`` runs ``truth_paths`` futures of
the label window from the exact latent state with ``advance_day`` and its own random stream, so
computing truth never changes the events.

Randomness: ``SeedSequence(seed).spawn(n_chunks)`` gives one child per chunk of ``CHUNK_SIZE``
learners; each child spawns the population, dynamics, activity and truth streams. Same config,
same bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.layout import CUSTOMERS_FILE, EVENTS_FILE
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS

_Columns = TypeVar("_Columns")

CHUNK_SIZE = 20_000
"""Learners simulated (and written as one row group) at a time; not a knob: seeds are per chunk."""

ELIGIBILITY_DAYS = 30
"""DESIGN §4: eligible at t = an event in [t - 30d, t) (or enrolled less than 30 days before t)."""

FIRST_TRUTH_DAY = 30
"""Truth rows start 30 days after the start, when the first learners have a full window."""

MAX_CUSTOMERS = 9_999_999
"""Customer ids are "C" + 7 digits."""

TRUTH_FILE = "truth.parquet"
META_FILE = "meta.json"

SECONDS_PER_DAY = 86_400
MICROS_PER_SECOND = 1_000_000
LAST_SECOND = SECONDS_PER_DAY - 1e-3
"""Events happen before this second of their day (a session running past midnight is cut there:
its events spread over the part before it, so that no two of them share a clipped instant)."""

TIER_TAGS: tuple[str, ...] = tuple(PRODUCT_TAGS)
PRO, ENTERPRISE, FREEMIUM = (TIER_TAGS.index(tag) for tag in ("PT_001", "PT_002", "PT_003"))
TIER_SHARES: tuple[float, ...] = (0.35, 0.10, 0.55)
STATES: tuple[str, ...] = ("active", "paused", "churned")
ACTIVE, PAUSED, CHURNED = 0, 1, 2

SESSION = CANONICAL_EVENT_TYPES.index("session")
LESSON = CANONICAL_EVENT_TYPES.index("lesson_completed")
MILESTONE = CANONICAL_EVENT_TYPES.index("milestone_completed")
QUIZ_ATTEMPT = CANONICAL_EVENT_TYPES.index("quiz_attempted")
QUIZ_PASS = CANONICAL_EVENT_TYPES.index("quiz_passed")
FEATURE = CANONICAL_EVENT_TYPES.index("feature_used")
POST = CANONICAL_EVENT_TYPES.index("community_post")
REPLY = CANONICAL_EVENT_TYPES.index("community_reply")
VIDEO = CANONICAL_EVENT_TYPES.index("video_watched")
CANCEL = CANONICAL_EVENT_TYPES.index("subscription_cancelled")
WEB, MOBILE, API = (CHANNELS.index(name) for name in ("web", "mobile", "api"))

COURSE_LESSONS = 120
COURSE_MILESTONES = 40
VIDEOS_PER_LESSON = 3
FEATURE_NAMES: tuple[str, ...] = (
    "notes",
    "flashcards",
    "planner",
    "search",
    "bookmarks",
    "highlights",
    "progress_dashboard",
    "reminders",
    "offline_download",
    "code_sandbox",
    "study_groups",
    "certificates",
)
"""Ordered from the most to the least used: explorers reach further down the list."""

# The output contract: exactly these columns and arrow types (all nullable at the arrow level; the
# simulator fills every column the contract says is always there).
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("event_type", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("channel", pa.string()),
        pa.field("item", pa.string()),
    ]
)
CUSTOMERS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("product_tag", pa.string()),
        pa.field("enrolled_at", pa.timestamp("us", tz="UTC")),
        pa.field("mrr", pa.float64()),
    ]
)
TRUTH_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("as_of", pa.date32()),
        pa.field("p_true", pa.float64()),
        pa.field("engagement", pa.float64()),
        pa.field("state", pa.string()),
        pa.field("y", pa.int8()),
    ]
)


class SimulationConfig(BaseModel):
    """What to simulate: population size, period, seed and the ground-truth sampling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int = Field(5000, gt=0, le=MAX_CUSTOMERS)
    days: int = Field(180, gt=0)
    seed: int = Field(0, ge=0)
    start: date = date(2026, 1, 1)
    horizon_days: int = Field(30, gt=0, description="W, the label window (DESIGN §4)")
    truth_every_days: int = Field(7, gt=0)
    truth_share: float = Field(1.0, ge=0.0, le=1.0)
    truth_paths: int = Field(64, gt=0)

    @property
    def end(self) -> date:
        """The instant (00:00 UTC) up to which the log is complete: start + days."""
        return self.start + timedelta(days=self.days)

    @property
    def truth_days(self) -> tuple[int, ...]:
        """Day indices (since start) of the truth as_of dates."""
        if self.truth_share == 0:
            return ()
        return tuple(range(FIRST_TRUTH_DAY, self.days, self.truth_every_days))


class SimulationSummary(BaseModel):
    """What ``simulate`` wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int
    events: int
    truth_rows: int
    start: date
    end: date
    files: tuple[Path, ...]
    seconds: float


class DynamicsParameters(BaseModel):
    """The constants of the learner dynamics (logit units and per-day rates unless said otherwise).

    Tuples indexed by tier follow ``TIER_TAGS``: (Pro, Enterprise, Freemium). Weekday tuples start
    on Monday. The defaults give a monthly churn of roughly 30% (Freemium), 14% (Pro) and 10%
    (Enterprise), and about 2.2 events per enrolled, not-churned learner and day.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Traits drawn at enrolment.
    base_sd: float = 0.8
    tier_engagement_lift: tuple[float, float, float] = (0.2, 0.3, 0.0)
    pace_sigma: float = 0.4  # lognormal sigma of lessons per active day (median 1 x engagement)
    honeymoon: float = 0.5  # new learners start this far above their level and drift back
    # Engagement: an OU step towards the level, with noise and rare (mostly bad) shocks.
    reversion: float = 0.06
    volatility: float = 0.12
    shock_probability: float = 0.008
    shock_mean: float = -0.9
    shock_sd: float = 0.6
    mastery_lift: float = 0.6  # added to the level for good once a learner reaches mastery
    # Slow declines: prone learners start one at a memoryless time, then lose level daily.
    decline_prone_share: float = 0.35
    decline_onset_hazard: float = 1 / 90
    decline_rate_range: tuple[float, float] = (0.02, 0.06)
    decline_cap: float = 4.0
    slow_memory_days: float = 21.0  # z_slow, the reference a recent fall is measured against
    # Pauses (vacations): silent, less likely to churn, then back.
    pause_hazard: float = 1 / 300
    pause_days_range: tuple[int, int] = (10, 45)
    pause_churn_factor: float = 0.5
    # Churn: logit hazard = intercept[tier] - slope * z + decline slope * max(z_slow - z, 0).
    churn_intercept: tuple[float, float, float] = (-6.2, -6.7, -5.3)
    churn_engagement_slope: float = 1.2
    churn_decline_slope: float = 1.5
    cancel_probability: float = 0.92  # a paid churner cancels (an event) rather than vanishing
    # Activity: logit P(active) = intercept + slope * z + weekday effect.
    active_intercept: float = -0.6
    active_slope: float = 1.4
    weekday_effect: tuple[float, ...] = Field(
        (0.15, 0.2, 0.2, 0.15, 0.0, -0.6, -0.45), min_length=7, max_length=7
    )
    # Progress: lessons per active day = Poisson(pace * (floor + engagement)).
    lessons_floor: float = 0.3
    mastery_milestones: int = 8


DYNAMICS = DynamicsParameters()


@dataclass(frozen=True)
class LearnerState:
    """Everything ``advance_day`` needs about a set of learners, one array element per learner.

    The first six fields are fixed traits; the others evolve. ``z`` is engagement on the logit
    scale, ``z_slow`` its slow moving average (their gap measures a recent fall), ``pause_left``
    the paused days still to come (from the state's day on), ``lessons``/``milestones`` the
    progress so far.
    """

    tier: np.ndarray
    enrol_day: np.ndarray
    base: np.ndarray
    pace: np.ndarray
    decline_hazard: np.ndarray
    lessons_per_milestone: np.ndarray
    z: np.ndarray
    z_slow: np.ndarray
    decline_rate: np.ndarray
    decline_offset: np.ndarray
    pause_left: np.ndarray
    churned: np.ndarray
    lessons: np.ndarray
    milestones: np.ndarray
    mastered: np.ndarray

    @property
    def size(self) -> int:
        """Number of learners (or Monte-Carlo futures) held."""
        return int(self.z.shape[0])

    @property
    def engagement(self) -> np.ndarray:
        """Engagement on the 0-1 scale."""
        return _sigmoid(self.z)

    @property
    def state_code(self) -> np.ndarray:
        """ACTIVE, PAUSED or CHURNED per learner."""
        return np.where(self.churned, CHURNED, np.where(self.pause_left > 0, PAUSED, ACTIVE))

    def take(self, rows: np.ndarray) -> LearnerState:
        """The learners at ``rows`` (indices may repeat: that is how futures are cloned)."""
        return LearnerState(
            **{field.name: getattr(self, field.name)[rows] for field in fields(self)}
        )


@dataclass(frozen=True)
class DayOutcome:
    """What happened on one day, per learner: only what the label and the progress depend on."""

    active: np.ndarray
    cancelled: np.ndarray
    churned: np.ndarray
    lessons: np.ndarray
    milestones: np.ndarray


@dataclass(frozen=True)
class Profile:
    """Per-learner facts that shape the detailed events and the customers file, not the dynamics."""

    mrr: np.ndarray
    enrol_second: np.ndarray
    community: np.ndarray
    mobile: np.ndarray
    video: np.ndarray
    explore: np.ndarray
    truth_draw: np.ndarray


@dataclass(frozen=True)
class ActiveDays:
    """One element per (learner, active day), in day order: the input of event emission."""

    learner: np.ndarray
    day: np.ndarray
    engagement: np.ndarray
    lessons_before: np.ndarray
    lessons: np.ndarray
    milestones_before: np.ndarray
    milestones: np.ndarray
    joining: np.ndarray

    @property
    def size(self) -> int:
        """Number of active learner-days."""
        return int(self.learner.shape[0])


@dataclass(frozen=True)
class EventColumns:
    """Events as numpy columns: learner index, codes into the vocabularies; -1 or NaN is null."""

    learner: np.ndarray
    ts_us: np.ndarray
    event_type: np.ndarray
    duration_s: np.ndarray
    channel: np.ndarray
    item: np.ndarray


@dataclass(frozen=True)
class DayEvents:
    """Events placed within the active days: owning active day and second of that day, codes."""

    owner: np.ndarray
    second: np.ndarray
    event_type: np.ndarray
    duration_s: np.ndarray
    channel: np.ndarray
    item: np.ndarray


def _concatenated(kind: type[_Columns], parts: list[_Columns]) -> _Columns:
    """Dataclasses of equal-length numpy columns, end to end."""
    columns = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(kind)}
    return kind(**columns)


@dataclass(frozen=True)
class TruthRows:
    """Truth rows as numpy columns; ``y`` is -1 where the label window is incomplete."""

    learner: np.ndarray
    day: np.ndarray
    p_true: np.ndarray
    engagement: np.ndarray
    state: np.ndarray
    y: np.ndarray

    @staticmethod
    def concat(parts: list[TruthRows]) -> TruthRows:
        """All parts end to end (no parts: no rows)."""
        if not parts:
            return TruthRows(
                learner=np.zeros(0, dtype=np.int64),
                day=np.zeros(0, dtype=np.int32),
                p_true=np.zeros(0),
                engagement=np.zeros(0),
                state=np.zeros(0, dtype=np.int64),
                y=np.zeros(0, dtype=np.int8),
            )
        return _concatenated(TruthRows, parts)


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's output tables plus the latent facts the tests look at."""

    events: pa.Table
    customers: pa.Table
    truth: pa.Table
    final_state: LearnerState
    profile: Profile
    churn_day: np.ndarray


# --- the dynamics ---------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def advance_day(
    state: LearnerState,
    day: int,
    weekday: int,
    rng: np.random.Generator,
    params: DynamicsParameters = DYNAMICS,
) -> tuple[LearnerState, DayOutcome]:
    """Move every learner through one day: engagement, pause, churn, activity, progress.

    Used by the main simulation and by the Monte-Carlo truth alike. A learner joins (and is always
    active) on their enrolment day; transitions apply from the next day on; churned learners never
    move again. Draws happen in a fixed order, so a given stream gives a given day.

    Args:
        state: the learners at 00:00 of ``day``.
        day: day index since the simulation start.
        weekday: 0 = Monday ... 6 = Sunday, for ``day``.
        rng: the random stream (the dynamics stream or the truth stream).
        params: the dynamics constants.

    Returns:
        The state at 00:00 of the next day and what happened during ``day``.
    """
    joining = state.enrol_day == day
    settled = (state.enrol_day < day) & ~state.churned
    moved = _evolve_engagement(state, settled, rng, params)
    pause_left, paused = _evolve_pause(state.pause_left, settled, rng, params)
    hazard = _churn_hazard(state.tier, moved.z, moved.z_slow, paused, params)
    churning = settled & (rng.random(state.size) < hazard)
    paid = state.tier != FREEMIUM
    cancelled = churning & paid & (rng.random(state.size) < params.cancel_probability)
    p_active = _sigmoid(
        params.active_intercept + params.active_slope * moved.z + params.weekday_effect[weekday]
    )
    active = joining | (settled & ~paused & ~churning & (rng.random(state.size) < p_active))
    progressed = _progress(replace(moved, pause_left=pause_left), active, rng, params)
    after = replace(progressed, churned=state.churned | churning)
    outcome = DayOutcome(
        active=active,
        cancelled=cancelled,
        churned=churning,
        lessons=progressed.lessons - state.lessons,
        milestones=progressed.milestones - state.milestones,
    )
    return after, outcome


def _progress(
    state: LearnerState, active: np.ndarray, rng: np.random.Generator, params: DynamicsParameters
) -> LearnerState:
    """Lessons on active days (pace times an engagement factor), milestones, mastery."""
    expected = state.pace * (params.lessons_floor + _sigmoid(state.z))
    lessons = state.lessons.copy()
    lessons[active] += rng.poisson(expected[active]).astype(lessons.dtype)
    milestones = lessons // state.lessons_per_milestone
    mastered = state.mastered | (milestones >= params.mastery_milestones)
    return replace(state, lessons=lessons, milestones=milestones, mastered=mastered)


def _evolve_engagement(
    state: LearnerState, settled: np.ndarray, rng: np.random.Generator, params: DynamicsParameters
) -> LearnerState:
    """One OU step with shocks and slow declines, for settled learners only."""
    size = state.size
    step = params.volatility * rng.standard_normal(size)
    shocked = np.flatnonzero(rng.random(size) < params.shock_probability)
    step[shocked] += rng.normal(params.shock_mean, params.shock_sd, shocked.size)
    onset = np.flatnonzero(
        settled & (state.decline_rate == 0) & (rng.random(size) < state.decline_hazard)
    )
    decline_rate = state.decline_rate.copy()
    decline_rate[onset] = rng.uniform(*params.decline_rate_range, onset.size)
    decline_offset = np.where(
        settled,
        np.minimum(state.decline_offset + decline_rate, params.decline_cap),
        state.decline_offset,
    )
    level = state.base + params.mastery_lift * state.mastered - decline_offset
    step += params.reversion * (level - state.z)
    z = np.where(settled, state.z + step, state.z)
    z_slow = np.where(
        settled, state.z_slow + (z - state.z_slow) / params.slow_memory_days, state.z_slow
    )
    return replace(
        state, z=z, z_slow=z_slow, decline_rate=decline_rate, decline_offset=decline_offset
    )


def _evolve_pause(
    pause_left: np.ndarray,
    settled: np.ndarray,
    rng: np.random.Generator,
    params: DynamicsParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """Start pauses (memoryless) and count them down.

    Returns:
        The paused days left after today, and whether each learner is paused today.
    """
    size = pause_left.shape[0]
    starting = np.flatnonzero(
        settled & (pause_left == 0) & (rng.random(size) < params.pause_hazard)
    )
    low, high = params.pause_days_range
    pause_left = pause_left.copy()
    pause_left[starting] = rng.integers(low, high + 1, starting.size)
    paused = settled & (pause_left > 0)
    return (pause_left - paused).astype(np.int16), paused


def _churn_hazard(
    tier: np.ndarray,
    z: np.ndarray,
    z_slow: np.ndarray,
    paused: np.ndarray,
    params: DynamicsParameters,
) -> np.ndarray:
    """Daily churn probability: low engagement and a recent fall raise it; paid tiers lower it."""
    intercept = np.asarray(params.churn_intercept)[tier]
    recent_fall = np.maximum(z_slow - z, 0.0)
    logit = intercept - params.churn_engagement_slope * z + params.churn_decline_slope * recent_fall
    return _sigmoid(logit) * np.where(paused, params.pause_churn_factor, 1.0)


def estimate_label_probability(
    state: LearnerState,
    first_day: int,
    horizon_days: int,
    paths: int,
    start_weekday: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """P(y = 1) per learner: the share of futures with no event or a cancellation in the window.

    Args:
        state: the learners at 00:00 of ``first_day`` (the as_of instant).
        first_day: day index of as_of.
        horizon_days: W, the label window length.
        paths: Monte-Carlo futures per learner.
        start_weekday: weekday of day index 0.
        rng: the truth stream (never the dynamics stream, so truth does not change events).
    """
    futures = state.take(np.repeat(np.arange(state.size), paths))
    cancelled = np.zeros(futures.size, dtype=bool)
    seen_activity = np.zeros(futures.size, dtype=bool)
    open_rows = np.arange(futures.size)  # the futures still simulated
    for offset in range(horizon_days):
        if open_rows.size == 0:
            break
        day = first_day + offset
        futures, outcome = advance_day(futures, day, (start_weekday + day) % 7, rng)
        seen_activity[open_rows] |= outcome.active
        cancelled[open_rows] |= outcome.cancelled
        # Dropping settled futures (churned ones, and active freemium ones that cannot cancel)
        # changes no label and saves most of the work; dropping in batches keeps copies rare.
        settled = futures.churned | (seen_activity[open_rows] & (futures.tier == FREEMIUM))
        if np.count_nonzero(settled) > 0.2 * settled.size:
            open_rows, futures = open_rows[~settled], futures.take(np.flatnonzero(~settled))
    label = cancelled | ~seen_activity
    return label.reshape(state.size, paths).mean(axis=1)


# --- the population -------------------------------------------------------------------------------


def draw_population(
    size: int, days: int, rng: np.random.Generator, params: DynamicsParameters = DYNAMICS
) -> tuple[Profile, LearnerState]:
    """Traits, tier, mrr and enrolment day (uniform over the period) of ``size`` learners."""
    tier = rng.choice(len(TIER_TAGS), size=size, p=TIER_SHARES).astype(np.int8)
    enrol_day = rng.integers(0, days, size).astype(np.int32)
    base = rng.normal(0.0, params.base_sd, size) + np.asarray(params.tier_engagement_lift)[tier]
    decline_prone = rng.random(size) < params.decline_prone_share
    z0 = base + params.honeymoon + rng.normal(0.0, 0.4, size)
    state = LearnerState(
        tier=tier,
        enrol_day=enrol_day,
        base=base,
        pace=rng.lognormal(0.0, params.pace_sigma, size),
        decline_hazard=np.where(decline_prone, params.decline_onset_hazard, 0.0),
        lessons_per_milestone=rng.integers(4, 7, size).astype(np.int32),
        z=z0,
        z_slow=z0.copy(),
        decline_rate=np.zeros(size),
        decline_offset=np.zeros(size),
        pause_left=np.zeros(size, dtype=np.int16),
        churned=np.zeros(size, dtype=bool),
        lessons=np.zeros(size, dtype=np.int32),
        milestones=np.zeros(size, dtype=np.int32),
        mastered=np.zeros(size, dtype=bool),
    )
    return _draw_profile(tier, rng), state


def _draw_profile(tier: np.ndarray, rng: np.random.Generator) -> Profile:
    size = tier.shape[0]
    return Profile(
        mrr=_draw_mrr(tier, rng),
        enrol_second=_time_of_day(rng, size, latest=SECONDS_PER_DAY - 3600.0),
        community=rng.beta(1.2, 4.0, size),
        mobile=rng.beta(2.0, 2.0, size),
        video=rng.beta(2.0, 3.0, size),
        explore=rng.beta(2.0, 3.0, size),
        truth_draw=rng.random(size),
    )


def _draw_mrr(tier: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pro: one of the list prices 29-99; Enterprise: 200 per seat group (1-7), with a discount."""
    pro_price = rng.choice(
        np.array([29.0, 49.0, 79.0, 99.0]), size=tier.shape[0], p=[0.4, 0.3, 0.2, 0.1]
    )
    seat_groups = rng.integers(1, 8, tier.shape[0])
    discount = rng.uniform(0.85, 1.0, tier.shape[0])
    enterprise = np.round(np.maximum(200.0 * seat_groups * discount, 200.0), 0)
    return np.select([tier == PRO, tier == ENTERPRISE], [pro_price, enterprise], default=0.0)


_HOUR_WEIGHTS = np.array(
    [
        *(1.0, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 2.5, 3.5, 3.5, 3.2, 3.2),  # 00:00-11:59
        *(4.0, 3.8, 3.0, 3.0, 3.2, 3.8, 4.5, 5.5, 6.0, 5.5, 4.0, 2.2),  # 12:00-23:59
    ]
)
"""Relative activity by UTC hour: a lunch bump and an evening peak."""


def _time_of_day(
    rng: np.random.Generator,
    size: int,
    earliest: np.ndarray | float = 0.0,
    latest: float = LAST_SECOND,
) -> np.ndarray:
    """Seconds into the day following the daily rhythm, squeezed into [earliest, latest)."""
    hour = rng.choice(24, size=size, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    natural = (hour + rng.random(size)) / 24.0
    return earliest + natural * (latest - earliest)


# --- one chunk ------------------------------------------------------------------------------------


class _DayRecorder:
    """Keeps the main simulation's days: active learner-days, event days, churns, cancellations."""

    def __init__(self, size: int, days: int) -> None:
        self.event_days = np.zeros((size, days), dtype=bool)
        self.churn_day = np.full(size, -1, dtype=np.int32)
        self.cancel_day = np.full(size, -1, dtype=np.int32)
        self._parts: list[tuple[np.ndarray, ...]] = []

    def record(
        self, day: int, before: LearnerState, after: LearnerState, outcome: DayOutcome
    ) -> None:
        """Keep what happened on ``day``."""
        self.event_days[:, day] = outcome.active | outcome.cancelled
        self.churn_day[outcome.churned] = day
        self.cancel_day[outcome.cancelled] = day
        rows = np.flatnonzero(outcome.active)
        self._parts.append(
            (
                rows,
                np.full(rows.size, day, dtype=np.int32),
                after.engagement[rows],
                before.lessons[rows],
                outcome.lessons[rows],
                before.milestones[rows],
                outcome.milestones[rows],
                before.enrol_day[rows] == day,
            )
        )

    def active_days(self) -> ActiveDays:
        """Every active learner-day recorded, in day order."""
        columns = [np.concatenate(column) for column in zip(*self._parts, strict=True)]
        return ActiveDays(*columns)


def simulate_chunk(
    config: SimulationConfig, seed: np.random.SeedSequence, first_customer: int, size: int
) -> ChunkResult:
    """Simulate ``size`` learners (customer numbers first_customer + 1 ...) over the whole period.

    Args:
        config: the simulation config.
        seed: this chunk's child of ``SeedSequence(config.seed)``.
        first_customer: learners before this chunk (customer ids continue from there).
        size: learners in this chunk.
    """
    population_rng, dynamics_rng, activity_rng, truth_rng = _streams(seed, 4)
    profile, state = draw_population(size, config.days, population_rng)
    recorder = _DayRecorder(size, config.days)
    truth_days = set(config.truth_days)
    truth_parts: list[TruthRows] = []
    start_weekday = config.start.weekday()
    for day in range(config.days):
        if day in truth_days:
            eligible = _truth_eligible(state, profile, recorder.event_days, day, config.truth_share)
            truth_parts.append(_truth_rows(state, eligible, day, config, truth_rng))
        after, outcome = advance_day(state, day, (start_weekday + day) % 7, dynamics_rng)
        recorder.record(day, state, after, outcome)
        state = after
    events = _emit_events(recorder.active_days(), state, profile, config, activity_rng)
    cancellations = _cancellations(recorder.cancel_day, config, activity_rng)
    truth = _with_realised_labels(truth_parts, recorder, config)
    customer_ids = _customer_ids(first_customer, size)
    enrolled_us = _enrolled_us(state, profile, config)
    all_events = _concatenated(EventColumns, [events, cancellations])
    return ChunkResult(
        events=_events_table(all_events, customer_ids, enrolled_us, recorder.churn_day, config),
        customers=_customers_table(customer_ids, state, profile, enrolled_us),
        truth=_truth_table(truth, customer_ids, config),
        final_state=state,
        profile=profile,
        churn_day=recorder.churn_day,
    )


def _streams(seed: np.random.SeedSequence, count: int) -> list[np.random.Generator]:
    """``count`` independent generators under ``seed``.

    Same children as ``seed.spawn(count)`` on a fresh sequence, but without spawn's hidden counter,
    so that simulating the same chunk twice gives the same learners.
    """
    return [
        np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k)))
        for k in range(count)
    ]


def _truth_eligible(
    state: LearnerState, profile: Profile, event_days: np.ndarray, day: int, share: float
) -> np.ndarray:
    """Sampled learners enrolled before as_of with an event in [as_of - 30d, as_of) (DESIGN §4).

    The enrolment day always has an event, so learners enrolled less than 30 days ago qualify too.
    """
    recent = event_days[:, max(day - ELIGIBILITY_DAYS, 0) : day].any(axis=1)
    return np.flatnonzero((profile.truth_draw < share) & (state.enrol_day < day) & recent)


def _truth_rows(
    state: LearnerState,
    rows: np.ndarray,
    day: int,
    config: SimulationConfig,
    rng: np.random.Generator,
) -> TruthRows:
    """p_true, engagement and state of ``rows`` at 00:00 of ``day`` (churned: p_true = 1)."""
    at_as_of = state.take(rows)
    p_true = np.ones(rows.size)
    alive = ~at_as_of.churned
    p_true[alive] = estimate_label_probability(
        at_as_of.take(np.flatnonzero(alive)),
        day,
        config.horizon_days,
        config.truth_paths,
        config.start.weekday(),
        rng,
    )
    return TruthRows(
        learner=rows,
        day=np.full(rows.size, day, dtype=np.int32),
        p_true=p_true,
        engagement=at_as_of.engagement,
        state=at_as_of.state_code,
        y=np.full(rows.size, -1, dtype=np.int8),
    )


def _with_realised_labels(
    parts: list[TruthRows], recorder: _DayRecorder, config: SimulationConfig
) -> TruthRows:
    """Fill y from the simulated event days: 1 iff no event in [t, t+W) or a cancellation in it.

    Rows whose label window ends after the end of the log keep y = -1 (written as null).
    """
    labelled = []
    for part in parts:
        as_of = int(part.day[0]) if part.day.size else 0
        window_end = as_of + config.horizon_days
        if part.day.size and window_end <= config.days:
            silent = ~recorder.event_days[part.learner, as_of:window_end].any(axis=1)
            cancel_day = recorder.cancel_day[part.learner]
            cancelled = (cancel_day >= as_of) & (cancel_day < window_end)
            part = replace(part, y=(silent | cancelled).astype(np.int8))
        labelled.append(part)
    return TruthRows.concat(labelled)


# --- the detailed events of active days -----------------------------------------------------------


@dataclass(frozen=True)
class Sessions:
    """The sessions of the active days: ``first``/``count`` per active day, the rest per session."""

    first: np.ndarray
    count: np.ndarray
    start_s: np.ndarray
    duration_s: np.ndarray
    channel: np.ndarray


@dataclass(frozen=True)
class _Placed:
    """Events of one kind placed inside sessions: owning active day, second of day, channel."""

    owner: np.ndarray
    second: np.ndarray
    channel: np.ndarray


@cache
def item_vocabulary() -> tuple[str, ...]:
    """Every item id the simulator writes: lessons, milestones, quizzes, features, videos."""
    return (
        *(f"L{number:03d}" for number in range(1, COURSE_LESSONS + 1)),
        *(f"M{number:02d}" for number in range(1, COURSE_MILESTONES + 1)),
        *(f"Q{number:03d}" for number in range(1, COURSE_LESSONS + 1)),
        *FEATURE_NAMES,
        *(f"V{number:04d}" for number in range(1, COURSE_LESSONS * VIDEOS_PER_LESSON + 1)),
    )


LESSON_ITEMS = 0
MILESTONE_ITEMS = LESSON_ITEMS + COURSE_LESSONS
QUIZ_ITEMS = MILESTONE_ITEMS + COURSE_MILESTONES
FEATURE_ITEMS = QUIZ_ITEMS + COURSE_LESSONS
VIDEO_ITEMS = FEATURE_ITEMS + len(FEATURE_NAMES)


def _emit_events(
    days: ActiveDays,
    state: LearnerState,
    profile: Profile,
    config: SimulationConfig,
    rng: np.random.Generator,
) -> EventColumns:
    """All non-cancellation events of the recorded active days."""
    sessions = _draw_sessions(days, profile, rng)
    lessons, last_lesson = _lesson_events(days, sessions, rng)
    parts = [
        _session_events(sessions),
        lessons,
        _milestone_events(days, last_lesson),
        *_quiz_events(days, state, sessions, rng),
        *_community_events(days, profile, sessions, rng),
        _feature_events(days, profile, sessions, rng),
        _video_events(days, profile, sessions, rng),
    ]
    return _timestamped(days, parts, config)


def _draw_sessions(days: ActiveDays, profile: Profile, rng: np.random.Generator) -> Sessions:
    """1+ sessions per active day, more and longer when engaged; channel by mobile preference."""
    count = 1 + rng.poisson(0.1 + 0.4 * days.engagement)
    owner = np.repeat(np.arange(days.size), count)
    earliest = np.where(days.joining, profile.enrol_second[days.learner], 0.0)[owner]
    median_minutes = 4.0 + 30.0 * days.engagement[owner]
    minutes = rng.lognormal(np.log(median_minutes), 0.7)
    mobile = profile.mobile[days.learner][owner]
    return Sessions(
        first=np.cumsum(count) - count,
        count=count,
        start_s=_time_of_day(rng, owner.size, earliest=earliest),
        duration_s=np.clip(minutes * 60.0, 30.0, 4 * 3600.0),
        channel=_draw_channels(mobile, rng),
    )


def _draw_channels(mobile_preference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A little api traffic (integrations), the rest mobile or web by preference."""
    draw = rng.random(mobile_preference.shape[0])
    api_share = 0.03
    is_mobile = draw < api_share + (1 - api_share) * mobile_preference
    return np.where(draw < api_share, API, np.where(is_mobile, MOBILE, WEB)).astype(np.int8)


def _place(counts: np.ndarray, sessions: Sessions, rng: np.random.Generator) -> _Placed:
    """Put ``counts[i]`` events in random sessions of active day i, at random moments of them."""
    owner = np.repeat(np.arange(counts.shape[0]), counts)
    pick = sessions.first[owner] + (rng.random(owner.size) * sessions.count[owner]).astype(np.int64)
    start = sessions.start_s[pick]
    within_day = np.minimum(sessions.duration_s[pick], LAST_SECOND - start)
    second = start + rng.random(owner.size) * within_day
    return _Placed(owner, second, sessions.channel[pick])


def _rank_within(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of ``np.repeat(arange, counts)``."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _kind(
    placed: _Placed,
    event_type: int,
    item: np.ndarray | None = None,
    duration_s: np.ndarray | None = None,
) -> DayEvents:
    """Columns of one kind of event; no item or no duration means null."""
    size = placed.owner.shape[0]
    return DayEvents(
        owner=placed.owner,
        second=placed.second,
        event_type=np.full(size, event_type, dtype=np.int8),
        duration_s=np.full(size, np.nan) if duration_s is None else duration_s,
        channel=placed.channel,
        item=np.full(size, -1, dtype=np.int32) if item is None else item.astype(np.int32),
    )


def _session_events(sessions: Sessions) -> DayEvents:
    owner = np.repeat(np.arange(sessions.count.shape[0]), sessions.count)
    placed = _Placed(owner, sessions.start_s, sessions.channel)
    return _kind(placed, SESSION, duration_s=sessions.duration_s)


def _lesson_events(
    days: ActiveDays, sessions: Sessions, rng: np.random.Generator
) -> tuple[DayEvents, _Placed]:
    """Lessons in time order, numbered on from the learner's progress; and each day's last one."""
    placed = _place(days.lessons, sessions, rng)
    order = np.lexsort((placed.second, placed.owner))
    placed = _Placed(placed.owner, placed.second[order], placed.channel[order])
    number = days.lessons_before[placed.owner] + _rank_within(days.lessons)
    last_index = (np.cumsum(days.lessons) - 1)[days.lessons > 0]
    last = _Placed(
        np.flatnonzero(days.lessons > 0), placed.second[last_index], placed.channel[last_index]
    )
    return _kind(placed, LESSON, item=LESSON_ITEMS + number % COURSE_LESSONS), last


def _milestone_events(days: ActiveDays, last_lesson: _Placed) -> DayEvents:
    """A milestone a second after the lesson that completed it (the day's last lesson)."""
    second_by_day = np.zeros(days.size)
    channel_by_day = np.zeros(days.size, dtype=np.int8)
    second_by_day[last_lesson.owner] = last_lesson.second
    channel_by_day[last_lesson.owner] = last_lesson.channel
    owner = np.repeat(np.arange(days.size), days.milestones)
    rank = _rank_within(days.milestones)
    lesson_second = second_by_day[owner]
    step = np.minimum(1.0, (LAST_SECOND - lesson_second) / (days.milestones[owner] + 1))
    second = lesson_second + step * (rank + 1)
    item = MILESTONE_ITEMS + (days.milestones_before[owner] + rank) % COURSE_MILESTONES
    return _kind(_Placed(owner, second, channel_by_day[owner]), MILESTONE, item=item)


def _current_lesson(days: ActiveDays) -> np.ndarray:
    """0-based number of the lesson the learner is on at the end of each active day."""
    return np.maximum(days.lessons_before + days.lessons - 1, 0) % COURSE_LESSONS


def _quiz_events(
    days: ActiveDays, state: LearnerState, sessions: Sessions, rng: np.random.Generator
) -> list[DayEvents]:
    """Quiz attempts on the current lesson; fast, engaged learners pass (minutes later) more."""
    attempts = _place(rng.poisson(0.1 + 0.35 * days.lessons), sessions, rng)
    item = QUIZ_ITEMS + _current_lesson(days)[attempts.owner]
    pace = state.pace[days.learner][attempts.owner]
    engagement = days.engagement[attempts.owner]
    p_pass = _sigmoid(-0.2 + 1.2 * np.log(pace) + 3.0 * (engagement - 0.5))
    passed = rng.random(attempts.owner.size) < p_pass
    room = LAST_SECOND - attempts.second
    delay = np.where(
        room > 600.0,
        rng.uniform(60.0, 600.0, attempts.owner.size),
        rng.random(attempts.owner.size) * room,
    )
    passes = _Placed(
        attempts.owner[passed], (attempts.second + delay)[passed], attempts.channel[passed]
    )
    return [_kind(attempts, QUIZ_ATTEMPT, item=item), _kind(passes, QUIZ_PASS, item=item[passed])]


def _community_events(
    days: ActiveDays, profile: Profile, sessions: Sessions, rng: np.random.Generator
) -> list[DayEvents]:
    """Posts and replies by community affinity (replies are the commoner)."""
    drive = profile.community[days.learner] * (0.4 + days.engagement)
    posts = _place(rng.poisson(0.35 * drive), sessions, rng)
    replies = _place(rng.poisson(0.9 * drive), sessions, rng)
    return [_kind(posts, POST), _kind(replies, REPLY)]


def _feature_events(
    days: ActiveDays, profile: Profile, sessions: Sessions, rng: np.random.Generator
) -> DayEvents:
    """Feature use: explorers use features more and reach further down the list."""
    explore = profile.explore[days.learner]
    placed = _place(rng.poisson(0.2 + 1.0 * explore), sessions, rng)
    reach = np.minimum(2 + np.floor(explore * (len(FEATURE_NAMES) - 1)), len(FEATURE_NAMES))
    rank = np.floor(rng.random(placed.owner.size) ** 1.5 * reach[placed.owner])
    return _kind(placed, FEATURE, item=FEATURE_ITEMS + rank)


def _video_events(
    days: ActiveDays, profile: Profile, sessions: Sessions, rng: np.random.Generator
) -> DayEvents:
    """Videos of the current lesson, by video preference; watch time a few minutes."""
    drive = profile.video[days.learner] * (0.3 + days.engagement)
    placed = _place(rng.poisson(1.4 * drive), sessions, rng)
    lesson = _current_lesson(days)[placed.owner]
    item = (
        VIDEO_ITEMS + lesson * VIDEOS_PER_LESSON + rng.integers(0, VIDEOS_PER_LESSON, lesson.size)
    )
    watch = np.clip(rng.lognormal(np.log(240.0), 0.7, lesson.size), 10.0, 2700.0)
    return _kind(placed, VIDEO, item=item, duration_s=watch)


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _instant_us(config: SimulationConfig, day: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch of ``second`` into day index ``day`` (floored)."""
    day_us = (_epoch_day(config.start) + day.astype(np.int64)) * SECONDS_PER_DAY * MICROS_PER_SECOND
    return day_us + np.floor(second * MICROS_PER_SECOND).astype(np.int64)


def _timestamped(
    days: ActiveDays, parts: list[DayEvents], config: SimulationConfig
) -> EventColumns:
    """Turn (active day, second of that day) into (learner, UTC microseconds)."""
    events = _concatenated(DayEvents, parts)
    return EventColumns(
        learner=days.learner[events.owner],
        ts_us=_instant_us(config, days.day[events.owner], events.second),
        event_type=events.event_type,
        duration_s=events.duration_s,
        channel=events.channel,
        item=events.item,
    )


def _cancellations(
    cancel_day: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> EventColumns:
    """One subscription_cancelled per cancelling learner, at a random moment of the churn day."""
    learner = np.flatnonzero(cancel_day >= 0)
    second = rng.random(learner.size) * LAST_SECOND
    return EventColumns(
        learner=learner,
        ts_us=_instant_us(config, cancel_day[learner], second),
        event_type=np.full(learner.size, CANCEL, dtype=np.int8),
        duration_s=np.full(learner.size, np.nan),
        channel=np.full(learner.size, -1, dtype=np.int8),
        item=np.full(learner.size, -1, dtype=np.int32),
    )


# --- tables and files -----------------------------------------------------------------------------


def _customer_ids(first_customer: int, size: int) -> pa.Array:
    numbers = range(first_customer + 1, first_customer + size + 1)
    return pa.array([f"C{number:07d}" for number in numbers], type=pa.string())


def _enrolled_us(state: LearnerState, profile: Profile, config: SimulationConfig) -> np.ndarray:
    return _instant_us(config, state.enrol_day, profile.enrol_second)


def _check_events(
    events: EventColumns, enrolled_us: np.ndarray, churn_day: np.ndarray, config: SimulationConfig
) -> None:
    """The simulator's own promises; a breach is a bug here, so it stops the run loudly."""
    end_us = _epoch_day(config.end) * SECONDS_PER_DAY * MICROS_PER_SECOND
    day = events.ts_us // (SECONDS_PER_DAY * MICROS_PER_SECOND) - _epoch_day(config.start)
    churn = churn_day[events.learner]
    breaches = {
        "ts before the learner's enrolled_at": events.ts_us < enrolled_us[events.learner],
        f"ts at or after the end of the log {config.end}": events.ts_us >= end_us,
        "ts after the learner's churn day": (churn >= 0) & (day > churn),
        "negative duration_s": events.duration_s < 0,
    }
    found = {what: int(mask.sum()) for what, mask in breaches.items() if mask.any()}
    if found:
        details = "; ".join(f"{rows} rows have {what}" for what, rows in found.items())
        raise RuntimeError(f"{EVENTS_FILE}: simulator bug: {details}")


def _events_table(
    events: EventColumns,
    customer_ids: pa.Array,
    enrolled_us: np.ndarray,
    churn_day: np.ndarray,
    config: SimulationConfig,
) -> pa.Table:
    """Checked events sorted by customer_id then ts, as arrow arrays (no pandas metadata)."""
    _check_events(events, enrolled_us, churn_day, config)
    order = np.lexsort((events.ts_us, events.learner))
    channel, item = events.channel[order], events.item[order]
    duration = events.duration_s[order]
    columns = [
        customer_ids.take(pa.array(events.learner[order])),
        pa.array(events.ts_us[order], type=pa.timestamp("us", tz="UTC")),
        pa.array(CANONICAL_EVENT_TYPES, type=pa.string()).take(pa.array(events.event_type[order])),
        pa.array(duration, mask=np.isnan(duration), type=pa.float64()),
        pa.array(CHANNELS, type=pa.string()).take(pa.array(channel, mask=channel < 0)),
        pa.array(item_vocabulary(), type=pa.string()).take(pa.array(item, mask=item < 0)),
    ]
    return pa.Table.from_arrays(columns, schema=EVENTS_SCHEMA)


def _customers_table(
    customer_ids: pa.Array, state: LearnerState, profile: Profile, enrolled_us: np.ndarray
) -> pa.Table:
    columns = [
        customer_ids,
        pa.array(TIER_TAGS, type=pa.string()).take(pa.array(state.tier)),
        pa.array(enrolled_us, type=pa.timestamp("us", tz="UTC")),
        pa.array(profile.mrr, type=pa.float64()),
    ]
    return pa.Table.from_arrays(columns, schema=CUSTOMERS_SCHEMA)


def _truth_table(truth: TruthRows, customer_ids: pa.Array, config: SimulationConfig) -> pa.Table:
    as_of = (_epoch_day(config.start) + truth.day).astype(np.int32)
    columns = [
        customer_ids.take(pa.array(truth.learner)),
        pa.array(as_of, type=pa.date32()),
        pa.array(truth.p_true, type=pa.float64()),
        pa.array(truth.engagement, type=pa.float64()),
        pa.array(STATES, type=pa.string()).take(pa.array(truth.state)),
        pa.array(truth.y, mask=truth.y < 0, type=pa.int8()),
    ]
    return pa.Table.from_arrays(columns, schema=TRUTH_SCHEMA)


@contextmanager
def _parquet_writers(out_dir: Path) -> Iterator[dict[str, pq.ParquetWriter]]:
    """One writer per output file, writing to a temporary name renamed only when all went well."""
    schemas = {
        EVENTS_FILE: EVENTS_SCHEMA,
        CUSTOMERS_FILE: CUSTOMERS_SCHEMA,
        TRUTH_FILE: TRUTH_SCHEMA,
    }
    partial = {name: out_dir / f".{name}.partial" for name in schemas}
    writers = {name: pq.ParquetWriter(partial[name], schema) for name, schema in schemas.items()}
    try:
        yield writers
    except BaseException:
        for name, writer in writers.items():
            writer.close()
            partial[name].unlink(missing_ok=True)
        raise
    for name, writer in writers.items():
        writer.close()
        partial[name].replace(out_dir / name)


def simulate(
    config: SimulationConfig,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> SimulationSummary:
    """Simulate ``config.customers`` learners and write the three parquet files and meta.json.

    Args:
        config: population size, period, seed and truth sampling.
        out_dir: directory for the files (created if missing; existing outputs are replaced).
        progress: called with the number of learners just finished, after each chunk.

    Returns:
        Counts, the period and the files written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk_count = -(-config.customers // CHUNK_SIZE)
    events = truth_rows = 0
    with _parquet_writers(out_dir) as writers:
        for index, seed in enumerate(np.random.SeedSequence(config.seed).spawn(chunk_count)):
            first = index * CHUNK_SIZE
            size = min(CHUNK_SIZE, config.customers - first)
            chunk = simulate_chunk(config, seed, first, size)
            for name, table in _tables(chunk).items():
                if table.num_rows:  # no empty row groups: an empty file still has the schema
                    writers[name].write_table(table, row_group_size=table.num_rows)
            events += chunk.events.num_rows
            truth_rows += chunk.truth.num_rows
            if progress is not None:
                progress(size)
    _write_meta(out_dir, config, events=events, truth_rows=truth_rows)
    return SimulationSummary(
        customers=config.customers,
        events=events,
        truth_rows=truth_rows,
        start=config.start,
        end=config.end,
        files=tuple(
            out_dir / name for name in (EVENTS_FILE, CUSTOMERS_FILE, TRUTH_FILE, META_FILE)
        ),
        seconds=time.perf_counter() - started,
    )


def _write_meta(out_dir: Path, config: SimulationConfig, *, events: int, truth_rows: int) -> None:
    """meta.json: the config, the end of the log (data_end) and the row counts; no timings, so
    that the same config gives the same bytes."""
    meta = {
        "config": config.model_dump(mode="json"),
        "data_end": config.end.isoformat(),
        "customers": config.customers,
        "events": events,
        "truth_rows": truth_rows,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _tables(chunk: ChunkResult) -> dict[str, pa.Table]:
    return {EVENTS_FILE: chunk.events, CUSTOMERS_FILE: chunk.customers, TRUTH_FILE: chunk.truth}


# --- the intervention effect (issue 12): contacts that bring learners back ------------------------

CONTACT_CHANNELS: tuple[str, ...] = ("email", "push", "in_app", "csm_task", "webhook")
"""The campaign channels a contact may use (``serving.core.messages.CHANNELS``)."""

CONTACT_COLUMNS: tuple[str, ...] = ("customer_id", "day", "channel")

_MOBILE_CONTACTS = frozenset({"push", "in_app"})
"""Channels whose re-engagement session happens on the phone."""


class InterventionEffect(BaseModel):
    """What a contact does to the simulated learner (off by default: ``effect`` = 0).

    A contacted learner re-engages when three things hold: they respond to the contact's channel
    (a per-learner trait: a stable draw per learner and channel below
    ``responsiveness[channel]``), they are reachable (enrolled by the contact day, no
    cancellation in the log up to the last possible re-engagement day, and that day still inside
    the log) and a per-contact draw falls below ``effect``. A re-engaged learner gets a session
    and a completed lesson (their next) on one of the ``within_days`` days after the contact.
    Nothing else changes: the base log, the truth file and the learners who are not contacted
    stay as simulated.

    So, with ``c`` the learner's chance of a re-engagement event in a window that covers those
    days anyway, a contact raises it to ``c + (1 - c) * responsive * reachable * effect``: the
    true uplift of a contacted group is ``effect`` times the mean of
    ``responsive * reachable * (1 - converted without the contact)`` over the group.

    Attributes:
        effect: P(re-engage | contacted on a channel the learner responds to, reachable).
        responsiveness: per channel, the share of learners who respond to it.
        within_days: the re-engagement falls on day + 1 ... day + within_days of the contact.
        seed: the draws' seed (independent of the simulation's streams).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: float = Field(0.0, ge=0.0, le=1.0)
    responsiveness: dict[str, float] = Field(
        default_factory=lambda: {
            "email": 0.6,
            "push": 0.5,
            "in_app": 0.7,
            "csm_task": 0.9,
            "webhook": 0.0,
        }
    )
    within_days: int = Field(3, gt=0)
    seed: int = Field(0, ge=0)

    @field_validator("responsiveness")
    @classmethod
    def _known_shares(cls, shares: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(shares) - set(CONTACT_CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; expected {list(CONTACT_CHANNELS)}")
        bad = {name: share for name, share in shares.items() if not 0.0 <= share <= 1.0}
        if bad:
            raise ValueError(f"responsiveness outside [0, 1]: {bad}")
        return shares


def _uniforms(seed: int, what: str, *keys: Sequence[object]) -> np.ndarray:
    """Stable U[0, 1) draws, one per row of ``keys``: the same key gives the same draw in any
    subset or order of rows (a hash, not a stream), so treated and control can be drawn apart."""
    draws = []
    for row in zip(*keys, strict=True):
        raw = "|".join([str(seed), what, *map(str, row)]).encode()
        draws.append(int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") / 2.0**64)
    return np.asarray(draws, dtype=float)


def responds_to(
    customer_ids: Sequence[str], channel: str, intervention: InterventionEffect
) -> np.ndarray:
    """Whether each learner responds to ``channel`` (their trait; independent of any contact)."""
    if channel not in CONTACT_CHANNELS:
        raise ValueError(f"contacts: unknown channel {channel!r}; expected {CONTACT_CHANNELS}")
    share = intervention.responsiveness.get(channel, 0.0)
    ids = list(customer_ids)
    return _uniforms(intervention.seed, "responds", ids, [channel] * len(ids)) < share


def _checked_contacts(contacts: pd.DataFrame) -> pd.DataFrame:
    missing = [name for name in CONTACT_COLUMNS if name not in contacts.columns]
    if missing:
        raise ValueError(f"contacts: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(contacts["channel"]) - set(CONTACT_CHANNELS))
    if unknown:
        raise ValueError(f"contacts: unknown channel(s) {unknown}; expected {CONTACT_CHANNELS}")
    frame = contacts[list(CONTACT_COLUMNS)].drop_duplicates().reset_index(drop=True)
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def contact_outcomes(
    contacts: pd.DataFrame, events: pa.Table, intervention: InterventionEffect, log_end: date
) -> pd.DataFrame:
    """Per contact: whether the learner responds, is reachable and re-engages, and on which day.

    Args:
        contacts: ``CONTACT_COLUMNS`` (customer_id, day: the contact's data day, channel).
        events: the base event log (``EVENTS_SCHEMA``).
        intervention: the effect's settings.
        log_end: the end of the log (exclusive): ``SimulationConfig.end``.

    Returns:
        The contacts with ``responsive``, ``reachable``, ``re_engaged`` and ``reengage_day``
        (a date, or None).
    """
    frame = _checked_contacts(contacts)
    responsive = np.zeros(len(frame), dtype=bool)
    for channel, rows in frame.groupby("channel").groups.items():
        responsive[rows] = responds_to(frame.loc[rows, "customer_id"], channel, intervention)
    day = pd.to_datetime(frame["day"])
    last_day = day + pd.Timedelta(days=intervention.within_days)
    first, cancel = (
        pd.to_datetime(frame["customer_id"].map(days)) for days in _first_and_cancel_days(events)
    )
    # Enrolled (their enrolment day always has an event), not cancelled, and room in the log;
    # a NaT compares False, so a learner with no event or no cancellation gets what they should.
    reachable = (first <= day) & ~(cancel <= last_day) & (last_day < pd.Timestamp(log_end))
    keys = (frame["customer_id"], frame["day"], frame["channel"])
    draw = _uniforms(intervention.seed, "re-engages", *keys)
    offset = 1 + np.floor(_uniforms(intervention.seed, "when", *keys) * intervention.within_days)
    frame["responsive"] = responsive
    frame["reachable"] = reachable.to_numpy()
    frame["re_engaged"] = responsive & frame["reachable"] & (draw < intervention.effect)
    frame["reengage_day"] = [
        day + timedelta(days=int(k)) if hit else None
        for day, k, hit in zip(frame["day"], offset, frame["re_engaged"], strict=True)
    ]
    return frame


def _first_and_cancel_days(events: pa.Table) -> tuple[dict[str, date], dict[str, date]]:
    """Each learner's first event day and each cancelling learner's cancellation day (UTC)."""
    frame = pd.DataFrame(
        {
            "customer_id": events["customer_id"].to_pandas(),
            "day": events["ts"].to_pandas().dt.date,
            "cancel": events["event_type"].to_pandas() == "subscription_cancelled",
        }
    )
    first = frame.groupby("customer_id")["day"].min()
    cancels = frame[frame["cancel"]].groupby("customer_id")["day"].min()
    return first.to_dict(), cancels.to_dict()


def apply_contacts(
    events: pa.Table, contacts: pd.DataFrame, intervention: InterventionEffect, log_end: date
) -> tuple[pa.Table, pd.DataFrame]:
    """The event log with the re-engagements the contacts caused, and each contact's outcome.

    With ``intervention.effect`` = 0 (or no contacts) the log comes back unchanged; otherwise only
    re-engaged learners gain events (a session and a lesson per re-engaging contact), and the
    log stays sorted by customer then time. The truth file describes the world without contacts.

    Args:
        events: the base event log (``EVENTS_SCHEMA``).
        contacts: ``CONTACT_COLUMNS``, e.g. the sent messages (customer_id, due_on, channel).
        intervention: the effect's settings.
        log_end: the end of the log (exclusive): ``SimulationConfig.end``.
    """
    outcomes = contact_outcomes(contacts, events, intervention, log_end)
    hits = outcomes[outcomes["re_engaged"]].reset_index(drop=True)
    if hits.empty:
        return events, outcomes
    added = _reengagement_events(hits, events, intervention.seed)
    merged = pa.concat_tables([events, added])
    return merged.sort_by([("customer_id", "ascending"), ("ts", "ascending")]), outcomes


def _reengagement_events(hits: pd.DataFrame, events: pa.Table, seed: int) -> pa.Table:
    """A session between 08:00 and 20:00 of the re-engagement day and a lesson within it."""
    keys = (hits["customer_id"], hits["day"], hits["channel"])
    start_s = 8 * 3600.0 + _uniforms(seed, "start", *keys) * 12 * 3600.0
    duration_s = 600.0 + _uniforms(seed, "length", *keys) * 1200.0
    lesson_s = start_s + duration_s * (0.3 + 0.6 * _uniforms(seed, "lesson", *keys))
    day_us = np.array([_epoch_day(day) for day in hits["reengage_day"]], dtype=np.int64) * (
        SECONDS_PER_DAY * MICROS_PER_SECOND
    )
    session_us = day_us + np.floor(start_s * MICROS_PER_SECOND).astype(np.int64)
    lesson_us = day_us + np.floor(lesson_s * MICROS_PER_SECOND).astype(np.int64)
    mobile = hits["channel"].isin(_MOBILE_CONTACTS).to_numpy()
    channel = np.where(mobile, CHANNELS[MOBILE], CHANNELS[WEB]).tolist()
    lesson = _next_lessons(hits["customer_id"], session_us, events)
    ids = hits["customer_id"].tolist()
    columns = {
        "customer_id": ids + ids,
        "ts": np.concatenate([session_us, lesson_us]),
        "event_type": [CANONICAL_EVENT_TYPES[SESSION]] * len(ids)
        + [CANONICAL_EVENT_TYPES[LESSON]] * len(ids),
        "duration_s": [*duration_s.tolist(), *([None] * len(ids))],
        "channel": channel + channel,
        "item": [None] * len(ids) + [f"L{number + 1:03d}" for number in lesson],
    }
    arrays = [pa.array(columns[field.name], type=field.type) for field in EVENTS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=EVENTS_SCHEMA)


def _next_lessons(customer_ids: pd.Series, before_us: np.ndarray, events: pa.Table) -> np.ndarray:
    """0-based number of each learner's next lesson: their lessons before ``before_us``, mod the
    course length (as the simulation numbers them)."""
    lessons = events.filter(
        pc.and_(
            pc.equal(events["event_type"], CANONICAL_EVENT_TYPES[LESSON]),
            pc.is_in(events["customer_id"], pa.array(customer_ids.unique(), type=pa.string())),
        )
    )
    done = pd.DataFrame(
        {
            "customer_id": lessons["customer_id"].to_pylist(),
            "done_us": lessons["ts"].cast(pa.int64()).to_numpy(),
        }
    )
    asked = pd.DataFrame({"customer_id": customer_ids.to_numpy(), "before_us": before_us})
    pairs = asked.reset_index().merge(done, on="customer_id", how="left")
    counts = (pairs["done_us"] < pairs["before_us"]).groupby(pairs["index"]).sum()
    return (counts.reindex(asked.index, fill_value=0).to_numpy() % COURSE_LESSONS).astype(int)


def apply_contacts_to_run(
    run_dir: Path, contacts: pd.DataFrame, intervention: InterventionEffect
) -> pd.DataFrame:
    """Apply contacts to a simulated run's ``events.parquet`` in place, once; note it in meta.json.

    The file is replaced only when whole (a temporary file renamed over it). ``meta.json``
    records the intervention and the counts, and a second application is refused: the draws are
    stable, so applying the same contacts twice would duplicate the re-engagements.

    Args:
        run_dir: a directory ``simulate`` wrote (its meta.json gives the end of the log).
        contacts: ``CONTACT_COLUMNS``; e.g. the sent outbox messages' customer_id, due_on (as
            ``day``) and channel.
        intervention: the effect's settings.

    Returns:
        ``contact_outcomes`` of the contacts.
    """
    meta_path, events_path = Path(run_dir) / META_FILE, Path(run_dir) / EVENTS_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: not found (is {run_dir} a simulated run?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if "intervention" in meta:
        raise ValueError(f"{meta_path}: contacts were already applied to this run; simulate anew")
    events = pq.read_table(events_path, schema=EVENTS_SCHEMA)
    log_end = date.fromisoformat(meta["data_end"])
    contacted, outcomes = apply_contacts(events, contacts, intervention, log_end)
    partial = events_path.with_name(f".{EVENTS_FILE}.partial")
    pq.write_table(contacted, partial)
    partial.replace(events_path)
    meta["events"] = contacted.num_rows
    meta["intervention"] = {
        **intervention.model_dump(mode="json"),
        "contacts": len(outcomes),
        "re_engaged": int(outcomes["re_engaged"].sum()),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return outcomes


__all__ = [
    "CHUNK_SIZE",
    "CONTACT_CHANNELS",
    "CONTACT_COLUMNS",
    "CUSTOMERS_SCHEMA",
    "EVENTS_SCHEMA",
    "TRUTH_SCHEMA",
    "DayOutcome",
    "DynamicsParameters",
    "InterventionEffect",
    "LearnerState",
    "SimulationConfig",
    "SimulationSummary",
    "advance_day",
    "apply_contacts",
    "apply_contacts_to_run",
    "contact_outcomes",
    "draw_population",
    "estimate_label_probability",
    "item_vocabulary",
    "responds_to",
    "simulate",
    "simulate_chunk",
]
