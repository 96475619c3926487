"""Benchmark: ``POST /score`` of lstep beside ``mlflow models serve`` on the same champion.

**Latency** (default). One learner per request over loopback HTTP at concurrency 1, 8 and 32:

- ``by id, snapshot day``: the day of the batch job's feature snapshot (the day's answers,
  ``serving.app.answers``, memory-mapped from the file the batch wrote);
- ``by id, other day``: the day after (features from the stored events, then ``assess``);
- ``inline events``: the learner's 30 days of events in the body;
- ``by id, first ask``: a second start with the reasons warm-up off (``LSTEP_WARM_REASONS=0``),
  every request a learner whose reason codes are computed on the spot (concurrency 1).

``lstep`` runs as ``lstep serve`` runs it (``bentoml serve``, ``LSTEP_API_WORKERS`` workers),
measured once it has logged that the day's reason codes are computed ahead. ``mlflow models
serve`` (``models:/lstep-churn@champion``, ``--workers 1``, ``--env-manager local``) answers the
same learners' snapshot rows at the same concurrencies, one row per ``/invocations`` request:
the model alone, no rules, state or reasons. Both tables print side by side.

**Scale** (``--learners N``). A workspace whose batch day holds N learners: the feature snapshot
is synthesised by drawing rows of the simulated snapshot under new ids (simulating 5M learners
takes hours), the champion scores them and the day's answers file is written as the batch job
writes it (``write_day_answers``), on an empty state store. Then the service is started and
timed to ``/readyz``, its processes' RSS and PSS read (psutil) at ready and after two by-id
loads at concurrency 32, once the workers have warmed their reason codes: the first learners of
the call list (reasons warmed) and random learners (reasons computed on the spot).

Targets (issue 13, 2 cores): by id any day p50 <= 15 ms, p99 <= 40 ms at concurrency 1; inline
events p50 <= 20 ms, p99 <= 50 ms; by id on the snapshot day at concurrency 32 >= 400 req/s and
p99 <= 150 ms; with 5M learners start-up <= 30 s and RSS <= 3 GiB. The load generator runs on the
same 2 cores as the servers (aiohttp, one process): the figures include its share.

The workspace (simulated learners, a champion trained with two Optuna trials, one batch day with
its snapshot and answers file, the champion in the BentoML store) is cached under
``benchmarks/.cache`` so reruns time the services only; scale workspaces likewise.

    .venv/bin/python benchmarks/serve_latency.py [--customers 1000] [--requests 400]
    .venv/bin/python benchmarks/serve_latency.py --learners 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd
import psutil
from rich.console import Console
from rich.table import Table

from features.simulator import SimulationConfig, simulate
from serving.api.bento import (
    ServiceSettings,
    import_champion,
    project_root,
    serve_command,
    service_environment,
)
from serving.settings import TELEMETRY_ENV, Settings

CACHE = Path(__file__).resolve().parent / ".cache"
START = date(2026, 1, 1)
CONCURRENCY = (1, 8, 32)
READY_TIMEOUT_S = 600.0
LEVEL_BUDGET_S = 20.0
"""No request of a level starts after this many seconds (the slow modes' levels stay short)."""
WARM_TIMEOUT_S = 900.0
WARM_LINE = re.compile(r"reasons of (\d+) learners of \S+ ready in ([\d.]+) s")
BY_ID, OTHER_DAY, INLINE, FIRST = (
    "by id, snapshot day",
    "by id, other day",
    "inline events",
    "by id, first ask",
)
TARGETS: dict[tuple[str, int], tuple[float | None, float, float | None]] = {
    (BY_ID, 1): (15.0, 40.0, None),
    (OTHER_DAY, 1): (15.0, 40.0, None),
    (INLINE, 1): (20.0, 50.0, None),
    (BY_ID, 32): (None, 150.0, 400.0),
}
"""(mode, concurrency) -> (p50 ms, p99 ms, req/s) targets of issue 13."""
TARGET_START_S, TARGET_RSS_GIB = 30.0, 3.0
REQUESTS_AT_SCALE = 2000
GiB = 1024**3


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
    parser.add_argument("--requests", type=int, default=400, help="requests per level")
    parser.add_argument("--learners", type=int, help="scale run: N learners in the snapshot")
    parser.add_argument("--no-mlflow", action="store_true", help="skip mlflow models serve")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


# --- workspaces -----------------------------------------------------------------------------------


def _workspace(customers: int, days: int, seed: int, console: Console) -> Workspace:
    """The cached workspace for these parameters, built when absent."""
    home = CACHE / f"serve-{customers}x{days}-seed{seed}"
    as_of = START + timedelta(days=days - 10)
    settings = Settings(home=home)
    if (home / "ready").is_file():
        console.print(f"workspace: cached in {home}")
    else:
        _build(
            settings,
            SimulationConfig(customers=customers, days=days, seed=seed, truth_share=0.0),
            as_of,
            console,
        )
        (home / "ready").touch()
    _ensure_answers(settings, console)
    return Workspace(settings, as_of)


def _build(settings: Settings, config: SimulationConfig, as_of: date, console: Console) -> None:
    """Simulate, train a small champion, run the batch on ``as_of``, import the champion."""
    from serving.app.batch import BatchContext, BatchInputs, Models, run_day
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
        champion = load_champion(settings.tracking_uri)
        context = BatchContext(
            store=store, models=Models(champion, load_rules(champion=champion)),
            run_id=f"bench-{as_of}", now=now, data_dir=data,
        )  # fmt: skip
        run_day(as_of, inputs, context)
    import_champion(settings)


def _ensure_answers(settings: Settings, console: Console) -> None:
    """The answers file of the latest snapshot, as the batch job writes it (a cache made before
    the batch wrote one gets it here, not from the service's background build)."""
    from serving.app.answers import load_day_answers
    from serving.infra.champion import load_champion
    from serving.infra.rulesets import load_rules
    from serving.infra.store import StateStore

    with console.status("the day's answers file"), StateStore.from_settings(settings) as store:
        champion = load_champion(settings.tracking_uri)
        load_day_answers(
            settings.data_path, champion=champion, ruleset=load_rules(champion=champion),
            store=store,
        )  # fmt: skip


def _scale_workspace(base: Workspace, learners: int, console: Console) -> Workspace:
    """A workspace whose snapshot day holds ``learners`` learners (cached), the base champion."""
    home = CACHE / f"scale-{learners}-from-{base.settings.home.name}"
    settings = Settings(
        home=home,
        mlflow_tracking_uri=base.settings.tracking_uri,
        bentoml_home=base.settings.bentoml_path,
    )
    if (home / "ready").is_file():
        console.print(f"scale workspace: cached in {home}")
        return Workspace(settings, base.as_of)
    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    with console.status(f"synthesising {learners:,} learners' snapshot and answers"):
        _synthesise(base, settings, learners)
    console.print(f"scale workspace: built in {time.perf_counter() - started:.0f} s ({home})")
    (home / "ready").touch()
    return Workspace(settings, base.as_of)


def _synthesise(base: Workspace, settings: Settings, learners: int) -> None:
    """Rows of the base snapshot (and their customers) drawn under new ids; the answers file."""
    from serving.app.answers import write_day_answers
    from serving.core.assess import score_features
    from serving.infra.champion import load_champion
    from serving.infra.rulesets import load_rules
    from serving.infra.snapshots import snapshot_path, write_feature_snapshot
    from serving.infra.store import StateStore

    source = base.settings.data_path
    snapshot = pd.read_parquet(snapshot_path(source, base.as_of))
    customers = pd.read_parquet(source / "customers.parquet").set_index("customer_id")
    drawn = np.random.default_rng(7).integers(0, len(snapshot), size=learners)
    ids = pd.Series([f"S{index:09d}" for index in range(learners)])
    features = snapshot.iloc[drawn].reset_index(drop=True)
    originals = features["customer_id"].astype(str)
    features["customer_id"] = ids.astype(snapshot["customer_id"].dtype)
    data = settings.data_path
    data.mkdir(parents=True)
    people = customers.loc[originals].reset_index(drop=True).assign(customer_id=ids)
    people.to_parquet(data / "customers.parquet", index=False)
    shutil.copy(source / "events.parquet", data / "events.parquet")  # no synthetic learner's
    write_feature_snapshot(features, data, base.as_of)
    champion = load_champion(settings.tracking_uri)
    scores = score_features(features, champion)
    with StateStore.from_settings(settings) as store:
        state = store.state_frame(base.as_of)  # empty: every learner new
    write_day_answers(
        data, features, scores, ruleset=load_rules(champion=champion), state=state,
        as_of=base.as_of, model_version=champion.version,
    )  # fmt: skip


# --- servers --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(process: subprocess.Popen, url: str, log_path: Path) -> float:
    """Seconds until ``url`` answers 200 (the server's own readiness path)."""
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}); see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"not ready after {READY_TIMEOUT_S} s; see {log_path}")


def _spawn(command: list[str], environment: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=project_root(), env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _start_lstep(
    settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str, float]:
    """``bentoml serve`` on a free loopback port: (process, url, seconds to ``/readyz``)."""
    port = _free_port()
    environment = service_environment(settings) | (extra_env or {})
    process = _spawn(serve_command("127.0.0.1", port), environment, log_path)
    url = f"http://127.0.0.1:{port}"
    return process, url, _wait_ready(process, f"{url}/readyz", log_path)


def _start_mlflow(settings: Settings, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow models serve`` of the champion alias, one worker, this environment."""
    port = _free_port()
    executable = str(Path(sys.executable).with_name("mlflow"))
    model = f"models:/{settings.model_name}@champion"
    command = [executable, "models", "serve", "-m", model, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    environment = dict(os.environ) | TELEMETRY_ENV | {"MLFLOW_TRACKING_URI": settings.tracking_uri}
    # mlflow execs `uvicorn` by name: the venv's bin must be on the PATH.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    process = _spawn(command, environment, log_path)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(process, f"{url}/ping", log_path)
    return process, url


def _wait_for_warm_reasons(log_path: Path, workers: int = 1) -> tuple[int, float]:
    """Block until ``workers`` workers logged that the day's reasons are computed:
    (learners, seconds of the slowest)."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        found = WARM_LINE.findall(log_path.read_text(errors="replace"))
        if len(found) >= workers:
            return int(found[0][0]), max(float(seconds) for _, seconds in found)
        time.sleep(0.5)
    raise SystemExit(f"the reasons warm-up did not finish in {WARM_TIMEOUT_S} s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """End the server's process group (its own, started by us)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _memory(process: subprocess.Popen) -> list[dict]:
    """RSS and PSS (GiB) of the server and each of its processes (PSS shares mapped pages)."""
    root = psutil.Process(process.pid)
    rows = []
    for member in [root, *root.children(recursive=True)]:
        try:
            info = member.memory_full_info()
            words = _label(member.cmdline())
        except psutil.Error:
            continue  # ended meanwhile
        # Linux `shared` is the resident file-backed pages (the mapped answers file, libraries):
        # clean page cache the kernel reclaims under pressure; the rest is the process's heap.
        rows.append({
            "process": words, "rss_gib": info.rss / GiB, "pss_gib": info.pss / GiB,
            "anon_gib": (info.rss - info.shared) / GiB,
        })  # fmt: skip
    return rows


def _label(command: list[str]) -> str:
    """What a process of ``bentoml serve`` is: its service (and worker) or its program."""
    if "--service-name" in command:
        name = command[command.index("--service-name") + 1]
        worker = command[command.index("--worker-id") + 1] if "--worker-id" in command else "?"
        return f"{name} worker {worker}"
    return " ".join(Path(word).name for word in command[:3])[:50]


# --- load -----------------------------------------------------------------------------------------


def _payloads(workspace: Workspace) -> tuple[dict[str, list[dict]], pd.DataFrame]:
    """Bodies per mode, one per learner of the snapshot, and the snapshot itself."""
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
    day, next_day = workspace.as_of.isoformat(), (workspace.as_of + timedelta(days=1)).isoformat()

    def inline(customer_id: str) -> dict:
        frame = by_learner.get(customer_id, recent.iloc[:0].drop(columns="customer_id"))
        rows = json.loads(frame.to_json(orient="records"))
        return {"learners": [{"customer_id": customer_id, "events": rows}], "as_of": day}

    bodies = {
        BY_ID: [{"learners": [{"customer_id": c}], "as_of": day} for c in ids],
        OTHER_DAY: [{"learners": [{"customer_id": c}], "as_of": next_day} for c in ids],
        INLINE: [inline(c) for c in ids],
    }
    return bodies, snapshot


def _mlflow_bodies(snapshot: pd.DataFrame) -> list[dict]:
    """One ``dataframe_split`` body per snapshot row, in the pyfunc's input types."""
    from models.pyfunc import to_pyfunc_input

    frame = to_pyfunc_input(snapshot)
    split = json.loads(frame.to_json(orient="split", index=False))
    return [
        {"dataframe_split": {"columns": split["columns"], "data": [row]}} for row in split["data"]
    ]


async def _level(
    url: str,
    path: str,
    bodies: list[dict],
    concurrency: int,
    count: int,
    budget_s: float = LEVEL_BUDGET_S,
) -> dict[str, float]:
    """Up to ``count`` POSTs, ``concurrency`` at a time, none started after ``budget_s``;
    latency percentiles and throughput (a slow mode is measured on fewer requests)."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + budget_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                started = time.perf_counter()
                if started > stop_at:
                    return
                async with session.post(path, json=bodies[index % len(bodies)]) as response:
                    text = await response.text()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    raise SystemExit(f"{path} answered {response.status}: {text[:500]}")

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(count)))
        wall = time.perf_counter() - started
    milliseconds = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p99_ms": float(np.percentile(milliseconds, 99)),
        "requests_per_s": len(latencies) / wall,
        "requests": len(latencies),
    }


def _measure(
    server: str, url: str, path: str, modes: dict[str, list[dict]], requests: int
) -> list[dict]:
    figures = []
    for mode, bodies in modes.items():
        asyncio.run(_level(url, path, bodies, 4, 32))  # warm up: connections, caches, batching
        for concurrency in CONCURRENCY:
            count = max(requests, 16 * concurrency)
            result = asyncio.run(_level(url, path, bodies, concurrency, count))
            figures.append({"server": server, "mode": mode, "concurrency": concurrency, **result})
    return figures


def _measure_first_asks(url: str, bodies: list[dict], requests: int) -> dict:
    """By id at concurrency 1, every request a learner not asked about before."""
    asyncio.run(_level(url, "/score", bodies[:16], 1, 16))  # connections; not reused below
    fresh = bodies[16:]
    result = asyncio.run(_level(url, "/score", fresh, 1, min(requests, len(fresh))))
    return {"server": "lstep", "mode": FIRST, "concurrency": 1, **result}


# --- report ---------------------------------------------------------------------------------------


def _verdict(row: dict) -> str:
    target = TARGETS.get((row["mode"], row["concurrency"]))
    if target is None:
        return ""
    p50, p99, rate = target
    met = (p50 is None or row["p50_ms"] <= p50) and row["p99_ms"] <= p99
    met = met and (rate is None or row["requests_per_s"] >= rate)
    return "met" if met else "NOT met"


def _report(console: Console, figures: list[dict]) -> None:
    table = Table(
        title="serve_latency: one learner per request (lstep POST /score | mlflow /invocations)",
        title_justify="left",
    )
    for column in ("mode", "c", "lstep p50 ms", "p99 ms", "req/s", "target",
                   "mlflow p50 ms", "p99 ms", "req/s"):  # fmt: skip
        table.add_column(column, justify="left" if column == "mode" else "right")
    mlflow = {row["concurrency"]: row for row in figures if row["server"] == "mlflow"}
    for row in (row for row in figures if row["server"] == "lstep"):
        beside = mlflow.get(row["concurrency"]) if row["mode"] != FIRST else None
        table.add_row(row["mode"], str(row["concurrency"]), *_cells(row), _verdict(row),
                      *(_cells(beside) if beside else ("", "", "")))  # fmt: skip
    table.caption = (
        "targets (issue 13): by id p50 <= 15 / p99 <= 40 ms at c=1, inline p50 <= 20 / p99 <= 50 "
        "ms at c=1, snapshot day at c=32 >= 400 req/s and p99 <= 150 ms; mlflow: the model "
        "alone on a snapshot row (1 worker)"
    )
    console.print(table)


def _cells(row: dict) -> tuple[str, str, str]:
    return f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['requests_per_s']:.0f}"


def _latency_run(workspace: Workspace, arguments: argparse.Namespace, console: Console) -> dict:
    modes, snapshot = _payloads(workspace)
    home = workspace.settings.home
    figures = []
    if not arguments.no_mlflow:  # first: a failure here costs no lstep run
        with console.status("starting mlflow models serve"):
            process, url = _start_mlflow(workspace.settings, home / "mlflow-serve.log")
        try:
            rows = {"rows": _mlflow_bodies(snapshot)}
            figures += _measure("mlflow", url, "/invocations", rows, arguments.requests)
        finally:
            _stop(process)
    with console.status("starting lstep (bentoml serve)"):
        process, url, ready_s = _start_lstep(workspace.settings, home / "serve.log")
    try:
        with console.status("waiting for the day's reason codes"):
            learners, seconds = _wait_for_warm_reasons(home / "serve.log")
        console.print(f"lstep ready in {ready_s:.1f} s; reasons of {learners} ahead in {seconds} s")
        example = httpx.post(f"{url}/score", json=modes[BY_ID][0], timeout=60).json()
        figures += _measure("lstep", url, "/score", modes, arguments.requests)
    finally:
        _stop(process)
    with console.status("starting lstep without the reasons warm-up"):
        process, url, _ = _start_lstep(
            workspace.settings, home / "serve-cold.log", {"LSTEP_WARM_REASONS": "0"}
        )
    try:
        figures.append(_measure_first_asks(url, modes[BY_ID], arguments.requests))
    finally:
        _stop(process)
    _report(console, figures)
    console.print("example /score response (by id, snapshot day):")
    console.print_json(json.dumps(example))
    return {"figures": figures, "example": example}


def _scale_run(base: Workspace, arguments: argparse.Namespace, console: Console) -> dict:
    workspace = _scale_workspace(base, arguments.learners, console)
    data = workspace.settings.data_path
    answers = sorted((data / "answers").glob("*.arrow"))
    ids = pd.read_parquet(data / "customers.parquet", columns=["customer_id"])["customer_id"]
    picked = np.random.default_rng(1).choice(len(ids), size=REQUESTS_AT_SCALE, replace=False)
    day = workspace.as_of.isoformat()
    cold = [{"learners": [{"customer_id": ids[i]}], "as_of": day} for i in picked]
    warm = [{"learners": [{"customer_id": c}], "as_of": day} for c in _call_list(answers[0])]
    log_path = workspace.settings.home / "serve.log"
    process, url, ready_s = _start_lstep(workspace.settings, log_path)
    try:
        at_ready = _memory(process)
        first = _timed(lambda: httpx.post(f"{url}/score", json=cold[0], timeout=60))
        with console.status("waiting for the workers' reason codes warm-up"):
            warmed, warm_s = _wait_for_warm_reasons(log_path, ServiceSettings().api_workers)
        loads = {
            "call list (reasons warmed)": asyncio.run(_level(url, "/score", warm, 32, len(warm))),
            "random learners (reasons on the spot)": asyncio.run(
                _level(url, "/score", cold[1:], 32, len(cold) - 1)
            ),
        }
        after_load = _memory(process)
        counted = _answers_counted(url)
    finally:
        _stop(process)
    result = {
        "learners": arguments.learners,
        "answers_file_gib": sum(path.stat().st_size for path in answers) / GiB,
        "ready_s": ready_s,
        "first_request_ms": first,
        "warm_reasons": {"learners": warmed, "seconds": warm_s},
        "loads_c32": loads,
        "answered_from_answers": counted,
        "memory_at_ready": at_ready,
        "memory_after_load": after_load,
    }
    _report_scale(console, result)
    return result


def _call_list(path: Path) -> list[str]:
    """The first learners of the day's call list (those the warm-up explains first)."""
    from serving.infra.answers_file import open_answers_file

    table = open_answers_file(path).table
    rows = table.column("lstep.call_order").slice(0, REQUESTS_AT_SCALE).to_pylist()
    return [key.decode() for key in table.column("lstep.key").take(rows).to_pylist()]


def _timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = call()
    if response.status_code != 200:
        raise SystemExit(f"/score answered {response.status_code}: {response.text[:500]}")
    return (time.perf_counter() - started) * 1000


def _answers_counted(url: str) -> float:
    """``lstep_score_learners_total{path="answers"}`` from ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r'lstep_score_learners_total\{path="answers"\} ([\d.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def _report_scale(console: Console, result: dict) -> None:
    total = sum(row["rss_gib"] for row in result["memory_after_load"])
    pss = sum(row["pss_gib"] for row in result["memory_after_load"])
    anon = sum(row["anon_gib"] for row in result["memory_after_load"])
    # The verdict is on the sum of the processes' RSS, each counting the mapped answers pages it
    # holds (a worker lets them go past ``RESIDENT_BUDGET_BYTES``): the strict reading.
    met = result["ready_s"] <= TARGET_START_S and total <= TARGET_RSS_GIB
    console.print(
        f"{result['learners']:,} learners (answers file {result['answers_file_gib']:.2f} GiB): "
        f"ready in {result['ready_s']:.1f} s; first /score {result['first_request_ms']:.1f} ms; "
        f"reasons of {result['warm_reasons']['learners']} learners warmed per worker in "
        f"{result['warm_reasons']['seconds']:.0f} s; {result['answered_from_answers']:.0f} "
        "learners answered from the day's answers"
    )
    for name, load in result["loads_c32"].items():
        console.print(
            f"  by id on the snapshot day, c=32, {name}: p50 {load['p50_ms']:.1f} ms, "
            f"p99 {load['p99_ms']:.1f} ms, {load['requests_per_s']:.0f} req/s"
        )
    table = Table(
        title="memory per process (GiB): at ready | after the loads", title_justify="left"
    )
    for column in ("process", "RSS", "PSS", "anon", "RSS", "PSS", "anon"):
        table.add_column(column, justify="left" if column == "process" else "right")
    after = {row["process"]: row for row in result["memory_after_load"]}
    unknown = {"rss_gib": float("nan"), "pss_gib": float("nan"), "anon_gib": float("nan")}
    for row in result["memory_at_ready"]:
        later = after.get(row["process"], unknown)
        table.add_row(
            row["process"],
            *(f"{values[key]:.2f}" for values in (row, later)
              for key in ("rss_gib", "pss_gib", "anon_gib")),
        )  # fmt: skip
    table.caption = (
        f"total after the load: RSS {total:.2f} GiB (mapped pages counted once per process), "
        f"PSS {pss:.2f} GiB, anonymous (heap, not file-backed) {anon:.2f} GiB; "
        f"target start-up <= {TARGET_START_S:.0f} s, total RSS <= "
        f"{TARGET_RSS_GIB:.0f} GiB: {'met' if met else 'NOT met'}"
    )
    console.print(table)


def main() -> None:
    arguments = _arguments()
    console = Console(width=150)  # the side-by-side table is wide; logs are not terminals
    workspace = _workspace(arguments.customers, arguments.days, arguments.seed, console)
    if arguments.learners:
        result = _scale_run(workspace, arguments, console)
    else:
        result = _latency_run(workspace, arguments, console)
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
