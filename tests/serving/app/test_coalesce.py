"""Concurrent asks of a day are assessed together; a learner is never in one call twice."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pytest

from serving.app.coalesce import Coalescer


def frame(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(ids)})


def test_requests_that_arrive_during_a_run_are_merged_into_the_next_one():
    calls: list[list[str]] = []
    release = threading.Event()

    def run(merged: pd.DataFrame, key) -> list[str]:
        calls.append(list(merged["customer_id"]))
        if len(calls) == 1:
            release.wait(5)  # the first run is slow: the others queue behind it
        return list(merged["customer_id"])

    coalesce = Coalescer(run)

    async def scenario():
        first = asyncio.create_task(coalesce(frame("a"), "day"))
        await asyncio.sleep(0.05)
        later = [asyncio.create_task(coalesce(frame(c), "day")) for c in ("b", "a", "a")]
        await asyncio.sleep(0.05)
        release.set()
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(scenario())
    # then the first ran alone, b with one a, and the other a (asked twice) in a round of its own
    assert calls == [["a"], ["b", "a"], ["a"]]
    assert first == ["a"] and later == [["b", "a"], ["b", "a"], ["a"]]


def test_a_failed_run_fails_every_request_it_held():
    def run(merged, key):
        raise ValueError("store down")

    coalesce = Coalescer(run)

    async def scenario():
        return await asyncio.gather(
            coalesce(frame("a"), "day"), coalesce(frame("b"), "day"), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert [type(result) for result in results] == [ValueError, ValueError]


def test_days_are_never_merged():
    seen = []
    coalesce = Coalescer(lambda merged, key: seen.append((key, len(merged))) or key)

    async def scenario():
        return await asyncio.gather(coalesce(frame("a"), "d1"), coalesce(frame("b"), "d2"))

    assert asyncio.run(scenario()) == ["d1", "d2"]
    assert sorted(seen) == [("d1", 1), ("d2", 1)]


@pytest.mark.parametrize("count", [1, 8])
def test_every_request_gets_an_answer(count):
    coalesce = Coalescer(lambda merged, key: len(merged))

    async def scenario():
        return await asyncio.gather(*(coalesce(frame(f"L{n}"), "day") for n in range(count)))

    results = asyncio.run(scenario())
    assert len(results) == count and sum(set(results)) <= count
