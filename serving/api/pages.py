"""Read-only pages beside the API: ``GET /pages/report`` serves the latest HTML report."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from serving.app.report import latest_report_html
from serving.settings import Settings

MISSING_REPORT = (
    "<p>No report yet: run <code>lstep report</code> or <code>lstep score --report</code>.</p>"
)


def pages_app() -> Any:
    """The FastAPI app mounted at ``/pages``."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    pages = FastAPI(title="lstep pages", openapi_url=None, docs_url=None, redoc_url=None)

    # No return annotation for FastAPI to resolve: this module's annotations are strings, and
    # an unresolvable one breaks the OpenAPI document BentoML merges the mounted app into.
    @pages.get("/report", response_class=HTMLResponse, response_model=None)
    def latest_report():
        html = latest_report_html(Settings().reports_path)
        if html is None:
            return HTMLResponse(MISSING_REPORT, status_code=HTTPStatus.NOT_FOUND)
        return HTMLResponse(html)

    return pages


__all__ = ["pages_app"]
