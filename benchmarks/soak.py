"""Soak: minutes of mixed traffic against a served workspace while a batch day runs.

Kinds of request, drawn at random by ``--workers`` concurrent clients for ``--minutes``:

- ``by id (answers)``: one learner on the snapshot day (the day's answers);
- ``by id (other day)``: one learner on the day after (assessed on demand);
- ``inline events``: one learner with their 30 days of events;
- ``override``: a CS hold of one learner with the token, from the start (an override takes
  effect on the data day after the latest batch day, so the batch day running meanwhile decides
  on it and no day is refused);
- ``bad request``: a body that breaks the request model (400 expected).

Thirty seconds in, ``lstep score`` runs the next batch day in another process. Printed: requests
and status counts per kind, p50/p99 per kind, requests that got no answer within 60 s (hung),
and the RSS of every process of the server at start and end. Uses the workspace of
``serve_latency.py`` (cached under ``benchmarks/.cache``).

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--workers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table
from serve_latency import Workspace, _payloads, _start, _stop, _workspace

from serving.api.bento import service_environment
from serving.settings import Settings

TOKEN = "soak-token-0123456789"
HUNG_S = 60.0
BATCH_AFTER_S = 30.0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=150)
    return parser.parse_args()


def _rss_mib(root: int) -> dict[str, float]:
    """RSS of the server and every process under it, by name and pid."""
    server = psutil.Process(root)
    found = {}
    for process in [server, *server.children(recursive=True)]:
        try:
            arguments = process.cmdline()
            named = "--service-name" in arguments
            name = arguments[arguments.index("--service-name") + 1] if named else "bentoml serve"
            found[f"{process.pid} {name}"] = process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return found


def _bodies(workspace, payloads: dict) -> dict[str, list[dict]]:
    other = (workspace.as_of + timedelta(days=1)).isoformat()
    by_id = payloads["by id"]
    return {
        "by id (answers)": by_id,
        "by id (other day)": [{**body, "as_of": other} for body in by_id],
        "inline events": payloads["inline events"],
        "override": [
            {
                "customer_id": body["learners"][0]["customer_id"],
                "actor": "soak",
                "reason": "soak test",
            }
            for body in by_id
        ],
        "bad request": [{"learners": [{"customer_id": ""}], "aply": True}],
    }


async def _client(url, bodies, stop_at, results, latencies) -> None:
    kinds = list(bodies)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, timeout=HUNG_S) as client:
        while time.monotonic() < stop_at:
            kind = random.choice(kinds)
            route = "/override" if kind == "override" else "/score"
            body = random.choice(bodies[kind])
            started = time.perf_counter()
            try:
                response = await client.post(route, json=body, headers=headers)
                results[kind][response.status_code] += 1
            except httpx.TimeoutException:
                results[kind]["hung"] += 1
            except httpx.TransportError as error:
                results[kind][type(error).__name__] += 1
            latencies[kind].append((time.perf_counter() - started) * 1000)


async def _batch(workspace, console: Console) -> None:
    await asyncio.sleep(BATCH_AFTER_S)
    day = (workspace.as_of + timedelta(days=1)).isoformat()
    environment = service_environment(workspace.settings)
    lstep = os.path.join(os.path.dirname(sys.executable), "lstep")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        lstep, "score", "--as-of", day, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, error = await process.communicate()
    seconds = time.monotonic() - started
    verdict = "done" if process.returncode == 0 else f"FAILED: {error.decode()[-300:]}"
    console.print(f"batch day {day} {verdict} in {seconds:.1f} s while serving")


async def _soak(url, workspace, bodies, minutes, workers, console) -> tuple[dict, dict]:
    results: dict[str, Counter] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    stop_at = time.monotonic() + minutes * 60
    clients = [_client(url, bodies, stop_at, results, latencies) for _ in range(workers)]
    await asyncio.gather(_batch(workspace, console), *clients)
    return results, latencies


def _report(console: Console, results, latencies, before, after, minutes: float) -> None:
    table = Table(title=f"soak: {minutes:g} minutes of mixed traffic", title_justify="left")
    for column in ("kind", "requests", "statuses", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("kind", "statuses") else "right")
    for kind, counts in sorted(results.items()):
        values = np.array(latencies[kind])
        statuses = ", ".join(
            f"{status}: {count}" for status, count in sorted(counts.items(), key=str)
        )
        table.add_row(
            kind, str(sum(counts.values())), statuses,
            f"{np.percentile(values, 50):.1f}", f"{np.percentile(values, 99):.1f}",
        )  # fmt: skip
    server_errors = sum(
        c for counts in results.values() for s, c in counts.items() if str(s)[0] == "5"
    )
    hung = sum(counts["hung"] for counts in results.values())
    table.caption = f"5xx: {server_errors}; hung (no answer in {HUNG_S:.0f} s): {hung}"
    console.print(table)
    memory = Table(title="RSS of the server's processes (MiB)", title_justify="left")
    for column in ("process", "start", "end", "growth"):
        memory.add_column(column, justify="left" if column == "process" else "right")
    for name in sorted(set(before) | set(after)):
        start, end = before.get(name, float("nan")), after.get(name, float("nan"))
        memory.add_row(name, f"{start:.0f}", f"{end:.0f}", f"{end - start:+.0f}")
    console.print(memory)


def _copy(workspace: Workspace, scratch: Path) -> Workspace:
    """A copy of the cached workspace: the soak's batch day and overrides must not move the
    cache ``serve_latency.py`` measures on."""
    home = scratch / "home"
    shutil.copytree(workspace.settings.home, home, ignore=shutil.ignore_patterns("*.log"))
    return Workspace(Settings(home=home), workspace.as_of)


def main() -> None:
    arguments = _arguments()
    console = Console()
    cached = _workspace(arguments.customers, arguments.days, 0, console)
    scratch = Path(tempfile.mkdtemp(prefix="lstep-soak-"))
    workspace = _copy(cached, scratch)
    bodies = _bodies(workspace, _payloads(workspace))
    log_path = workspace.settings.home / "soak.log"
    process, url = _start(workspace.settings, log_path, {"LSTEP_API_TOKEN": TOKEN})
    try:
        before = _rss_mib(process.pid)
        results, latencies = asyncio.run(
            _soak(url, workspace, bodies, arguments.minutes, arguments.workers, console)
        )
        after = _rss_mib(process.pid)
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)
    _report(console, results, latencies, before, after, arguments.minutes)


if __name__ == "__main__":
    main()
