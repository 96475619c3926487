"""The simulator's state and results, as column arrays: learners, days, events, truth, chunks."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import pyarrow as pa

from features.simulator.config import ACTIVE, CHURNED, PAUSED

_Columns = TypeVar("_Columns")


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
        return sigmoid(self.z)

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


def concatenated(kind: type[_Columns], parts: list[_Columns]) -> _Columns:
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
        return concatenated(TruthRows, parts)


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's output tables plus the latent facts the tests look at."""

    events: pa.Table
    customers: pa.Table
    truth: pa.Table
    final_state: LearnerState
    profile: Profile
    churn_day: np.ndarray


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
