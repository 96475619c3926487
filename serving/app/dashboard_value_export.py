"""The value and model-health pages as static files beside ``write_dashboard``'s (``lstep
dashboard --out DIR``): ``value.html`` (everyone: a file has no server to filter with) and
``model.html``."""

from __future__ import annotations

from pathlib import Path

from serving.app.dashboard import DashboardCache
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_model_page import ChampionSource, model_page
from serving.app.dashboard_pages import Links
from serving.app.dashboard_value_page import value_page


def write_value_and_model(
    cache: DashboardCache, champions: ChampionSource, out: Path
) -> list[Path]:
    """Write ``value.html`` and ``model.html`` into ``out`` (linked as the other static pages).

    Returns:
        The files written.

    Raises:
        NotFound: no completed batch day yet.
    """
    links = Links(None)
    pages = {
        links.value(): value_page(cache, DashboardFilters(), links),
        links.model(): model_page(cache, champions, links),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, html in pages.items():
        (out / name).write_text(html, encoding="utf-8")
    return [out / name for name in pages]


__all__ = ["write_value_and_model"]
