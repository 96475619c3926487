"""Service faults: a stopped features process costs a bounded 503, never a hang.

A service of its own (the shared one serves the other tests), with a short features deadline;
its internal features process is stopped (SIGSTOP) and resumed, on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pandas as pd
import psutil
import pytest

from tests.serving.service_fixtures import OTHER_DAY, SNAPSHOT_DAY, start_service

DEADLINE_S = 3


def features_process(server: psutil.Process) -> psutil.Process:
    """The ``lstep-features`` worker among the server's processes."""
    for child in server.children(recursive=True):
        if "lstep-features" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no lstep-features worker under the server")


@pytest.fixture
def own_service(workspace, tmp_path):
    served = start_service(
        workspace, tmp_path / "serve.log", {"LSTEP_FEATURES_TIMEOUT_S": str(DEADLINE_S)}
    )
    yield served
    served.stop()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_a_stopped_features_process_is_a_prompt_503_and_the_service_recovers(
    own_service, workspace
):
    url = own_service.url
    snapshot = workspace.settings.data_path / "features" / f"as_of={SNAPSHOT_DAY}.parquet"
    assert snapshot.exists()
    body = {"learners": [{"customer_id": "C0000003"}], "as_of": OTHER_DAY.isoformat()}
    worker = features_process(psutil.Process(own_service.process.pid))
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        # when the features process is stopped, /readyz says so within about a second
        ready, ready_s = timed(lambda: httpx.get(f"{url}/readyz", timeout=30))
        assert ready.status_code == 503 and ready_s < 3
        assert "lstep-features" in ready.json()["detail"]
        assert ready.headers["retry-after"] == "5"
        # and a request that needs it gets a 503 at its deadline instead of hanging
        scored, scored_s = timed(lambda: httpx.post(f"{url}/score", json=body, timeout=60))
        assert scored.status_code == 503 and scored_s < DEADLINE_S + 5, scored.text
        assert "did not answer within" in scored.json()["error"]
        assert scored.headers["retry-after"] == "5"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    # then, resumed, the service is ready and answers again
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "not ready again within 30 s"
        time.sleep(0.5)
    assert httpx.post(f"{url}/score", json=body, timeout=60).status_code == 200


def test_a_killed_features_process_is_a_503_not_a_500_and_answers_still_flow(
    own_service, workspace
):
    url = own_service.url
    other = {"learners": [{"customer_id": "C0000003"}], "as_of": OTHER_DAY.isoformat()}
    worker = features_process(psutil.Process(own_service.process.pid))
    # when the features process is killed while requests come in
    worker.kill()
    worker.wait(timeout=10)
    responses = [httpx.post(f"{url}/score", json=other, timeout=60) for _ in range(3)]
    # then each request needing it is a 503 (or served by a restarted process), never a 500
    assert {response.status_code for response in responses} <= {200, 503}
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "5"
    # and the day's answers, which need no feature assembly, still flow: for a learner the
    # snapshot holds (one it does not hold needs the features process, and would wait for the
    # restart: a 503 under load, as before)
    snapshot_file = workspace.settings.data_path / "features" / f"as_of={SNAPSHOT_DAY}.parquet"
    held = pd.read_parquet(snapshot_file, columns=["customer_id"])["customer_id"].iloc[-1]
    snapshot = {"learners": [{"customer_id": held}], "as_of": SNAPSHOT_DAY.isoformat()}
    assert httpx.post(f"{url}/score", json=snapshot, timeout=60).status_code in (200, 422)
