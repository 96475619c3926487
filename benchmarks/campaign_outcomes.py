"""Benchmark: the campaign effect's per-learner outcomes (``serving.app.campaign_effect``).

Builds a seeded synthetic outbox, its feedback and an event log with numpy (no simulation, no
store), then times ``first_runs`` and ``learner_outcomes`` on them and
prints the wall and CPU seconds of each and the peak RSS. The default size is the 1M-learner
report's: ~1.8M first runs, ~3.1M messages (a tenth of the runs triggered again later, 10% of
them control, suppressed), feedback on the sent messages (half delivered, 10% opened, 3% clicked,
1% converted) and ~60 events per learner over 60 days, about half of them re-engagements, sorted
by learner then time as the event store writes them.

    python benchmarks/campaign_outcomes.py --learners 1000000 [--repeat 2]

Before and after the runs were vectorised, twice each on a 2-core VM where fresh memory costs
up to ~2 s per GiB (so the times move with what was allocated before):

- this benchmark at its default size: first_runs 10.2-11.5 s -> 5.0-5.6 s, the re-engagement
  days 16.5-17.1 s -> 8.7-10.3 s, learner_outcomes 34.5-36.1 s -> 6.7-6.9 s; peak RSS 8.3 -> 6.4 GiB
  (the inputs alone: 4.6 GiB); ~1 min in all;
- the 1M-learner report's store (3.1M messages, 59M events): first_runs 10.7-13.1 s -> 5.6-6.0 s,
  the re-engagement days 13.8-15.3 s -> 7.4-8.6 s, learner_outcomes 24-32 s at +2.4-3.1 GiB over its
  inputs -> 5.3-6.7 s at +0.2-0.5 GiB.

(The re-engagement days were ``reengagement_days``' frame of (learner, day) pairs; no measure
reads that frame since ``learner_outcomes`` keys the log's days itself, ``log_converted``, and
the function is gone.)
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from serving.app.campaign_effect import first_runs, learner_outcomes
from serving.core.messages import MESSAGE_COLUMNS

AS_OF = date(2026, 3, 1)
CAMPAIGNS = 20
KINDS = np.array(["session", "lesson_completed", "video_watched", "quiz_attempted", "feature_used"])
KIND_SHARES = [0.28, 0.22, 0.2, 0.15, 0.15]
STATES = np.array(["sent", "pending", "cancelled", "dead"])
STATE_SHARES = [0.58, 0.39, 0.02, 0.01]  # of the treated messages


def _labels(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """``prefix`` + the zero-padded numbers, as the code base's strings (Arrow-backed)."""
    return prefix + pd.Series(numbers).astype(str).str.zfill(width)


def _days(offsets: np.ndarray) -> np.ndarray:
    """``AS_OF`` minus ``offsets`` days, as ``datetime64[us]`` (the store's dates)."""
    return (np.datetime64(AS_OF, "D") - offsets.astype("timedelta64[D]")).astype("datetime64[us]")


def synthetic_outbox(learners: int, rng: np.random.Generator) -> pd.DataFrame:
    """``OUTBOX_COLUMNS`` rows: runs of 1-3 steps planned in the 30 days up to ``AS_OF``."""
    per_learner = rng.poisson(1.8, learners)
    learner = np.repeat(np.arange(learners), per_learner)
    campaign = rng.integers(1, CAMPAIGNS + 1, len(learner))
    planned = rng.integers(0, 30, len(learner))
    again = rng.random(len(learner)) < 0.1  # triggered again later: a second run, not counted
    learner, campaign = np.r_[learner, learner[again]], np.r_[campaign, campaign[again]]
    planned = np.r_[planned, np.maximum(planned[again] - rng.integers(1, 10, again.sum()), 0)]
    control = rng.random(len(learner)) < 0.1
    steps = rng.choice([1, 2, 3], len(learner), p=[0.55, 0.35, 0.10])
    run = np.repeat(np.arange(len(learner)), steps)
    step = np.arange(len(run)) - np.repeat(np.cumsum(steps) - steps, steps)
    delay = rng.integers(1, 4, len(learner))[run]
    state = STATES[rng.choice(len(STATES), len(run), p=STATE_SHARES)]
    variant = np.where(campaign[run] % 4 == 0, np.where(learner[run] % 2 == 0, "A", "B"), "")
    outbox = pd.DataFrame(
        {
            "message_id": _labels("msg-", np.arange(len(run)), 10),
            "planned_on": _days(planned[run]),
            "due_on": _days(planned[run] - step * delay),
            "customer_id": _labels("C", learner[run], 7),
            "campaign_id": _labels("CP_", campaign[run], 2),
            "step": step.astype(np.int64),
            "channel": "email",
            "template_id": "template",
            "variant": pd.Series(variant, dtype=str),
            "control": control[run],
            "context": "",
            "state": pd.Series(np.where(control[run], "suppressed", state), dtype=str),
        }
    )
    order = rng.permutation(len(outbox))  # the store's rows come in no learner order
    return outbox.take(order).reset_index(drop=True)[[*MESSAGE_COLUMNS, "state"]]


def synthetic_feedback(outbox: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Feedback on the sent messages: half delivered, 10% opened, 3% clicked, 1% converted."""
    sent = outbox.loc[outbox["state"] == "sent", "message_id"].reset_index(drop=True)
    parts = [
        pd.DataFrame({"message_id": sent[rng.random(len(sent)) < share], "kind": kind})
        for kind, share in (
            ("delivered", 0.5),
            ("opened", 0.1),
            ("clicked", 0.03),
            ("converted", 0.01),
        )
    ]
    feedback = pd.concat(parts, ignore_index=True)
    feedback["kind"] = feedback["kind"].astype(str)
    feedback["recorded_at"] = pd.Timestamp(AS_OF, tz="UTC") + timedelta(days=1)
    return feedback


def synthetic_events(learners: int, per_learner: float, rng: np.random.Generator) -> pd.DataFrame:
    """~``per_learner`` events per learner in the 60 days up to the end of ``AS_OF``, sorted by
    learner then time."""
    counts = rng.poisson(per_learner, learners)
    learner = np.repeat(np.arange(learners), counts)
    start = np.datetime64(AS_OF, "us") - np.timedelta64(59, "D")
    span = 60 * 86_400  # seconds
    seconds = np.sort(learner * span + rng.integers(0, span, len(learner))) % span
    kinds = rng.choice(len(KINDS), len(learner), p=KIND_SHARES)
    ids = pa.array(_labels("C", np.arange(learners), 7).array)
    return pd.DataFrame(
        {
            "customer_id": _strings(ids.take(pa.array(learner))),
            "ts": pd.Series(start + seconds.astype("timedelta64[s]")).dt.tz_localize("UTC"),
            "event_type": _strings(pa.array(KINDS.tolist(), ids.type).take(pa.array(kinds))),
        }
    )


def _strings(values: pa.Array) -> pd.Series:
    """Arrow strings as the code base's ``str`` column (what ``pd.read_parquet`` returns)."""
    return pd.Series(pd.arrays.ArrowStringArray(values)).astype(str)


def peak_rss_gib() -> float:
    """Peak resident set size of this process, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(label: str, call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    print(
        f"{label}: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU,"
        f" peak RSS {peak_rss_gib():.2f} GiB",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=1_000_000)
    parser.add_argument("--events-per-learner", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1, help="time each function this often")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    outbox = timed("outbox", lambda: synthetic_outbox(args.learners, rng))
    feedback = synthetic_feedback(outbox, rng)
    events = timed("events", lambda: synthetic_events(args.learners, args.events_per_learner, rng))
    print(
        f"{len(outbox):,} messages, {len(feedback):,} feedback rows, {len(events):,} events;"
        f" inputs peak RSS {peak_rss_gib():.2f} GiB"
    )
    for _ in range(max(args.repeat, 1)):
        runs = timed("first_runs", lambda: first_runs(outbox, AS_OF))
        outcomes = timed(
            "learner_outcomes", lambda: learner_outcomes(outbox, feedback, events, AS_OF)
        )
    print(
        f"{len(runs):,} first runs,"
        f" {int(outcomes['log_converted'].sum()):,} converted by the log,"
        f" {int(outcomes['opened'].sum()):,} opened"
    )


if __name__ == "__main__":
    main()
