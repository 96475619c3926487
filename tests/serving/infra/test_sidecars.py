"""Sidecars: built once per version of their source, even when processes start together."""

from __future__ import annotations

import threading
import time

import pytest

from serving.infra.sidecars import open_sidecar, read_meta


def test_workers_opening_together_build_the_sidecar_once(tmp_path):
    # given a source and a build that takes a while
    source = tmp_path / "source.txt"
    source.write_text("v1")
    builds = []

    def write(_source, directory):
        builds.append(directory)
        time.sleep(0.3)
        (directory / "out.txt").write_text(source.read_text())
        return {"lines": 1}

    # when four workers open its sidecar at the same time
    opened = []
    workers = [
        threading.Thread(
            target=lambda: opened.append(
                open_sidecar(source, tmp_path / "s", version=1, write=write)
            )
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # then one built it and all read the same finished directory
    assert len(builds) == 1 and len(set(opened)) == 1
    assert (opened[0] / "out.txt").read_text() == "v1"
    assert read_meta(opened[0])["lines"] == 1


def test_a_failed_build_leaves_nothing_to_read_and_the_next_open_builds(tmp_path):
    # given a build that fails half-way
    source = tmp_path / "source.txt"
    source.write_text("v1")

    def failing(_source, directory):
        (directory / "out.txt").write_text("half")
        raise ValueError("bad source")

    with pytest.raises(ValueError, match="bad source"):
        open_sidecar(source, tmp_path / "s", version=1, write=failing)
    # then no sidecar directory remains, and the next open builds a whole one
    assert not list((tmp_path / "s").glob("v*")) and not list((tmp_path / "s").glob(".building*"))
    directory = open_sidecar(
        source,
        tmp_path / "s",
        version=1,
        write=lambda _s, d: (d / "out.txt").write_text("ok") and {},
    )
    assert (directory / "out.txt").read_text() == "ok"
