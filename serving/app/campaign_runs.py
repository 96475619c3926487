"""Each learner's first run of each campaign, and what the run led to (``campaign_effect``).

What a run is, its arm and its conversion window are ``serving.app.campaign_effect``'s module
docstring; this module computes them over the outbox, the feedback and the log with integer codes
and numpy (a 1M-learner store's 3.1M messages and 59M events: ``learner_outcomes`` 24-32 s ->
5-7 s, the same frame, ``benchmarks/campaign_outcomes.py``).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from serving.core.messages import SENT, SUPPRESSED

REENGAGEMENT_KINDS: tuple[str, ...] = ("session", "lesson_completed")
"""Event types that count as coming back: the learner opened a session or finished a lesson."""


# --- learners' runs -------------------------------------------------------------------------------


_DAY_TICKS = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
"""Ticks of one day in each resolution a datetime64 column may have."""

_NAT = np.iinfo(np.int64).min
"""NaT's int64 ticks."""

_SLICE = 16_000_000
"""Events per slice of the log in ``log_converted``: each slice's temporaries are ~20 bytes a
row, and each builds the learners' hash table again (~0.12 s for 921k). CPU for 59M events:
4M-event slices 4.2 s, 16M 2.6 s, the whole log at once 2.2 s but +0.6-1.1 GiB of memory."""


def _reengagement_ticks(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Which events are re-engagements, every event's instant as UTC ticks (NaT: ``_NAT``), and
    the ticks' unit."""
    kept = events["event_type"].isin(REENGAGEMENT_KINDS).to_numpy(dtype=bool)
    instants = _utc_instants(events["ts"])
    return kept, instants.asi8, instants.unit


def _utc_instants(stamps: pd.Series) -> pd.DatetimeIndex:
    """``pd.to_datetime(stamps, utc=True)`` as an index (its ``asi8`` are UTC ticks).

    Stamps that already are datetimes are not converted: naive ones read as UTC have the same
    ticks, and ``to_datetime`` of 59M aware stamps took 2.4 s to return them unchanged.
    """
    if not (isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.dtype.kind == "M"):
        stamps = pd.to_datetime(stamps, utc=True)
    return pd.DatetimeIndex(stamps)


def observed_until(events: pd.DataFrame, as_of: date) -> pd.Timestamp:
    """The end (exclusive) of what the log says: the end of ``as_of`` or of its last event day."""
    end_of_day = pd.Timestamp(as_of) + timedelta(days=1)
    if events.empty:
        return end_of_day
    stamps = events["ts"]
    if isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.dtype.kind == "M":
        # only the latest stamp goes through to_datetime (59M stamps: ~2 s -> 0.1 s)
        stamps = pd.Series([stamps.max()], dtype=stamps.dtype)
    last = pd.to_datetime(stamps, utc=True).max().tz_localize(None).floor("D")
    return min(end_of_day, last + timedelta(days=1))


def first_runs(outbox: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Each learner's first run of each campaign planned by ``as_of``, one row per learner.

    The first run is the earliest trigger day's cadence; its row is that run's first message
    (earliest ``due_on``, then ``step``) with ``sent`` (a message of the run was sent) and the
    run's ``message_ids`` (a list, in the outbox's order). A missing ``control`` flag counts as
    treated unless the message was suppressed.
    """
    runs, run_of, positions = first_run_messages(outbox, as_of)
    order = np.lexsort((positions, run_of))  # by run, then in the outbox's order
    ids = outbox["message_id"].take(positions[order]).tolist()
    # slices of one list of the ids, no Python call per run: 3.1M ids in 1.8M lists are still
    # ~3.5 s of the ~5.5 s here (11-13 s before), which is why learner_outcomes builds none
    ends = np.cumsum(np.bincount(run_of, minlength=len(runs))).tolist()
    lists = [ids[start:end] for start, end in zip([0, *ends][:-1], ends, strict=True)]
    runs["message_ids"] = pd.Series(lists, dtype=object)
    return runs


def first_run_messages(
    outbox: pd.DataFrame, as_of: date
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``first_runs`` without the lists of ids, and the runs' messages as arrays.

    Returns:
        (the runs; for each message of a run: the run's row in them, the message's position in
        ``outbox``).
    """
    planned_on = pd.to_datetime(outbox["planned_on"])
    kept = np.flatnonzero((planned_on <= pd.Timestamp(as_of)).to_numpy(dtype=bool))
    due_on = pd.to_datetime(outbox["due_on"].take(kept))
    planned = _ticks(planned_on.take(kept))
    order, run = _message_order(outbox, kept, planned, _ticks(due_on))
    firsts = order[np.flatnonzero(np.diff(run, prepend=-1))]  # each run's first message
    in_run = planned[order] == planned[firsts][run]  # the cadence of the earliest trigger day
    columns = ["customer_id", "campaign_id", "variant", "control"]
    runs = outbox[columns].take(kept[firsts]).reset_index(drop=True)
    runs["due_on"] = due_on.take(firsts).array
    suppressed = (outbox["state"] == SUPPRESSED).take(kept[firsts]).reset_index(drop=True)
    runs["control"] = runs["control"].eq(True) | suppressed
    positions, run_of = kept[order[in_run]], run[in_run]
    runs["sent"] = _run_facts(outbox, positions, run_of, len(runs))
    return runs, run_of, positions


def _message_order(
    outbox: pd.DataFrame, kept: np.ndarray, planned: np.ndarray, due: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The order of the ``kept`` messages by (learner, campaign, planned, due, step), ties in the
    outbox's order, and in that order the number of each one's (learner, campaign) pair.

    A lexsort of integers (codes of sorted ids, dates as int64): 3.1M messages, ~0.6 s, where
    the stable sort of the string and date columns, the merge back on three keys and the
    grouping by string keys took most of ``first_runs``' 11-13 s (now ~2 s without the lists).
    """
    customer = pd.factorize(outbox["customer_id"].take(kept), sort=True, use_na_sentinel=False)
    campaign = pd.factorize(outbox["campaign_id"].take(kept), sort=True, use_na_sentinel=False)
    step = outbox["step"].to_numpy()[kept]
    order = np.lexsort((step, due, planned, campaign[0], customer[0]))
    pair = customer[0][order].astype(np.int64) * len(campaign[1]) + campaign[0][order]
    return order, np.cumsum(np.diff(pair, prepend=-1) != 0) - 1


def _ticks(stamps: pd.Series) -> np.ndarray:
    """int64 ticks of datetimes, NaT last (where ``sort_values`` puts it)."""
    ticks = pd.DatetimeIndex(stamps).asi8
    return np.where(ticks == _NAT, np.iinfo(np.int64).max, ticks)


def _run_facts(
    outbox: pd.DataFrame, positions: np.ndarray, run_of: np.ndarray, runs: int
) -> np.ndarray:
    """Whether any message of each run was sent (``outbox`` rows ``positions`` of ``run_of``).

    Counted per run number (``np.bincount``), where the frame it replaced cut sorted string keys.
    """
    sent = (outbox["state"] == SENT).to_numpy(dtype=bool, na_value=False)[positions]
    return np.bincount(run_of, weights=sent, minlength=runs) > 0


def feedback_flags(
    outbox: pd.DataFrame,
    positions: np.ndarray,
    run_of: np.ndarray,
    runs: int,
    feedback: pd.DataFrame,
) -> dict[str, np.ndarray]:
    """Whether any message of each run (``outbox`` rows ``positions`` of ``run_of``) was opened,
    clicked or converted (feedback), by kind.

    Each run message is looked up among the ids with feedback (one Arrow hash lookup each),
    then each kind is a table by id: no per-run lists of ids to explode and merge. 3.1M run
    messages, 240k feedback rows of these kinds: 2.5 s -> 0.5-0.9 s.
    """
    kinds = ("opened", "clicked", "converted")
    flags = {kind: np.zeros(runs, dtype=bool) for kind in kinds}
    feedback = feedback[feedback["kind"].isin(kinds).to_numpy(dtype=bool)]
    if feedback.empty or not runs:
        return flags
    codes, heard = pd.factorize(feedback["message_id"].astype(str))
    found = _positions_in(outbox["message_id"].take(positions).astype(str), pd.Index(heard))
    for kind in kinds:
        hit = np.zeros(len(heard) + 1, dtype=bool)  # the last: no feedback (-1)
        of_kind = (feedback["kind"] == kind).to_numpy(dtype=bool) & (codes >= 0)
        hit[codes[of_kind]] = True
        flags[kind][run_of[hit[found]]] = True
    return flags


def _positions_in(values: pd.Series, among: pd.Index) -> np.ndarray:
    """The position of each value (strings) in ``among`` (distinct strings), -1 when absent.

    One Arrow hash lookup per value (``pyarrow.compute.index_in``): 59M event ids among 921k
    learners in ~1.1 s of CPU, where masking the re-engagements' strings and factorizing them
    with the learners' took ~3 s (most of it allocating the copies). ``Series.isin`` is no
    substitute: it turns every value looked for into a Python object (240k ids: 1.2 s).
    ``rules.codes.codes_of`` gives the same codes but took 0.35 s against 0.18 s per 16M
    learner-ordered ids among 921k (it first tries its sorted-ids search, and copies to int64).
    """
    searched = pa.array(values)
    wanted = pa.chunked_array([pa.array(among.astype(str).array)]).combine_chunks()
    found = pc.index_in(searched, value_set=wanted.cast(searched.type))
    return np.asarray(found.fill_null(-1))


def log_converted(runs: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
    """Whether each run's learner has a re-engagement day in ``[due_on, window_end)``.

    The log's (learner, day) pairs become int64 keys (the learner's code among the runs' *
    width + day) sorted once; each run finds the first key at or after its due day
    (``np.searchsorted``) and converted if it is before its window's end. The keys are built
    a slice of the log at a time: at 59M events a whole-log pass allocated ~1.2 GiB of
    temporaries, and fresh memory cost up to ~2 s per GiB on the 2-core VM measured. 1.8M runs
    and 59M events: 2.9-3.2 s, where a frame of the log's (learner, day) pairs and a
    ``merge_asof`` by string ids on it took 14.7 + 1.4 s.
    """
    if not len(runs):
        return np.zeros(0, dtype=bool)
    learners, ids = pd.factorize(runs["customer_id"].astype(str))
    first, end = _first_day_from(runs["due_on"]), _first_day_from(runs["window_end"])
    start, width = int(first.min()), int(end.max() - first.min()) + 1  # the days that matter
    ids = pd.Index(ids)
    parts = [
        _activity_keys(events.iloc[row : row + _SLICE], ids, start, width)
        for row in range(0, len(events), _SLICE)
    ]
    keys = np.concatenate([np.zeros(0, dtype=np.int64), *parts])
    if not len(keys):
        return np.zeros(len(runs), dtype=bool)
    keys.sort()
    low, high = (np.clip(day - start, 0, width) + learners * width for day in (first, end))
    at = np.searchsorted(keys, low)
    return (at < len(keys)) & (keys[np.minimum(at, len(keys) - 1)] < high)


def _activity_keys(events: pd.DataFrame, ids: pd.Index, start: int, width: int) -> np.ndarray:
    """``learner * width + day - start`` of the re-engagement events of learners ``ids`` on the
    days ``[start, start + width)`` (days since 1970-01-01 UTC)."""
    kept, ticks, unit = _reengagement_ticks(events)
    learner = _positions_in(events["customer_id"].astype(str), ids)
    days = ticks // _DAY_TICKS[unit] - start
    known = kept & (learner >= 0) & (ticks != _NAT) & (days >= 0) & (days < width)
    return learner[known].astype(np.int64) * width + days[known]


def _first_day_from(stamps: pd.Series) -> np.ndarray:
    """The first data day (days since 1970-01-01) whose midnight is at or after each stamp."""
    ticks = pd.DatetimeIndex(stamps).as_unit("ns").asi8
    return -(-ticks // _DAY_TICKS["ns"])


__all__ = [
    "REENGAGEMENT_KINDS",
    "feedback_flags",
    "first_run_messages",
    "first_runs",
    "log_converted",
    "observed_until",
]
