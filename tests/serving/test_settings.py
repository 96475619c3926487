"""Settings: locations derive from LSTEP_HOME, each overridable; unknown keys are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import Settings


def test_every_location_lives_under_home_by_default(monkeypatch, tmp_path):
    # given only LSTEP_HOME
    monkeypatch.setenv("LSTEP_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # when settings are read
    settings = Settings()
    # then data, state, MLflow, BentoML and reports are all under it
    assert settings.data_path == tmp_path / "data"
    assert settings.state_database_url == f"sqlite:///{tmp_path.resolve()}/state.db"
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert settings.bentoml_path == tmp_path / "bentoml"
    assert settings.reports_path == tmp_path / "reports"
    assert settings.events_path == tmp_path / "data" / "events.parquet"
    assert settings.customers_path == tmp_path / "data" / "customers.parquet"
    assert settings.champion_uri == "models:/lstep-churn@champion"


def test_env_overrides_one_location_and_mlflow_own_variable_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTEP_HOME", str(tmp_path))
    monkeypatch.setenv("LSTEP_STATE_URL", "postgresql+psycopg://u@127.0.0.1:5432/test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = Settings()
    assert settings.state_database_url == "postgresql+psycopg://u@127.0.0.1:5432/test"
    assert settings.tracking_uri == "http://mlflow:5000"


def test_settings_are_frozen_and_refuse_unknown_keys():
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.home = "elsewhere"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="horizon"):
        Settings(horizon=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="horizon_days"):
        Settings(horizon_days=30)  # type: ignore[call-arg]  # never read: not a setting


def test_tracking_uri_is_pinned_when_settings_are_made(monkeypatch, tmp_path):
    # given settings made while MLFLOW_TRACKING_URI is unset
    monkeypatch.setenv("LSTEP_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings()
    # when a library later rewrites MLflow's variable in this process (mlflow.set_tracking_uri does)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    # then the settings still point at the store under LSTEP_HOME
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_the_clock_runs_unless_lstep_now_freezes_it(monkeypatch):
    from datetime import UTC, datetime

    from serving.settings import utc_now

    monkeypatch.delenv("LSTEP_NOW", raising=False)
    before = datetime.now(UTC)
    assert before <= utc_now() <= datetime.now(UTC)
    monkeypatch.setenv("LSTEP_NOW", "2026-06-15T02:00:00")  # naive: UTC
    assert utc_now() == datetime(2026, 6, 15, 2, tzinfo=UTC)
    monkeypatch.setenv("LSTEP_NOW", "2026-06-15T04:00:00+02:00")
    assert utc_now() == datetime(2026, 6, 15, 2, tzinfo=UTC)
    monkeypatch.setenv("LSTEP_NOW", "yesterday")
    with pytest.raises(ValueError, match="LSTEP_NOW='yesterday' is not an ISO 8601 instant"):
        utc_now()


def test_dispatch_settings_come_from_nested_variables_and_keep_other_defaults(
    monkeypatch, tmp_path
):
    # given the webhook secret, one channel's sink and the SMTP port in the environment
    monkeypatch.setenv("LSTEP_HOME", str(tmp_path))
    monkeypatch.setenv("LSTEP_DISPATCH__WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("LSTEP_DISPATCH__SINKS", '{"push": "webhook"}')
    monkeypatch.setenv("LSTEP_DISPATCH__SMTP_PORT", "2525")
    # when settings are read
    dispatch = Settings().dispatch
    # then they are set, the other channels keep their sinks, and the secret is not shown
    assert dispatch.webhook_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(dispatch)
    assert dispatch.sinks == {
        "email": "email", "push": "webhook", "in_app": "file", "csm_task": "file",
        "webhook": "webhook",
    }  # fmt: skip
    assert dispatch.smtp_port == 2525
    assert Settings().outbox_file == tmp_path / "outbox" / "messages.jsonl"


def test_an_unknown_sink_or_dispatch_key_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("LSTEP_DISPATCH__SINKS", '{"email": "fax"}')
    with pytest.raises(ValidationError, match=r"unknown sink.*fax"):
        Settings()
    monkeypatch.delenv("LSTEP_DISPATCH__SINKS")
    monkeypatch.setenv("LSTEP_DISPATCH__SMTP_PASSWORD_FILE", "x")
    with pytest.raises(ValidationError, match="smtp_password_file"):
        Settings()
