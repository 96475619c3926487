"""The detailed events of the active days: sessions, lessons, quizzes, community, videos."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np

from features.simulator.config import (
    API,
    CANCEL,
    COURSE_LESSONS,
    COURSE_MILESTONES,
    FEATURE,
    FEATURE_NAMES,
    LAST_SECOND,
    LESSON,
    MICROS_PER_SECOND,
    MILESTONE,
    MOBILE,
    POST,
    QUIZ_ATTEMPT,
    QUIZ_PASS,
    REPLY,
    SECONDS_PER_DAY,
    SESSION,
    VIDEO,
    VIDEOS_PER_LESSON,
    WEB,
    SimulationConfig,
)
from features.simulator.dynamics import time_of_day
from features.simulator.state import (
    ActiveDays,
    DayEvents,
    EventColumns,
    LearnerState,
    Profile,
    concatenated,
    sigmoid,
)

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


def emit_events(
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
        start_s=time_of_day(rng, owner.size, earliest=earliest),
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
    p_pass = sigmoid(-0.2 + 1.2 * np.log(pace) + 3.0 * (engagement - 0.5))
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


def epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def instant_us(config: SimulationConfig, day: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch of ``second`` into day index ``day`` (floored)."""
    day_us = (epoch_day(config.start) + day.astype(np.int64)) * SECONDS_PER_DAY * MICROS_PER_SECOND
    return day_us + np.floor(second * MICROS_PER_SECOND).astype(np.int64)


def _timestamped(
    days: ActiveDays, parts: list[DayEvents], config: SimulationConfig
) -> EventColumns:
    """Turn (active day, second of that day) into (learner, UTC microseconds)."""
    events = concatenated(DayEvents, parts)
    return EventColumns(
        learner=days.learner[events.owner],
        ts_us=instant_us(config, days.day[events.owner], events.second),
        event_type=events.event_type,
        duration_s=events.duration_s,
        channel=events.channel,
        item=events.item,
    )


def cancellation_events(
    cancel_day: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> EventColumns:
    """One subscription_cancelled per cancelling learner, at a random moment of the churn day."""
    learner = np.flatnonzero(cancel_day >= 0)
    second = rng.random(learner.size) * LAST_SECOND
    return EventColumns(
        learner=learner,
        ts_us=instant_us(config, cancel_day[learner], second),
        event_type=np.full(learner.size, CANCEL, dtype=np.int8),
        duration_s=np.full(learner.size, np.nan),
        channel=np.full(learner.size, -1, dtype=np.int8),
        item=np.full(learner.size, -1, dtype=np.int32),
    )
