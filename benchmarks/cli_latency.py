"""Benchmark: wall time of the interactive commands ``lstep status``, ``kpis`` and ``explain``.

Each command runs ``--repeat`` times as a fresh process (``subprocess`` + ``time.perf_counter``,
like hyperfine without its statistics), on a workspace: ``--home`` (an ``LSTEP_HOME`` that
``lstep demo`` filled), or a new one built with ``lstep demo`` in a temporary folder (~1-2 min).
``python -c pass`` and ``lstep --help`` are timed beside them: the floor of any Python process
and of the CLI itself. ``kpis`` runs twice per round: once computed (its stored file
``data/kpis/as_of=DAY.json`` removed first: the run computes and stores it again, the peer), once
read from that file (what a batch day leaves behind); the ratio of the two is printed. The commands
run interleaved, round by round, so that a change of load hits them all alike. Targets (issue 13):
``status`` and ``kpis`` under 1.5 s, ``explain`` on a batch day under 2.5 s. Wall time depends on
the machine's load (2 shared cores here), so each run's CPU time (user + system, from ``getrusage``
of the children) is printed beside it: on a busy machine it is the steadier figure. Both depend on
whether Python finds compiled bytecode (``PYTHONDONTWRITEBYTECODE=1`` with no ``.pyc`` yet makes
every run compile what it imports). To time another checkout's code on the same workspace, run this
file with that checkout's ``.venv/bin/python`` (``PYTHONPATH`` does not do it: the editable
install's finder comes first).

    .venv/bin/python benchmarks/cli_latency.py [--home DIR] [--repeat 5] [--customer ID]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGETS_S = {"status": 1.5, "kpis": 1.5, "kpis (computed)": 1.5, "explain": 2.5}
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true"}
RUN_TIMEOUT_S = 300.0
DEMO_TIMEOUT_S = 1800.0


def lstep_executable() -> str:
    """The ``lstep`` script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("lstep"))


def environment(home: Path) -> dict[str, str]:
    """This process's environment pointed at ``home``, telemetry off (nothing reaches out)."""
    return {**os.environ, **TELEMETRY_OFF, "DO_NOT_TRACK": "true", "LSTEP_HOME": str(home)}


def build_workspace(home: Path, customers: int, backfill_days: int) -> None:
    """Fill ``home`` with ``lstep demo`` (simulate, train, backfill the batch)."""
    command = [lstep_executable(), "demo", "--customers", str(customers)]
    command += ["--backfill-days", str(backfill_days)]
    print(f"building the workspace in {home}: {' '.join(command[1:])}", flush=True)
    subprocess.run(
        command,
        env=environment(home),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=DEMO_TIMEOUT_S,
    )


def scored_customer(home: Path) -> str:
    """A learner of the latest batch day (the first row of its feature snapshot)."""
    import pyarrow.parquet as pq

    snapshots = sorted((home / "data" / "features").glob("as_of=*.parquet"))
    if not snapshots:
        raise SystemExit(f"{home}: no feature snapshot; is it a workspace `lstep demo` filled?")
    return str(pq.read_table(snapshots[-1], columns=["customer_id"]).column(0)[0])


def time_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``command``; a failing run stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def stored_kpis(home: Path) -> Path:
    """The stored KPIs file of the workspace's latest batch day (``serving.app.kpi_files``)."""
    meta = json.loads((home / "data" / "meta.json").read_text(encoding="utf-8"))
    return home / "data" / "kpis" / f"as_of={meta['data_end']}.json"


def commands(customer: str) -> dict[str, list[str]]:
    """The timed commands by name, the floors first."""
    lstep = lstep_executable()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "lstep --help": [lstep, "--help"],
        "status": [lstep, "status", customer],
        "kpis (computed)": [lstep, "kpis"],
        "kpis": [lstep, "kpis"],
        "explain": [lstep, "explain", customer],
    }


def time_rounds(home: Path, customer: str, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """``repeat`` rounds of every command; ``kpis (computed)`` without the stored file."""
    env = environment(home)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands(customer)}
    stored = stored_kpis(home)
    for _ in range(repeat):
        for name, command in commands(customer).items():
            if name == "kpis (computed)":
                stored.unlink(missing_ok=True)  # this run computes, then stores it again
            results[name].append(time_run(command, env))
    if not stored.is_file():
        raise SystemExit(f"{stored}: `lstep kpis` did not store the day's KPIs")
    return results


def report(results: dict[str, list[tuple[float, float]]], title: str) -> Table:
    """Wall min / median / max and CPU median per command, against its target."""
    table = Table(title=title)
    for column in ("command", "min s", "median s", "max s", "CPU median s", "target s", "met"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for name, timings in results.items():
        wall = [seconds for seconds, _ in timings]
        target = TARGETS_S.get(name)
        median = statistics.median(wall)
        met = "-" if target is None else ("yes" if median <= target else "no")
        table.add_row(
            name,
            f"{min(wall):.2f}",
            f"{median:.2f}",
            f"{max(wall):.2f}",
            f"{statistics.median(cpu for _, cpu in timings):.2f}",
            "-" if target is None else f"{target:.1f}",
            met,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="A workspace `lstep demo` filled (default: new)")
    parser.add_argument("--repeat", type=int, default=5, help="Runs per command")
    parser.add_argument("--customer", help="Learner for status/explain (default: a scored one)")
    parser.add_argument("--customers", type=int, default=5000, help="Learners of a new demo")
    parser.add_argument("--backfill-days", type=int, default=61, help="Batch days of a new demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lstep-cli-bench-") as scratch:
        home = args.home
        if home is None:
            home = Path(scratch) / "home"
            build_workspace(home, args.customers, args.backfill_days)
        customer = args.customer or scored_customer(home)
        results = time_rounds(home, customer, args.repeat)
    bytecode = "set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "unset"
    title = (
        f"lstep CLI, {args.repeat} runs each (PYTHONDONTWRITEBYTECODE {bytecode}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    Console().print(report(results, title))
    for measure, index in (("wall", 0), ("CPU", 1)):
        stored, computed = (
            statistics.median(timing[index] for timing in results[name])
            for name in ("kpis", "kpis (computed)")
        )
        print(f"kpis stored / computed, median {measure}: {stored / computed:.2f}")


if __name__ == "__main__":
    main()
