"""How many CPUs this process may use: what sizes DuckDB, the compiled trees and SQLite's sorts.

Every engine lstep drives in one process sized itself for the 2-core target machine (DuckDB's
two threads) or for the whole host (``os.cpu_count()``): a scheduler's 16-core box ran the day's
SQL on two of them, and a container limited to 2 CPUs of a 64-core host started 64 predict
threads on them. ``usable_cores`` is the one answer: the CPUs the process is allowed to run on
(its affinity mask: ``taskset``, ``docker --cpuset-cpus``) within the cgroup's CPU bandwidth
quota (``docker --cpus``, Kubernetes CPU limits), unless ``LSTEP_THREADS`` says how many.

Written here rather than taken from joblib's ``loky.cpu_count`` (the same rules): joblib is not
one of lstep's dependencies, and its import cost a DuckDB command ~0.14 s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

THREADS_VARIABLE = "LSTEP_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(environ: Mapping[str, str] | None = None, cgroup_root: Path | None = None) -> int:
    """The CPUs this process may use: ``LSTEP_THREADS`` when set, else its affinity within the
    cgroup quota (at least 1).

    Args:
        environ: the environment to read (default ``os.environ``).
        cgroup_root: where the cgroup file systems are mounted (default ``/sys/fs/cgroup``).

    Raises:
        ValueError: ``LSTEP_THREADS`` is set to anything but a whole number >= 1.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get(THREADS_VARIABLE, "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise ValueError(
                f"{THREADS_VARIABLE} must be a whole number of threads >= 1, got {explicit!r}"
            )
        return int(explicit)
    allowed = _affinity()
    quota = cgroup_quota(CGROUP_ROOT if cgroup_root is None else cgroup_root)
    return max(1, min(allowed, quota) if quota is not None else allowed)


def cgroup_quota(root: Path) -> int | None:
    """The cgroup's CPU bandwidth limit in whole CPUs (rounded up), or None when unlimited or
    unreadable: cgroup v2's ``cpu.max`` ("max 100000" or "QUOTA PERIOD"), else v1's
    ``cpu.cfs_quota_us`` (-1: unlimited) over ``cpu.cfs_period_us``."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _whole_cpus(quota, period)
    v1 = root / "cpu"
    return _whole_cpus(_read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us"))


def _whole_cpus(quota: str | None, period: str | None) -> int | None:
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:  # "max", missing or garbled: no limit lstep can read
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity to read
        return os.cpu_count() or 1


__all__ = ["CGROUP_ROOT", "THREADS_VARIABLE", "cgroup_quota", "usable_cores"]
