"""``lstep serve``: import the champion into the BentoML store and start the HTTP service."""

from __future__ import annotations

from typing import Annotated

import typer

from serving.cli.common import console, friendly_errors, settings


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command()(serve)


@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 3000,
) -> None:
    """Import the champion into the BentoML store and start the HTTP service (/score, /explain...).

    Set LSTEP_API_TOKEN to enable /override and `apply: true`; LSTEP_RULES_ONLY=true serves the
    rules without a model.
    """
    from serving.api.bento import ServiceSettings
    from serving.api.bento import serve as start_service

    if (warning := ServiceSettings().token_warning()) is not None:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"starting the lstep service on http://{host}:{port} (Ctrl-C stops it)")
    start_service(settings(), host=host, port=port)
