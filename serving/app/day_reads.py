"""The store reads a batch day begins before it needs them, on a thread of ``run_day``'s.

The state before the day is read while the engine's step builds the window (``state_read``),
the plan's pending pairs while the day is decided (``pending_pairs_at_decide``): on a SQLite
file both are the store's reader process's work (``serving.infra.arrow_reads``), so a core that
would be idle does them and the batch's thread only waits.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date

import pandas as pd

from serving.core.frames import sorted_by_id
from serving.infra.store import MarkedState, StateStore


def state_read(
    early: ThreadPoolExecutor,
    store: StateStore,
    as_of: date,
    completed: pd.DataFrame,
    *,
    replace: bool,
) -> Future[MarkedState]:
    """``state_before``, read on ``early`` while the engine's step begins (the window's
    aggregation: the step asks for the state once the day's learners are known), or read now
    when another thread would not see the store's database (an in-memory SQLite).

    The read is the store's reader process's (``arrow_reads``), the batch's thread only waits
    for it: at 1M learners ~1.1 s, during which a core was idle before DuckDB began. Beside
    the window, the 1M steady day's "learners" 5.0-5.2 -> 4.6 s (alternated runs; at 200k,
    through the driver's rows, it had not paid: 1.77 s beside against 1.62 s in turn).
    """
    if store.readable_beside:
        return early.submit(state_before, store, as_of, completed, replace=replace)
    done: Future[MarkedState] = Future()
    done.set_result(state_before(store, as_of, completed, replace=replace))
    return done


def state_before(
    store: StateStore, as_of: date, completed: pd.DataFrame, *, replace: bool
) -> MarkedState:
    """The state the day is decided on: the store's, or for a replace the one before that day;
    with the store's mark before it, for the answers to read only what the day changed."""
    mark = store.state_mark()
    state = store.state_frame(as_of)
    if not replace:
        return MarkedState(state, mark)
    replaced_run = completed.loc[completed["as_of"].dt.date == as_of, "run_id"].iloc[0]
    log = store.transitions_frame(until=as_of)
    kept = log[log["run_id"].isna() | (log["run_id"] != replaced_run)]
    last = kept.sort_values("id").groupby("customer_id", sort=False).tail(1)
    before = last[["customer_id", "to_tag", "as_of"]].rename(
        columns={"to_tag": "tag", "as_of": "since"}
    )
    overrides = state[["customer_id", "override_tag", "override_expires"]]
    rebuilt = before.merge(overrides, on="customer_id", how="left")
    return MarkedState(sorted_by_id(rebuilt), mark)


def pending_pairs_at_decide(
    early: ThreadPoolExecutor,
    store: StateStore,
    as_of: date,
    on_start: Callable[[str, Callable[[], None]], None],
) -> Callable[[], Future[pd.DataFrame] | None]:
    """The plan's pending pairs (``store.pending_pairs``), read from the start of the decide
    stage on (``on_start``: the day's stage timer), while the day is decided: they depend on the
    outbox before the day only. Gives the read's future once the step is done; None when
    another thread would not see the store's database (an in-memory SQLite's is one per
    thread's connection), or when the engine has no decide stage (the plan reads them itself).

    At 1M learners the read is ~0.8 s of the store's reader process (``arrow_reads``), not of
    this one: the thread only waits for it. The decide stage is pandas on one core, so the
    other core does the read. Started after the state read instead, it competed with DuckDB's
    two threads over the window: the 1M steady day's "learners" 6.0-7.5 -> 5.2-5.9 s, the
    decide stage unchanged (3.2-3.5 s), alternated runs.
    """
    if not store.readable_beside:
        return lambda: None
    started: list[Future[pd.DataFrame]] = []
    on_start("decide", lambda: started.append(early.submit(store.pending_pairs, as_of)))
    return lambda: started[0] if started else None


__all__ = ["pending_pairs_at_decide", "state_before", "state_read"]
