"""Service faults: a killed worker costs a bounded failure, never a 500 or a hang.

A service of its own (the shared one serves the other tests), on 127.0.0.1 only. Every worker
assembles features itself from memory-mapped indexes, so there is no internal process to lose:
the fault left is a worker that dies (out of memory, a crash in a native library).
"""

from __future__ import annotations

import time

import httpx
import pandas as pd
import psutil
import pytest

from tests.serving.service_fixtures import OTHER_DAY, SNAPSHOT_DAY, start_service


def api_workers(server: psutil.Process) -> list[psutil.Process]:
    """The server's ``lstep`` API workers (BentoML names them by the service)."""
    workers = []
    for child in server.children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:  # the killed worker, not yet reaped (a zombie) or gone
            continue
        if "serving.api.service:LstepService" in command and "--worker-id" in command:
            workers.append(child)
    assert workers, "no API worker under the server"
    return workers


@pytest.fixture
def own_service(workspace, tmp_path):
    served = start_service(workspace, tmp_path / "serve.log")
    yield served
    served.stop()


def test_a_killed_worker_is_replaced_and_no_request_gets_a_500(own_service, workspace):
    url = own_service.url
    snapshot_file = workspace.settings.data_path / "features" / f"as_of={SNAPSHOT_DAY}.parquet"
    held = pd.read_parquet(snapshot_file, columns=["customer_id"])["customer_id"].iloc[-1]
    other_day = {"learners": [{"customer_id": held}], "as_of": OTHER_DAY.isoformat()}
    snapshot_day = {"learners": [{"customer_id": held}], "as_of": SNAPSHOT_DAY.isoformat()}
    workers = api_workers(psutil.Process(own_service.process.pid))
    # given the service answering both paths
    assert httpx.post(f"{url}/score", json=other_day, timeout=60).status_code == 200
    # when one worker is killed while requests come in
    workers[0].kill()
    statuses = set()
    for body in (other_day, snapshot_day) * 5:
        try:
            statuses.add(httpx.post(f"{url}/score", json=body, timeout=60).status_code)
        except httpx.TransportError:
            statuses.add("connection")  # the dead worker's own connection: the client retries
    # then no request failed with a 500, and the server replaced the worker and answers again
    assert statuses <= {200, 503, "connection"} and 200 in statuses, statuses
    deadline = time.monotonic() + 60
    while len(api_workers(psutil.Process(own_service.process.pid))) < len(workers):
        assert time.monotonic() < deadline, "the killed worker was not replaced within 60 s"
        time.sleep(0.5)
    assert httpx.post(f"{url}/score", json=other_day, timeout=60).status_code == 200
