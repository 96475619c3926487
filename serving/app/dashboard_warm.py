"""What the dashboard computes before it serves a newly read history: every page unfiltered.

``DashboardCache`` reads a history that moved (a batch day) or, at the service's start, the
first one, on a thread; its ``warm`` hook then computes the unfiltered overview, cohorts, flows,
value and model pages' figures on the new frames, kept with them for good
(``DashboardFrames.keeping``), before the frames are served. So the first viewer after a batch
day, or after a start, pays no page's cold read: at 1M learners those are 9-28 s each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from serving.app.dashboard import DashboardCache, DashboardFrames
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_flow_pages import cohorts_parts, flows_parts
from serving.app.dashboard_model_page import ChampionSource, model_parts
from serving.app.dashboard_pages import overview_parts
from serving.app.dashboard_value_page import value_parts

logger = logging.getLogger("bentoml.lstep")

Warm = Callable[[DashboardCache, DashboardFrames], None]


def warm_pages(champions: Callable[[], ChampionSource] | None = None) -> Warm:
    """A ``DashboardCache`` warm hook computing every page's unfiltered figures.

    Args:
        champions: gives the model page's champion source (looked up when the hook runs, on the
            refresh's thread); None leaves the model page to its first request.
    """

    def warm(cache: DashboardCache, frames: DashboardFrames) -> None:
        for page, compute in page_parts(cache, frames, champions).items():
            try:
                compute()
            except Exception:  # that page fails again, naming why, in the request asking it
                logger.exception("warming the dashboard's %s page failed", page)

    return warm


def page_parts(
    cache: DashboardCache,
    frames: DashboardFrames,
    champions: Callable[[], ChampionSource] | None,
) -> dict[str, Callable[[], object]]:
    """Each page's unfiltered figures on ``frames``, by page, to compute in this order (what
    ``warm_pages`` runs; the benchmark times each)."""
    everyone = DashboardFilters()
    return {
        "overview": lambda: overview_parts(cache, frames, everyone),
        "cohorts": lambda: cohorts_parts(frames, everyone),
        "flows": lambda: flows_parts(cache, frames, everyone, None),
        "value": lambda: value_parts(cache, frames, everyone),
        "model": lambda: _model(cache, frames, champions),
    }


def _model(
    cache: DashboardCache, frames: DashboardFrames, champions: Callable[[], ChampionSource] | None
) -> None:
    view = None if champions is None else champions().current()
    if view is not None:
        model_parts(cache, frames, view)


__all__ = ["Warm", "page_parts", "warm_pages"]
