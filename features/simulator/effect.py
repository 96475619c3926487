"""The intervention effect (issue 12): contacts that bring some learners back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.layout import EVENTS_FILE
from features.simulator.config import (
    COURSE_LESSONS,
    EVENTS_SCHEMA,
    LESSON,
    META_FILE,
    MICROS_PER_SECOND,
    MOBILE,
    SECONDS_PER_DAY,
    SESSION,
    WEB,
)
from features.simulator.events import epoch_day
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS

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
    day_us = np.array([epoch_day(day) for day in hits["reengage_day"]], dtype=np.int64) * (
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
