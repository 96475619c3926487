"""One chunk of learners simulated day by day: their events, their truth rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from features.simulator.config import ELIGIBILITY_DAYS, SimulationConfig
from features.simulator.dynamics import advance_day, draw_population, estimate_label_probability
from features.simulator.events import cancellation_events, emit_events
from features.simulator.state import (
    ActiveDays,
    ChunkResult,
    DayOutcome,
    EventColumns,
    LearnerState,
    Profile,
    TruthRows,
    concatenated,
)
from features.simulator.tables import (
    chunk_customer_ids,
    customers_table,
    enrolment_instants,
    events_table,
    truth_table,
)

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
    events = emit_events(recorder.active_days(), state, profile, config, activity_rng)
    cancellations = cancellation_events(recorder.cancel_day, config, activity_rng)
    truth = _with_realised_labels(truth_parts, recorder, config)
    customer_ids = chunk_customer_ids(first_customer, size)
    enrolled_us = enrolment_instants(state, profile, config)
    all_events = concatenated(EventColumns, [events, cancellations])
    return ChunkResult(
        events=events_table(all_events, customer_ids, enrolled_us, recorder.churn_day, config),
        customers=customers_table(customer_ids, state, profile, enrolled_us),
        truth=truth_table(truth, customer_ids, config),
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
