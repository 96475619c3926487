"""The champion: the registered model version holding the alias ``champion``, loaded once.

Serving loads ``models:/lstep-churn@champion`` (never a run id). Without a champion,
``champion=None`` means rules-only: ``require_champion`` is the one place that decides whether
that is allowed (``--rules-only``, ``LSTEP_RULES_ONLY``) or a ``NoChampionError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from models.churn import ChurnModel
from models.compiled import compile_booster, default_cache_dir
from models.pyfunc import ChurnPyfunc, load_pyfunc, mlflow_uris
from serving.core.problems import NoChampionError
from serving.settings import CHAMPION_ALIAS, DEFAULT_MODEL_NAME, champion_uri

_MISSING_ALIAS_CODES = frozenset(
    {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
)
_LOAD_ATTEMPTS = 3
LoadedT = TypeVar("LoadedT")


def no_champion_message(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The one-line error a user sees when scoring needs a champion and there is none."""
    return (
        f"no champion registered under {champion_uri(model_name)}: run `lstep train` first, "
        "or pass --rules-only"
    )


@dataclass(frozen=True)
class Champion:
    """The loaded champion model.

    Attributes:
        pyfunc: the MLflow pyfunc model, as every consumer (batch, BentoML, Spark) loads it.
        model: the ``ChurnModel`` inside it (for TreeSHAP explanations).
        version: the registered model version the alias pointed at when loaded.
        uri: the alias URI it was loaded from (``models:/lstep-churn@champion``).
    """

    pyfunc: mlflow.pyfunc.PyFuncModel
    model: ChurnModel
    version: str
    uri: str


def champion_version(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> str | None:
    """The registered version the ``champion`` alias points at, or None when there is none."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return _champion_version(client, model_name)


def _champion_version(client: mlflow.MlflowClient, model_name: str) -> str | None:
    """The version the alias points at, or None when the model or the alias does not exist."""
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as error:
        if error.error_code in _MISSING_ALIAS_CODES:
            return None
        raise


def load_champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> Champion | None:
    """Load the model version holding the ``champion`` alias, or None when there is none.

    The alias is resolved before and after loading: a promotion in between (the alias moved)
    loads again, so ``version`` is always the version whose files were loaded. Its trees are
    compiled (``models.compiled``, cached under ``LSTEP_COMPILED_DIR`` or the user's cache) for
    the large batches it predicts; without a C compiler LightGBM predicts them (warned).

    Args:
        tracking_uri: MLflow tracking and registry URI (``Settings.tracking_uri``).
        model_name: the registered model name.

    Raises:
        RuntimeError: when the alias keeps moving while loading.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    uri = champion_uri(model_name)
    for _ in range(_LOAD_ATTEMPTS):
        version = _champion_version(client, model_name)
        if version is None:
            return None
        with mlflow_uris(tracking_uri):
            pyfunc = load_pyfunc(uri)
        if _champion_version(client, model_name) == version:
            model = unwrap_churn_model(pyfunc, uri)
            compile_booster(model.booster, default_cache_dir())  # large batches predict faster
            return Champion(pyfunc=pyfunc, model=model, version=version, uri=uri)
    raise RuntimeError(f"{uri}: the alias moved {_LOAD_ATTEMPTS} times while loading; try again")


def unwrap_churn_model(pyfunc: mlflow.pyfunc.PyFuncModel, uri: str) -> ChurnModel:
    """The ``ChurnModel`` a loaded ``ChurnPyfunc`` holds (for TreeSHAP explanations).

    Raises:
        TypeError: when the pyfunc is not an lstep ``ChurnPyfunc`` (naming ``uri``).
    """
    wrapper = pyfunc.unwrap_python_model()
    model = wrapper.churn_model if isinstance(wrapper, ChurnPyfunc) else None
    if not isinstance(model, ChurnModel):
        raise TypeError(
            f"{uri}: expected an lstep ChurnPyfunc model, got {type(wrapper).__name__}; "
            "register models with `lstep train`"
        )
    return model


def require_champion(
    champion: LoadedT | None,
    *,
    rules_only: bool,
    model_name: str = DEFAULT_MODEL_NAME,
    hint: str = "",
) -> LoadedT | None:
    """The champion to score with: None in rules-only mode, else ``champion``, which must exist.

    Args:
        champion: what was loaded (None: no version holds the alias).
        rules_only: the user asked to decide on the rules alone (a champion is then ignored).
        model_name: the registered model name, for the message.
        hint: how to fix it where this caller runs (e.g. the service's variable).

    Raises:
        NoChampionError: no champion and not rules-only.
    """
    if rules_only:
        return None
    if champion is None:
        raise NoChampionError(no_champion_message(model_name) + hint)
    return champion


__all__ = [
    "CHAMPION_ALIAS",
    "DEFAULT_MODEL_NAME",
    "Champion",
    "NoChampionError",
    "champion_uri",
    "champion_version",
    "load_champion",
    "no_champion_message",
    "require_champion",
    "unwrap_churn_model",
]
