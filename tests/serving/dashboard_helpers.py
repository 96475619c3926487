"""What the dashboard's page tests share: the charts a page embeds, read back as data, and the
pages of a served dashboard once it has prepared them."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import httpx

DASHBOARD_NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The dashboard's clock in the page tests: after every simulated event (the labels' read
refuses later ones)."""
_CHARTS_DATA = re.compile(r'<script id="charts-data" type="application/json">(.*?)</script>', re.S)


def page_charts(html: str) -> dict[str, dict]:
    """The Plotly specs a dashboard page hands to plotly.js, by chart id."""
    data = _CHARTS_DATA.search(html)
    return {chart["id"]: chart for chart in json.loads(data.group(1))}


PREPARED_WITHIN_S = 600
"""How long a served dashboard may take to read and warm its pages after the service starts
(each worker prepares its own; on the tests' workspace, under a loaded machine, minutes)."""


def get_prepared(url: str, *, params: dict | None = None, timeout: float = 120) -> httpx.Response:
    """GET a page of a served dashboard as a browser would see it once prepared: a "preparing"
    answer (503, which reloads itself) is asked again, as the page's own refresh does."""
    deadline = time.monotonic() + PREPARED_WITHIN_S
    while True:
        response = httpx.get(url, params=params, timeout=timeout, follow_redirects=True)
        preparing = response.status_code == 503 and 'id="preparing"' in response.text
        if not preparing or time.monotonic() > deadline:
            return response
        time.sleep(1.0)
