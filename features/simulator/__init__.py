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

The package: ``config`` (constants, ``SimulationConfig``), ``state`` (column arrays), ``dynamics``
(``advance_day``, the population), ``events`` (the detailed events of active days), ``chunk``
(one chunk simulated day by day), ``tables`` and ``files`` (Arrow tables, ``simulate``) and
``effect`` (the intervention effect).
"""

from __future__ import annotations

from features.simulator.chunk import simulate_chunk
from features.simulator.config import (
    CHUNK_SIZE,
    COURSE_LESSONS,
    CUSTOMERS_SCHEMA,
    DYNAMICS,
    ENTERPRISE,
    EVENTS_SCHEMA,
    FREEMIUM,
    PRO,
    TIER_TAGS,
    TRUTH_SCHEMA,
    DynamicsParameters,
    SimulationConfig,
    SimulationSummary,
)
from features.simulator.dynamics import advance_day, draw_population, estimate_label_probability
from features.simulator.effect import (
    CONTACT_CHANNELS,
    CONTACT_COLUMNS,
    InterventionEffect,
    apply_contacts,
    apply_contacts_to_run,
    contact_outcomes,
    responds_to,
)
from features.simulator.events import item_vocabulary
from features.simulator.files import simulate
from features.simulator.state import ChunkResult, DayOutcome, LearnerState

__all__ = [
    "CHUNK_SIZE",
    "CONTACT_CHANNELS",
    "CONTACT_COLUMNS",
    "COURSE_LESSONS",
    "CUSTOMERS_SCHEMA",
    "DYNAMICS",
    "ENTERPRISE",
    "EVENTS_SCHEMA",
    "FREEMIUM",
    "PRO",
    "TIER_TAGS",
    "TRUTH_SCHEMA",
    "ChunkResult",
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
