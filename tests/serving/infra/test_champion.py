"""Loading the champion by its alias (never a run id), and when there is none."""

from __future__ import annotations

import os
import shutil

import mlflow
import pytest

from serving.core.problems import NoChampionError
from serving.infra.champion import (
    champion_uri,
    load_champion,
    no_champion_message,
    require_champion,
)
from serving.settings import Settings


def test_load_champion_returns_none_when_nothing_is_registered(tmp_path):
    # Given an MLflow store with no registered model
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # When the champion is loaded, Then there is none (and no exception)
    assert load_champion(tracking_uri) is None


def test_load_champion_returns_none_for_an_unknown_model_name(champion_tracking_uri):
    # Given a store whose only model is lstep-churn
    # When another model name is asked for, Then there is no champion
    assert load_champion(champion_tracking_uri, model_name="someone-else") is None


def test_load_champion_loads_the_version_the_alias_points_at(champion_tracking_uri):
    # Given the registry's view of the alias
    client = mlflow.MlflowClient(
        tracking_uri=champion_tracking_uri, registry_uri=champion_tracking_uri
    )
    expected = client.get_model_version_by_alias("lstep-churn", "champion").version
    # When the champion is loaded
    champion = load_champion(champion_tracking_uri)
    # Then it is that version, loaded by alias, and it holds the ChurnModel
    assert champion.version == str(expected)
    assert champion.uri == champion_uri() == "models:/lstep-churn@champion"
    assert champion.model.feature_names


def test_load_champion_leaves_the_process_mlflow_uris_alone(champion_tracking_uri, tmp_path):
    # Given a process pointed at another tracking store
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(other)
    try:
        # When the champion is loaded from the champion store
        load_champion(champion_tracking_uri)
        # Then the process still points at its own store
        assert mlflow.get_tracking_uri() == other
    finally:
        mlflow.set_tracking_uri(None)


def test_loading_the_champion_leaves_the_workspace_settings_pointing_at_the_workspace(
    champion_tracking_uri, tmp_path, monkeypatch
):
    # Given a process without MLFLOW_TRACKING_URI (as `lstep demo` runs)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("LSTEP_HOME", str(tmp_path))
    # When the champion is loaded (train -> batch in one process does the same)
    load_champion(champion_tracking_uri)
    # Then MLflow's variables are unset again, and new settings still name the workspace's store
    # (they used to name MLflow's default store in the working directory: "no champion")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert Settings().tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"


def test_no_champion_message_names_the_alias_and_both_ways_out():
    # When the message is built, Then it names the alias URI, `lstep train` and --rules-only
    message = no_champion_message()
    assert "models:/lstep-churn@champion" in message
    assert "lstep train" in message
    assert "--rules-only" in message


def test_champion_loads_in_a_copy_of_the_store(champion_tracking_uri, tmp_path):
    # Given a copy of the registry database (artifacts stay where they were logged)
    source = champion_tracking_uri.removeprefix("sqlite:///")
    copy = tmp_path / "copy.db"
    shutil.copyfile(source, copy)
    # When the champion is loaded from the copy
    champion = load_champion(f"sqlite:///{copy}")
    # Then it is found by its alias there too
    assert champion is not None


def test_require_champion_passes_a_champion_and_drops_it_in_rules_only_mode(champion):
    # Given a loaded champion
    # When it is required normally, then it is used; in rules-only mode, it is left out
    assert require_champion(champion, rules_only=False) is champion
    assert require_champion(champion, rules_only=True) is None
    assert require_champion(None, rules_only=True) is None


def test_require_champion_without_one_names_the_way_out(champion):
    # When there is no champion and rules-only was not asked for, then the error says what to do
    with pytest.raises(
        NoChampionError, match=r"run `lstep train` first.*LSTEP_RULES_ONLY"
    ) as raised:
        require_champion(None, rules_only=False, hint=" (or set LSTEP_RULES_ONLY=true)")
    assert raised.value.kind == "no_champion"
