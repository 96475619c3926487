"""Debian's headless Chromium for the browser tests, and a local server for a web app.

Never a downloaded browser: ``.ci/run`` installs Debian's ``chromium`` with apt when it is missing.
Outside CI a test skips with a message naming what is missing; with CI=true a missing browser or
driver is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.serving.dashboard_helpers import PREPARED_WITHIN_S

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOST = "127.0.0.1"


def require_browser() -> None:
    """Skip (fail under CI=true) when Chromium or Playwright is missing."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium not installed at {CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright python package is not installed (dev dependency)")
    if not missing:
        return
    message = "; ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@contextmanager
def offline_page(width: int = 1200, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page that may reach 127.0.0.1 only; yields it and the list of the URLs of
    other hosts it asked for (each aborted), which a test expects to stay empty.

    Skips (fails under CI=true) without Chromium or Playwright, as ``require_browser``.
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    left: list[str] = []

    def local_only(route: Any) -> None:
        if urlsplit(route.request.url).hostname == LOCAL_HOST:
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", local_only)
            yield page, left
        finally:
            browser.close()


@contextmanager
def serving(app: Any, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOCAL_HOST, 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start on {LOCAL_HOST}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{LOCAL_HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        listener.close()


def open_prepared(page, url: str) -> None:
    """Open ``url`` in a Playwright page, reloading while the dashboard says it is preparing."""
    deadline = time.monotonic() + PREPARED_WITHIN_S
    page.goto(url, wait_until="load")
    while page.locator("#preparing").count() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        page.goto(url, wait_until="load")
