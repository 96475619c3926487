"""The simulator's constants and its configuration: population size, dates, seeds, dynamics."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS, PRODUCT_TAGS

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
