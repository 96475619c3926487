"""The live dashboard beside the API: ``GET /dashboard`` (overview), ``/dashboard/calls``,
``/dashboard/cohorts`` (retention grid), ``/dashboard/flows`` (moves between tags),
``/dashboard/learner/{id}``, ``/dashboard/value``, ``/dashboard/model`` and the plotly.js they
draw with (``/dashboard/static/plotly.min.js``).

Read-only, no token. Each process keeps one ``DashboardCache`` over the workspace's store: pages
aggregate over frames read once per stored history. The app's start-up (its lifespan, which
BentoML runs for a mounted app) starts the first read and the warming of every page on a thread:
a page asked before they are ready is a 503 at once, saying the dashboard is being prepared and
reloading itself (``Retry-After`` and a ``<meta http-equiv=refresh>``), never a long wait.
The learner page's reasons are explained with the champion the service's worker loaded
(``share_champion``: the model ``/explain`` uses, not a second copy), and its override form
posts to the service's own ``POST /override`` with the token the user types: the dashboard
itself writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import html
from collections.abc import AsyncIterator, Callable
from datetime import date
from http import HTTPStatus
from typing import Any

from serving.api.bento import ServiceSettings
from serving.app.dashboard import DashboardCache, DashboardSource, Preparing
from serving.app.dashboard_data import DashboardFilters
from serving.app.dashboard_flow_pages import cohorts_page, flows_page
from serving.app.dashboard_learner import learner_page
from serving.app.dashboard_model_page import ChampionSource, model_page
from serving.app.dashboard_pages import PLOTLY_JS, Links, calls_page, overview_page, plotly_js
from serving.app.dashboard_value_page import value_page
from serving.app.dashboard_warm import warm_pages
from serving.app.dashboard_why import NoReasons, ReasonSource
from serving.core.problems import NotFound, Unavailable
from serving.infra.rulesets import load_rules
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings, utc_now

MOUNT = "/dashboard"
JS_CACHE = "public, max-age=86400"
OVERRIDE_ROUTE = "/override"
"""The service's override endpoint, which the learner page's form posts to."""
PREPARING_RELOAD_S = 5
"""How soon a page answered "preparing" (or "unavailable") reloads itself, in seconds."""
_SERVED: dict[str, Any] = {}
"""The champion this worker's service loaded (``share_champion``), under ``"champion"``."""


def share_champion(champion: Any, answers: Any = None) -> None:
    """Hand the worker's loaded champion (None: rules only) and its day's answers (an
    ``AnswerKeeper``, None: none) to the learner page's reasons."""
    _SERVED["champion"] = champion
    _SERVED["answers"] = answers


def served_row(as_of: date, customer_id: str) -> Any:
    """The learner's row of the service's day's answers (memory-mapped, a binary search), or
    None when the answers are of another day (or not loaded): the snapshot is read then."""
    keeper = _SERVED.get("answers")
    answers = None if keeper is None else keeper.current
    if answers is None or answers.as_of != as_of:
        return None
    row = answers.features_of([customer_id])
    return None if row.empty else row


def served_model(version: str) -> Any:
    """The service's champion's ``ChurnModel`` when it is the version that scored the day.

    Raises:
        NoReasons: no champion, or the day was scored by another version (saying which).
    """
    if "champion" not in _SERVED:
        raise NoReasons("no reasons: the service has not loaded its champion yet")
    champion = _SERVED["champion"]
    if champion is None:
        raise NoReasons("no reasons: no champion (the service runs on the rules alone)")
    if str(champion.version) != version:
        raise NoReasons(
            f"no reasons here: version {version} scored this day and the service's champion is "
            f"version {champion.version}; `lstep explain` explains with version {version}"
        )
    return champion.model


@functools.cache
def served_reasons() -> ReasonSource:
    """The learner page's reasons: the workspace's snapshots and the service's champion."""
    return ReasonSource(Settings().data_path, served_model, rows=served_row)


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
    # A batch day moves the history: viewers keep the previous frames while a thread reads it
    # and computes every page's unfiltered figures.
    return DashboardCache(source, utc_now, background=True, warm=warm_pages(champion_source))


@functools.cache
def champion_source() -> ChampionSource:
    """The process's view of the registry's champion (the workspace's MLflow)."""
    return ChampionSource(Settings())


def dashboard_app(
    cache: Callable[[], DashboardCache] = dashboard_cache,
    reasons: Callable[[], ReasonSource] = served_reasons,
    champions: Callable[[], ChampionSource] = champion_source,
) -> Any:
    """The FastAPI app mounted at ``/dashboard``; ``cache`` gives the pages' cache (the
    workspace's by default), ``reasons`` the learner page's reasons (the service's champion by
    default), ``champions`` the model page's champion.

    The app's start-up ``start``s a background cache (the service's): its first read and the
    pages' warming run on a thread, and pages answer "preparing" until they are done. A cache
    without background (the tests' in-process apps) reads in the first request.
    """
    from fastapi import FastAPI
    from fastapi.responses import Response

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        opened = cache()
        if opened.background:
            opened.start()
        yield

    app = FastAPI(
        title="lstep dashboard", openapi_url=None, docs_url=None, redoc_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    links = Links(MOUNT)

    # No return annotations (see serving.api.pages: BentoML merges this app's OpenAPI).
    @app.get("/", response_class=_html(), response_model=None)
    def overview(
        tier: str | None = None, cohort: str | None = None, tag: str | None = None,
        start: str | None = None, end: str | None = None, behaviour: str | None = None,
    ):  # fmt: skip
        def render() -> str:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, tag=tag, behaviour=behaviour,
                start=_day(start), end=_day(end),
            )  # fmt: skip
            return overview_page(cache(), filters, links)

        return page_response(render)

    @app.get("/calls", response_class=_html(), response_model=None)
    def calls(q: str | None = None, sort: str = "priority", behaviour: str | None = None):
        return page_response(
            lambda: calls_page(cache(), links, search=q, sort=sort, behaviour=behaviour)
        )

    _add_flow_routes(app, cache, links)
    _add_learner_route(app, cache, reasons, links)
    _value_and_model_routes(app, cache, champions, links)

    @app.get(f"/static/{PLOTLY_JS}", response_model=None)
    def script():
        headers = {"Cache-Control": JS_CACHE}
        return Response(_plotly_bytes(), media_type="text/javascript", headers=headers)

    return app


def page_response(render: Callable[[], str]) -> Any:
    """``render()``'s page, or the problem it raised as a one-line page with its status: bad
    input 400, nothing there 404, the dashboard being prepared or its store not answering 503
    (with ``Retry-After``, and a page that reloads itself)."""
    from fastapi.responses import HTMLResponse

    try:
        return HTMLResponse(render())
    except ValueError as error:
        return HTMLResponse(_line(_first_error(error)), status_code=HTTPStatus.BAD_REQUEST)
    except NotFound as error:
        return HTMLResponse(_line(str(error)), status_code=HTTPStatus.NOT_FOUND)
    except Unavailable as error:
        return HTMLResponse(
            unavailable_page(error),
            status_code=HTTPStatus.SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(PREPARING_RELOAD_S)},
        )


def unavailable_page(problem: Unavailable) -> str:
    """A small page saying why the dashboard cannot show the page yet, reloading itself."""
    title = "preparing the dashboard" if isinstance(problem, Preparing) else "dashboard unavailable"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{PREPARING_RELOAD_S}">'
        f"<title>lstep dashboard — {title}</title></head><body>"
        f'<p id="preparing">{html.escape(str(problem))}</p></body></html>'
    )


def _html() -> Any:
    from fastapi.responses import HTMLResponse

    return HTMLResponse


def _line(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _add_learner_route(
    app: Any,
    cache: Callable[[], DashboardCache],
    reasons: Callable[[], ReasonSource],
    links: Links,
) -> None:
    """``/learner/{id}`` on ``app``: one learner's reasons, history, campaigns and overrides
    (read from the store by id: it needs no frames, so it is served while they are prepared)."""

    @app.get("/learner/{customer_id}", response_class=_html(), response_model=None)
    def learner(customer_id: str):
        def render() -> str:
            source = cache().source
            return learner_page(
                source.store, customer_id, links, catalogue=source.ruleset.campaigns,
                reasons=reasons(), override_url=OVERRIDE_ROUTE,
            )  # fmt: skip

        return page_response(render)


def _add_flow_routes(app: Any, cache: Callable[[], DashboardCache], links: Links) -> None:
    """``/cohorts`` (the retention grid) and ``/flows`` (moves between tags) on ``app``."""

    @app.get("/cohorts", response_class=_html(), response_model=None)
    def cohorts(tier: str | None = None, cohort: str | None = None, behaviour: str | None = None):
        def render() -> str:
            filters = DashboardFilters(tier=tier, cohort=cohort, behaviour=behaviour)
            return cohorts_page(cache(), filters, links)

        return page_response(render)

    @app.get("/flows", response_class=_html(), response_model=None)
    def flows(
        start: str | None = None, end: str | None = None, rule: str | None = None,
        tier: str | None = None, cohort: str | None = None, behaviour: str | None = None,
    ):  # fmt: skip
        def render() -> str:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, behaviour=behaviour, start=_day(start), end=_day(end)
            )
            return flows_page(cache(), filters, links, rule=rule)

        return page_response(render)


def _value_and_model_routes(
    app: Any,
    cache: Callable[[], DashboardCache],
    champions: Callable[[], ChampionSource],
    links: Links,
) -> None:
    """``/value`` (the overview's filters, behaviour tag included) and ``/model`` on ``app``."""

    @app.get("/value", response_class=_html(), response_model=None)
    def value(
        tier: str | None = None, cohort: str | None = None, tag: str | None = None,
        start: str | None = None, end: str | None = None, behaviour: str | None = None,
    ):  # fmt: skip
        def render() -> str:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, tag=tag, behaviour=behaviour,
                start=_day(start), end=_day(end),
            )  # fmt: skip
            return value_page(cache(), filters, links)

        return page_response(render)

    @app.get("/model", response_class=_html(), response_model=None)
    def model():
        return page_response(lambda: model_page(cache(), champions(), links))


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


__all__ = [
    "MOUNT",
    "OVERRIDE_ROUTE",
    "PREPARING_RELOAD_S",
    "champion_source",
    "dashboard_app",
    "dashboard_cache",
    "page_response",
    "served_model",
    "served_reasons",
    "served_row",
    "share_champion",
    "unavailable_page",
]
