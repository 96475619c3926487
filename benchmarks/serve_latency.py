"""Benchmark: latency and throughput of ``POST /score`` over loopback HTTP.

One learner per request, by id (on the day of the batch job's feature snapshot: the day's
precomputed answers, ``serving.app.answers``) and with inline events (the learner's 30 days of
events in the body), at concurrency 1, 8 and 32, against
``bentoml serve serving.api.service:LstepService`` started as ``lstep serve`` starts it, once
the service has computed the reason codes of the day's learners ahead (it logs when). A second
start with that warm-up off (``LSTEP_WARM_REASONS=0``) measures "by id, first ask": each
request a learner whose reasons are computed on the spot.
Targets (issue 5): p50 <= 10 ms and p99 <= 50 ms at concurrency 1 for one learner by id.

The workspace (simulated learners, a champion trained with two Optuna trials, one batch day with
its snapshot, the champion in the BentoML store) is cached under ``benchmarks/.cache`` so reruns
time the service only.

    .venv/bin/python benchmarks/serve_latency.py [--customers 1000] [--requests 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from features.simulator import SimulationConfig, simulate
from serving.api.bento import import_champion, project_root, serve_command, service_environment
from serving.settings import Settings

CACHE = Path(__file__).resolve().parent / ".cache"
START = date(2026, 1, 1)
CONCURRENCY = (1, 8, 32)
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
READY_TIMEOUT_S = 240.0
WARM_TIMEOUT_S = 600.0
WARM_LINE = re.compile(r"reasons of (\d+) learners of \S+ ready in ([\d.]+) s")


@dataclass(frozen=True)
class Workspace:
    """A served LSTEP_HOME and the day its batch job ran."""

    settings: Settings
    as_of: date


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=64, help="requests per level (min 4x c)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def _workspace(customers: int, days: int, seed: int, console: Console) -> Workspace:
    """The cached workspace for these parameters, built when absent."""
    home = CACHE / f"serve-{customers}x{days}-seed{seed}"
    as_of = START + timedelta(days=days - 10)
    settings = Settings(home=home)
    if (home / "ready").is_file():
        console.print(f"workspace: cached in {home}")
        return Workspace(settings, as_of)
    _build(
        settings,
        SimulationConfig(customers=customers, days=days, seed=seed, truth_share=0.0),
        as_of,
        console,
    )
    (home / "ready").touch()
    return Workspace(settings, as_of)


def _build(settings: Settings, config: SimulationConfig, as_of: date, console: Console) -> None:
    """Simulate, train a small champion, run the batch on ``as_of``, import the champion."""
    from serving.app.batch import BatchContext, BatchInputs, run_day
    from serving.infra.champion import load_champion
    from serving.infra.rulesets import load_rules
    from serving.infra.store import StateStore
    from training.jobs import TrainJob  # the benchmark makes its champion as production does
    from training.pipeline import train

    data = settings.data_path
    now = datetime.combine(START + timedelta(days=config.days + 1), datetime.min.time(), UTC)
    with console.status("simulating learners"):
        simulate(config, data)
    with console.status("training a champion (2 trials)"):
        job = TrainJob(
            events=data / "events.parquet", customers=data / "customers.parquet", trials=2,
            horizon_days=14,
        )  # fmt: skip
        train(job, tracking_uri=settings.tracking_uri, now=now, console=Console(quiet=True))
    inputs = BatchInputs(events=data / "events.parquet", customers=data / "customers.parquet")
    with console.status("running the batch job"), StateStore.from_settings(settings) as store:
        context = BatchContext(
            store=store, champion=load_champion(settings.tracking_uri), ruleset=load_rules(),
            run_id=f"bench-{as_of}", now=now, data_dir=data,
        )  # fmt: skip
        run_day(as_of, inputs, context)
    import_champion(settings)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``bentoml serve`` on a free loopback port, once ``/readyz`` answers."""
    port = _free_port()
    environment = service_environment(settings) | (extra_env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command("127.0.0.1", port), cwd=project_root(), env=environment,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bentoml serve exited ({process.returncode}); see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"not ready after {READY_TIMEOUT_S} s; see {log_path}")


def _wait_for_warm_reasons(log_path: Path) -> tuple[int, float]:
    """Block until the service logs that the day's reasons are computed: (learners, seconds)."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        found = WARM_LINE.search(log_path.read_text(errors="replace"))
        if found:
            return int(found.group(1)), float(found.group(2))
        time.sleep(0.5)
    raise SystemExit(f"the reasons warm-up did not finish in {WARM_TIMEOUT_S} s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """End the server's process group (its own, started by us)."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def _payloads(workspace: Workspace) -> dict[str, list[dict]]:
    """One body per learner of the snapshot: by id, and with their 30 days of events."""
    data = workspace.settings.data_path
    snapshot = pd.read_parquet(data / "features" / f"as_of={workspace.as_of}.parquet")
    ids = list(snapshot["customer_id"])
    as_of = pd.Timestamp(workspace.as_of, tz="UTC")
    events = pd.read_parquet(data / "events.parquet")
    recent = events[(events["ts"] >= as_of - pd.Timedelta(days=30)) & (events["ts"] < as_of)]
    recent = recent.assign(ts=recent["ts"].map(pd.Timestamp.isoformat))
    by_learner = {
        key: group.drop(columns="customer_id") for key, group in recent.groupby("customer_id")
    }
    day = workspace.as_of.isoformat()

    def inline(customer_id: str) -> dict:
        frame = by_learner.get(customer_id, recent.iloc[:0].drop(columns="customer_id"))
        rows = json.loads(frame.to_json(orient="records"))
        return {"learners": [{"customer_id": customer_id, "events": rows}], "as_of": day}

    return {
        "by id": [{"learners": [{"customer_id": c}], "as_of": day} for c in ids],
        "inline events": [inline(c) for c in ids],
    }


async def _level(url: str, bodies: list[dict], concurrency: int, count: int) -> dict[str, float]:
    """``count`` requests, ``concurrency`` at a time; latency percentiles and throughput."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                started = time.perf_counter()
                response = await client.post("/score", json=bodies[index % len(bodies)])
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"/score answered {response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(count)))
        wall = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p99_ms": float(np.percentile(milliseconds, 99)),
        "requests_per_s": count / wall,
        "requests": count,
    }


def _measure(url: str, payloads: dict[str, list[dict]], requests: int) -> list[dict]:
    figures = []
    for mode, bodies in payloads.items():
        asyncio.run(_level(url, bodies, 4, 16))  # warm up: connections, caches, batch optimizer
        for concurrency in CONCURRENCY:
            count = max(requests, 4 * concurrency)
            result = asyncio.run(_level(url, bodies, concurrency, count))
            figures.append({"mode": mode, "concurrency": concurrency, **result})
    return figures


def _measure_first_asks(url: str, bodies: list[dict], requests: int) -> dict:
    """By id at concurrency 1, every request a learner not asked about before."""
    asyncio.run(_level(url, bodies[:16], 1, 16))  # connections only: these 16 are not reused
    fresh = bodies[16:]
    count = min(requests, len(fresh))
    return {
        "mode": "by id, first ask",
        "concurrency": 1,
        **asyncio.run(_level(url, fresh, 1, count)),
    }


def _report(console: Console, figures: list[dict], example: dict) -> None:
    table = Table(title="serve_latency: POST /score, one learner per request", title_justify="left")
    for column in ("mode", "concurrency", "requests", "p50 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in figures:
        table.add_row(
            row["mode"], str(row["concurrency"]), str(row["requests"]),
            f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['requests_per_s']:.1f}",
        )  # fmt: skip
    single = next(r for r in figures if r["mode"] == "by id" and r["concurrency"] == 1)
    met = single["p50_ms"] <= TARGET_P50_MS and single["p99_ms"] <= TARGET_P99_MS
    table.caption = (
        f"target at concurrency 1 by id: p50 <= {TARGET_P50_MS:.0f} ms, p99 <= "
        f"{TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'}"
    )
    console.print(table)
    console.print("example /score response (by id):")
    console.print_json(json.dumps(example))


def main() -> None:
    arguments = _arguments()
    console = Console()
    workspace = _workspace(arguments.customers, arguments.days, arguments.seed, console)
    payloads = _payloads(workspace)
    log_path = workspace.settings.home / "serve.log"
    with console.status("starting bentoml serve"):
        process, url = _start(workspace.settings, log_path)
    try:
        with console.status("waiting for the day's reason codes"):
            learners, seconds = _wait_for_warm_reasons(log_path)
        console.print(f"reasons of {learners} learners computed ahead in {seconds:.1f} s")
        example = httpx.post(f"{url}/score", json=payloads["by id"][0], timeout=60).json()
        figures = _measure(url, payloads, arguments.requests)
    finally:
        _stop(process)
    cold_log = workspace.settings.home / "serve-cold.log"
    with console.status("starting bentoml serve without the reasons warm-up"):
        process, url = _start(workspace.settings, cold_log, {"LSTEP_WARM_REASONS": "0"})
    try:
        figures.append(_measure_first_asks(url, payloads["by id"], arguments.requests))
    finally:
        _stop(process)
    _report(console, figures, example)
    if arguments.json:
        arguments.json.write_text(json.dumps({"figures": figures, "example": example}, indent=2))


if __name__ == "__main__":
    main()
