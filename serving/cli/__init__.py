"""The ``lstep`` command: the one composition root that knows every package.

One module per command group (``data``, ``model``, ``daily``, ``serve``, ``demo``), each command
a thin adapter that builds a job or calls one app function; ``render`` draws every result.
Heavy libraries (MLflow, LightGBM, BentoML) are imported inside the commands that need them, so
``lstep --help`` and the data commands start fast.
"""

from serving.cli.main import app

__all__ = ["app"]
