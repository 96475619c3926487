"""The live dashboard beside the API: ``GET /dashboard`` (overview), ``/dashboard/calls``,
``/dashboard/learner/{id}``, ``/dashboard/value``, ``/dashboard/model`` and the plotly.js they
draw with (``/dashboard/static/plotly.min.js``).

Read-only, no token. Each process keeps one ``DashboardCache`` (opened on the first request) over
the workspace's store: pages aggregate over frames read once per stored history.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from http import HTTPStatus
from typing import Any

from serving.api.bento import ServiceSettings
from serving.app.dashboard import DashboardCache, DashboardSource
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_model_page import ChampionSource, model_page
from serving.app.dashboard_pages import (
    PLOTLY_JS,
    Links,
    calls_page,
    learner_page,
    overview_page,
    plotly_js,
)
from serving.app.dashboard_value_page import value_page
from serving.core.problems import NotFound
from serving.infra.rulesets import load_rules
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings, utc_now

MOUNT = "/dashboard"
JS_CACHE = "public, max-age=86400"


@functools.cache
def dashboard_cache() -> DashboardCache:
    """The process's cache over the workspace's store (opened once, on first use)."""
    settings = Settings()
    source = DashboardSource(
        store=open_workspace_store(settings, utc_now()),
        customers_path=settings.customers_path,
        events_path=settings.events_path,
        data_dir=settings.data_path,
        ruleset=load_rules(ServiceSettings().rules_dir),
    )
    return DashboardCache(source, utc_now)


@functools.cache
def champion_source() -> ChampionSource:
    """The process's view of the registry's champion (the workspace's MLflow)."""
    return ChampionSource(Settings())


def dashboard_app(
    cache: Callable[[], DashboardCache] = dashboard_cache,
    champions: Callable[[], ChampionSource] = champion_source,
) -> Any:
    """The FastAPI app mounted at ``/dashboard``; ``cache`` gives the pages' cache (the
    workspace's by default, opened on the first request), ``champions`` the model page's
    champion."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="lstep dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    links = Links(MOUNT)

    def problem(error: Exception, status: HTTPStatus) -> Any:
        return HTMLResponse(f"<p>{_escape(str(error))}</p>", status_code=status)

    # No return annotations (see serving.api.pages: BentoML merges this app's OpenAPI).
    @app.get("/", response_class=HTMLResponse, response_model=None)
    def overview(
        tier: str | None = None, cohort: str | None = None, tag: str | None = None,
        start: str | None = None, end: str | None = None,
    ):  # fmt: skip
        try:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, tag=tag, start=_day(start), end=_day(end)
            )
            return HTMLResponse(overview_page(cache(), filters, links))
        except ValueError as error:
            return problem(_first_error(error), HTTPStatus.BAD_REQUEST)
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)

    @app.get("/calls", response_class=HTMLResponse, response_model=None)
    def calls(q: str | None = None, sort: str = "priority"):
        try:
            return HTMLResponse(calls_page(cache(), links, search=q, sort=sort))
        except ValueError as error:
            return problem(error, HTTPStatus.BAD_REQUEST)
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)

    @app.get("/learner/{customer_id}", response_class=HTMLResponse, response_model=None)
    def learner(customer_id: str):
        try:
            return HTMLResponse(learner_page(cache().source.store, customer_id, links))
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)

    _value_and_model_routes(app, cache, champions, links)

    @app.get(f"/static/{PLOTLY_JS}", response_model=None)
    def script():
        headers = {"Cache-Control": JS_CACHE}
        return Response(_plotly_bytes(), media_type="text/javascript", headers=headers)

    return app


def _value_and_model_routes(
    app: Any,
    cache: Callable[[], DashboardCache],
    champions: Callable[[], ChampionSource],
    links: Links,
) -> None:
    """``/value`` (the overview's filters) and ``/model`` on ``app``."""
    from fastapi.responses import HTMLResponse

    def respond(render: Callable[[], str]) -> Any:
        try:
            return HTMLResponse(render())
        except ValueError as error:
            text = _escape(_first_error(error))
            return HTMLResponse(f"<p>{text}</p>", status_code=HTTPStatus.BAD_REQUEST)
        except NotFound as error:
            return HTMLResponse(f"<p>{_escape(str(error))}</p>", status_code=HTTPStatus.NOT_FOUND)

    @app.get("/value", response_class=HTMLResponse, response_model=None)
    def value(
        tier: str | None = None, cohort: str | None = None, tag: str | None = None,
        start: str | None = None, end: str | None = None,
    ):  # fmt: skip
        def render() -> str:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, tag=tag, start=_day(start), end=_day(end)
            )
            return value_page(cache(), filters, links)

        return respond(render)

    @app.get("/model", response_class=HTMLResponse, response_model=None)
    def model():
        return respond(lambda: model_page(cache(), champions(), links))


@functools.cache
def _plotly_bytes() -> bytes:
    return plotly_js()


def _day(value: str | None) -> date | None:
    """A query's day (``YYYY-MM-DD``); blank is none.

    Raises:
        ValueError: not a day (naming the value).
    """
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a day YYYY-MM-DD") from None


def _first_error(error: ValueError) -> str:
    """A pydantic error's messages without its URLs, or the error's text."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
    return str(error)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


__all__ = ["MOUNT", "champion_source", "dashboard_app", "dashboard_cache"]
