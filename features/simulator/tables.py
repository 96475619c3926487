"""The simulated chunks as Arrow tables: events, customers and truth rows, checked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.layout import EVENTS_FILE
from features.simulator.config import (
    CUSTOMERS_SCHEMA,
    EVENTS_SCHEMA,
    MICROS_PER_SECOND,
    SECONDS_PER_DAY,
    STATES,
    TIER_TAGS,
    TRUTH_SCHEMA,
    SimulationConfig,
)
from features.simulator.events import epoch_day, instant_us, item_vocabulary
from features.simulator.state import EventColumns, LearnerState, Profile, TruthRows
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS

# --- tables and files -----------------------------------------------------------------------------


def chunk_customer_ids(first_customer: int, size: int) -> pa.Array:
    numbers = range(first_customer + 1, first_customer + size + 1)
    return pa.array([f"C{number:07d}" for number in numbers], type=pa.string())


def enrolment_instants(
    state: LearnerState, profile: Profile, config: SimulationConfig
) -> np.ndarray:
    return instant_us(config, state.enrol_day, profile.enrol_second)


def _check_events(
    events: EventColumns, enrolled_us: np.ndarray, churn_day: np.ndarray, config: SimulationConfig
) -> None:
    """The simulator's own promises; a breach is a bug here, so it stops the run loudly."""
    end_us = epoch_day(config.end) * SECONDS_PER_DAY * MICROS_PER_SECOND
    day = events.ts_us // (SECONDS_PER_DAY * MICROS_PER_SECOND) - epoch_day(config.start)
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


def events_table(
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


def customers_table(
    customer_ids: pa.Array, state: LearnerState, profile: Profile, enrolled_us: np.ndarray
) -> pa.Table:
    columns = [
        customer_ids,
        pa.array(TIER_TAGS, type=pa.string()).take(pa.array(state.tier)),
        pa.array(enrolled_us, type=pa.timestamp("us", tz="UTC")),
        pa.array(profile.mrr, type=pa.float64()),
    ]
    return pa.Table.from_arrays(columns, schema=CUSTOMERS_SCHEMA)


def truth_table(truth: TruthRows, customer_ids: pa.Array, config: SimulationConfig) -> pa.Table:
    as_of = (epoch_day(config.start) + truth.day).astype(np.int32)
    columns = [
        customer_ids.take(pa.array(truth.learner)),
        pa.array(as_of, type=pa.date32()),
        pa.array(truth.p_true, type=pa.float64()),
        pa.array(truth.engagement, type=pa.float64()),
        pa.array(STATES, type=pa.string()).take(pa.array(truth.state)),
        pa.array(truth.y, mask=truth.y < 0, type=pa.int8()),
    ]
    return pa.Table.from_arrays(columns, schema=TRUTH_SCHEMA)
