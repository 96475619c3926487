"""The live dashboard beside the API: ``GET /dashboard`` (overview), ``/dashboard/calls``,
``/dashboard/cohorts`` (retention grid), ``/dashboard/flows`` (moves between tags),
``/dashboard/learner/{id}``, ``/dashboard/value``, ``/dashboard/model`` and the plotly.js they
draw with (``/dashboard/static/plotly.min.js``).

Read-only, no token. Each process keeps one ``DashboardCache`` (opened on the first request) over
the workspace's store: pages aggregate over frames read once per stored history. The learner
page's reasons are explained with the champion the service's worker loaded (``share_champion``:
the model ``/explain`` uses, not a second copy), and its override form posts to the service's
own ``POST /override`` with the token the user types: the dashboard itself writes nothing.
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
from serving.app.dashboard_flow_pages import cohorts_page, flows_page
from serving.app.dashboard_learner import learner_page
from serving.app.dashboard_model_page import ChampionSource, model_page
from serving.app.dashboard_pages import (
    PLOTLY_JS,
    Links,
    calls_page,
    overview_page,
    plotly_js,
    warm_overview,
)
from serving.app.dashboard_value_page import value_page
from serving.app.dashboard_why import NoReasons, ReasonSource
from serving.core.problems import NotFound
from serving.infra.rulesets import load_rules
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings, utc_now

MOUNT = "/dashboard"
JS_CACHE = "public, max-age=86400"
OVERRIDE_ROUTE = "/override"
"""The service's override endpoint, which the learner page's form posts to."""
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
    # A batch day moves the history: viewers keep the previous frames while a thread reads it.
    return DashboardCache(source, utc_now, background=True, warm=warm_overview)


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
    workspace's by default, opened on the first request), ``reasons`` the learner page's
    reasons (the service's champion by default), ``champions`` the model page's champion."""
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
        start: str | None = None, end: str | None = None, behaviour: str | None = None,
    ):  # fmt: skip
        try:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, tag=tag, behaviour=behaviour,
                start=_day(start), end=_day(end),
            )  # fmt: skip
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

    _add_flow_routes(app, cache, links, problem)
    _add_learner_route(app, cache, reasons, links, problem)

    _value_and_model_routes(app, cache, champions, links)

    @app.get(f"/static/{PLOTLY_JS}", response_model=None)
    def script():
        headers = {"Cache-Control": JS_CACHE}
        return Response(_plotly_bytes(), media_type="text/javascript", headers=headers)

    return app


def _add_learner_route(
    app: Any,
    cache: Callable[[], DashboardCache],
    reasons: Callable[[], ReasonSource],
    links: Links,
    problem: Callable[..., Any],
) -> None:
    """``/learner/{id}`` on ``app``: one learner's reasons, history, campaigns and overrides."""
    from fastapi.responses import HTMLResponse

    @app.get("/learner/{customer_id}", response_class=HTMLResponse, response_model=None)
    def learner(customer_id: str):
        try:
            source = cache().source
            page = learner_page(
                source.store, customer_id, links, catalogue=source.ruleset.campaigns,
                reasons=reasons(), override_url=OVERRIDE_ROUTE,
            )  # fmt: skip
            return HTMLResponse(page)
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)


def _add_flow_routes(
    app: Any, cache: Callable[[], DashboardCache], links: Links, problem: Callable[..., Any]
) -> None:
    """``/cohorts`` (the retention grid) and ``/flows`` (moves between tags) on ``app``."""
    from fastapi.responses import HTMLResponse

    @app.get("/cohorts", response_class=HTMLResponse, response_model=None)
    def cohorts(tier: str | None = None, cohort: str | None = None, behaviour: str | None = None):
        try:
            filters = DashboardFilters(tier=tier, cohort=cohort, behaviour=behaviour)
            return HTMLResponse(cohorts_page(cache(), filters, links))
        except ValueError as error:
            return problem(_first_error(error), HTTPStatus.BAD_REQUEST)
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)

    @app.get("/flows", response_class=HTMLResponse, response_model=None)
    def flows(
        start: str | None = None, end: str | None = None, rule: str | None = None,
        tier: str | None = None, cohort: str | None = None, behaviour: str | None = None,
    ):  # fmt: skip
        try:
            filters = DashboardFilters(
                tier=tier, cohort=cohort, behaviour=behaviour, start=_day(start), end=_day(end)
            )
            return HTMLResponse(flows_page(cache(), filters, links, rule=rule))
        except ValueError as error:
            return problem(_first_error(error), HTTPStatus.BAD_REQUEST)
        except NotFound as error:
            return problem(error, HTTPStatus.NOT_FOUND)


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


__all__ = [
    "MOUNT",
    "OVERRIDE_ROUTE",
    "champion_source",
    "dashboard_app",
    "dashboard_cache",
    "served_model",
    "served_reasons",
    "served_row",
    "share_champion",
]
