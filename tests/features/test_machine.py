"""The CPUs lstep sizes its engines by: affinity, cgroup quota and ``LSTEP_THREADS``."""

from __future__ import annotations

import os

import pytest

from features.machine import cgroup_quota, usable_cores
from features.workspace import connect
from serving.app.dashboard_data import query_connection


def _cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "max 100000"}, None),  # v2, unlimited
        ({"cpu.max": "150000 100000"}, 2),  # v2, 1.5 CPUs: rounded up
        ({"cpu.max": "400000 100000"}, 4),
        ({"cpu.max": "50000 100000"}, 1),  # half a CPU is still one thread
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),
        ({"cpu.max": "garbled"}, None),
        ({}, None),  # no cgroup file system mounted
    ],
)
def test_the_cgroup_quota_is_read_in_whole_cpus(tmp_path, files, cpus):
    # given a cgroup file system holding `files`
    root = _cgroup(tmp_path, files)

    # when its CPU limit is read
    # then it is the quota over the period, rounded up, or None when there is none
    assert cgroup_quota(root) == cpus


def test_usable_cores_are_the_affinity_within_the_quota(tmp_path):
    # given this process's affinity and a quota of one CPU
    allowed = len(os.sched_getaffinity(0))
    limited = _cgroup(tmp_path / "limited", {"cpu.max": "100000 100000"})
    unlimited = _cgroup(tmp_path / "unlimited", {"cpu.max": "max 100000"})

    # when the usable cores are counted without LSTEP_THREADS
    # then the quota caps the affinity, and without one the affinity is the answer
    assert usable_cores(environ={}, cgroup_root=limited) == 1
    assert usable_cores(environ={}, cgroup_root=unlimited) == allowed


def test_a_quota_above_the_affinity_leaves_the_affinity(tmp_path, monkeypatch):
    # given a process pinned to one CPU under a quota of eight
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    root = _cgroup(tmp_path, {"cpu.max": "800000 100000"})

    # when the usable cores are counted
    # then the process runs on its one CPU, not eight
    assert usable_cores(environ={}, cgroup_root=root) == 1


def test_lstep_threads_overrides_the_machine(tmp_path):
    # given a quota of one CPU and LSTEP_THREADS=6 (a scheduler that knows better)
    root = _cgroup(tmp_path, {"cpu.max": "100000 100000"})

    # when the usable cores are counted
    # then LSTEP_THREADS is the answer, spaces around it ignored
    assert usable_cores(environ={"LSTEP_THREADS": " 6 "}, cgroup_root=root) == 6
    assert usable_cores(environ={"LSTEP_THREADS": ""}, cgroup_root=root) == 1  # empty: unset


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_lstep_threads_is_refused_naming_it(value):
    # given LSTEP_THREADS set to something that is not a thread count
    # when the usable cores are counted
    # then the error names the variable and the value
    with pytest.raises(ValueError, match=rf"LSTEP_THREADS .*{value!r}"):
        usable_cores(environ={"LSTEP_THREADS": value})


@pytest.mark.parametrize("open_connection", [connect, query_connection], ids=["batch", "dashboard"])
@pytest.mark.parametrize("cores", ["1", "3"])
def test_duckdb_connections_run_on_the_cores_the_process_may_use(
    monkeypatch, open_connection, cores
):
    # given a process allowed `cores` CPUs (LSTEP_THREADS; 2 on the machine that runs this)
    monkeypatch.setenv("LSTEP_THREADS", cores)

    # when the batch's or a dashboard's DuckDB connection is opened without a thread count
    con = open_connection()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.close()

    # then DuckDB runs on those cores: neither two fixed nor its own count of the host's CPUs
    assert threads == int(cores)
