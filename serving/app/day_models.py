"""What a batch run scores and decides with (``Models``), possibly still loading on a thread.

``serving.app.jobs.load_models_beside`` starts the load; ``BatchContext.champion`` and
``ruleset`` wait for it (``loaded``) where the day first needs them, so that the day's first
stages (the inputs' check, the window: DuckDB's) run while the models load.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from rules import RuleSet
from serving.core.assess import ModelHandle
from serving.core.problems import Unavailable


@dataclass(frozen=True)
class Models:
    """What a run scores and decides with: the champion (None: rules only) and the rules
    (which resolve their operating points from it)."""

    champion: ModelHandle | None
    ruleset: RuleSet


MODELS_DEADLINE_S = 300.0
"""How long a day waits for its models to load on their thread (~1 s, most of it MLflow's
imports); past it the day fails naming the wait, not hangs."""


def loaded(models: Models | Future[Models]) -> Models:
    """``models``, once loaded.

    Raises:
        Unavailable: they did not load within ``MODELS_DEADLINE_S``.
        Whatever loading them raised (``NoChampionError``, a rules file's error).
    """
    if isinstance(models, Models):
        return models
    try:
        return models.result(timeout=MODELS_DEADLINE_S)
    except TimeoutError:
        raise Unavailable(
            f"the champion and the rules did not load within {MODELS_DEADLINE_S:.0f} s"
        ) from None


__all__ = ["MODELS_DEADLINE_S", "Models", "loaded"]
