"""Concurrent on-demand asks of one day, assessed together.

Scoring a few learners costs mostly fixed work (the pandas frames of the rules engine, one model
matrix, one TreeSHAP call): ~19 ms for one learner, not much more for thirty. The
public service receives concurrent requests each for a learner or two; assessing each alone
spends that fixed cost per request and, with Python's GIL, serialises them. ``Coalescer`` lets
the requests that arrive while an assessment runs wait, then assesses all of them in one call,
so throughput grows with concurrency as BentoML's adaptive batching did when the scorer was a
process of its own. (BentoML's batching lives between processes; there is no in-process one to
reuse, hence this small queue.)

A request whose learners another waiting request already holds goes into the next round: one
assessment never holds a learner twice.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pandas as pd

from serving.core.frames import numbered

Run = Callable[[pd.DataFrame, Hashable], Any]
"""The assessment of a merged frame of one key (a day), run in a worker thread."""


@dataclass(eq=False)  # compared by identity: a frame has no truth value
class _Waiting:
    frame: pd.DataFrame
    done: asyncio.Future = field(repr=False)


class Coalescer:
    """Merges the frames of concurrent calls of one key into one ``run`` (see the module doc)."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._waiting: dict[Hashable, list[_Waiting]] = {}
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def __call__(self, frame: pd.DataFrame, key: Hashable) -> Any:
        """The result of ``run`` over ``frame`` merged with the frames waiting with it."""
        waiting = _Waiting(frame, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(key, []).append(waiting)
        asyncio.get_running_loop().create_task(self._flush(key))
        return await waiting.done

    async def _flush(self, key: Hashable) -> None:
        loop = asyncio.get_running_loop()  # the service has one loop; tests run several
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:  # one assessment at a time: the others' frames wait and merge
            batch = _first_round(self._waiting.get(key, []))
            if not batch:
                return
            taken = {id(call) for call in batch}
            self._waiting[key] = [w for w in self._waiting[key] if id(w) not in taken]
            try:  # whatever fails, every waiting request hears of it: none may hang
                merged = (
                    numbered(batch[0].frame)  # alone: concat would copy every column
                    if len(batch) == 1
                    else pd.concat([w.frame for w in batch], ignore_index=True)
                )
                result = await anyio.to_thread.run_sync(self._run, merged, key)
            except Exception as error:  # every waiting request gets the failure
                for waiting in batch:
                    waiting.done.set_exception(error)
                return
            for waiting in batch:
                waiting.done.set_result(result)


def _first_round(waiting: list[_Waiting]) -> list[_Waiting]:
    """The waiting calls, in order, whose learners are not held by an earlier one."""
    if len(waiting) < 2:  # alone: nobody else to hold its learners
        return list(waiting)
    seen: set[str] = set()
    round_ = []
    for call in waiting:
        ids = set(call.frame["customer_id"].tolist()) if len(call.frame) else set()
        if ids & seen:
            continue
        seen |= ids
        round_.append(call)
    return round_


__all__ = ["Coalescer"]
