"""How a learner lives: ``advance_day``, the one transition function, and the drawn population."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from features.simulator.config import (
    DYNAMICS,
    ENTERPRISE,
    FREEMIUM,
    LAST_SECOND,
    PRO,
    SECONDS_PER_DAY,
    TIER_SHARES,
    TIER_TAGS,
    DynamicsParameters,
)
from features.simulator.state import DayOutcome, LearnerState, Profile, sigmoid

# --- the dynamics ---------------------------------------------------------------------------------


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
    p_active = sigmoid(
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
    expected = state.pace * (params.lessons_floor + sigmoid(state.z))
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
    return sigmoid(logit) * np.where(paused, params.pause_churn_factor, 1.0)


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
        enrol_second=time_of_day(rng, size, latest=SECONDS_PER_DAY - 3600.0),
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


def time_of_day(
    rng: np.random.Generator,
    size: int,
    earliest: np.ndarray | float = 0.0,
    latest: float = LAST_SECOND,
) -> np.ndarray:
    """Seconds into the day following the daily rhythm, squeezed into [earliest, latest)."""
    hour = rng.choice(24, size=size, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    natural = (hour + rng.random(size)) / 24.0
    return earliest + natural * (latest - earliest)
