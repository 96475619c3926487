"""What the dashboard's page tests share: the charts a page embeds, read back as data."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

DASHBOARD_NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The dashboard's clock in the page tests: after every simulated event (the labels' read
refuses later ones)."""
_CHARTS_DATA = re.compile(r'<script id="charts-data" type="application/json">(.*?)</script>', re.S)


def page_charts(html: str) -> dict[str, dict]:
    """The Plotly specs a dashboard page hands to plotly.js, by chart id."""
    data = _CHARTS_DATA.search(html)
    return {chart["id"]: chart for chart in json.loads(data.group(1))}
