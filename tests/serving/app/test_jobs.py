"""Typed jobs: frozen, unknown fields refused, read from YAML; a job runs a day from settings."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import date

import pandas as pd
import pytest
from pydantic import ValidationError

from serving.app import day_models
from serving.app.batch import BatchContext
from serving.app.jobs import BackfillJob, BatchJob, ReportJob, Runtime, load_job
from serving.core.problems import Invalid, NoChampionError, NotFound, Unavailable
from serving.settings import Settings
from tests.serving.fixtures import FIRST_DAY, NOW
from training.jobs import TrainJob


def test_jobs_are_frozen_and_refuse_unknown_fields():
    job = BatchJob(as_of=FIRST_DAY)
    with pytest.raises(ValidationError):
        job.dry_run = True  # type: ignore[misc]
    with pytest.raises(ValidationError, match="dryrun"):
        BatchJob(as_of=FIRST_DAY, dryrun=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="trails"):
        TrainJob(events="e.parquet", customers="c.parquet", trails=3)  # type: ignore[call-arg]


def test_yaml_file_is_read_and_given_options_win(tmp_path):
    # given a job file and an option given on the command line for the same field
    config = tmp_path / "job.yaml"
    config.write_text("start: 2026-05-01\nend: 2026-05-07\nrules_only: true\ntop: 5\n")
    # when loaded with the option
    job = load_job(BackfillJob, config, {"top": 9})
    # then the file fills what the options leave unset
    assert (job.start, job.end, job.rules_only, job.top) == (
        date(2026, 5, 1),
        date(2026, 5, 7),
        True,
        9,
    )
    # and a job class reads its own file the same way
    other = tmp_path / "day.yaml"
    other.write_text("dry_run: true\n")
    day = BatchJob.from_yaml(other, as_of=FIRST_DAY)
    assert day.dry_run and day.as_of == FIRST_DAY


def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(Invalid, match=r"bad\.yaml: expected a mapping"):
        load_job(BatchJob, config)


def test_yaml_with_an_unknown_field_names_the_file_and_the_field(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("as_of: 2026-05-10\ndryrun: true\n", encoding="utf-8")
    with pytest.raises(Invalid, match=r"typo\.yaml: .*dryrun"):
        load_job(BatchJob, config)


def test_a_batch_job_runs_a_day_with_the_registered_champion(workspace_settings, champion):
    # when a dry batch day runs from the settings alone
    outcome = BatchJob(as_of=FIRST_DAY, dry_run=True).run(Runtime(workspace_settings, NOW))
    # then the champion of the registry scored it and nothing was written
    (result,) = outcome.results
    assert result.model_version == champion.version and result.dry_run
    assert outcome.report is None


def test_rules_only_leaves_the_champion_out(workspace_settings):
    outcome = BatchJob(as_of=FIRST_DAY, dry_run=True, rules_only=True).run(
        Runtime(workspace_settings, NOW)
    )
    assert outcome.results[0].rules_only and outcome.results[0].model_version is None


def test_without_a_champion_a_job_stops_with_the_way_out(workspace_settings, tmp_path):
    # given settings whose MLflow store has no model
    empty = workspace_settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'empty.db'}"}
    )
    # when a batch day runs, then the error says what to do and nothing was written
    with pytest.raises(NoChampionError, match="run `lstep train` first, or pass --rules-only"):
        BatchJob(as_of=FIRST_DAY).run(Runtime(empty, NOW))
    assert Runtime(empty, NOW).open_store().runs().empty


def test_the_champion_loads_beside_the_days_first_stages(workspace_settings, monkeypatch):
    # given a champion load that can end only once the day has built its features
    import serving.app.jobs as jobs

    features_begun = threading.Event()
    real_load = jobs.load_champion

    def load_after_features(*args, **kwargs):
        assert features_begun.wait(timeout=30), "the day waited for the champion before features"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(jobs, "load_champion", load_after_features)
    progress = _StageStarts(on_features=features_begun.set)

    # when a dry batch day runs from the settings
    outcome = BatchJob(as_of=FIRST_DAY, dry_run=True).run(
        Runtime(workspace_settings, NOW, progress=progress)
    )

    # then the learners and features came first, and the champion still scored the day
    assert progress.names[: progress.names.index("score")] == ["inputs", "learners", "features"]
    assert outcome.results[0].model_version is not None and not outcome.results[0].rules_only


def test_a_day_waits_for_its_models_no_longer_than_its_deadline(store, monkeypatch):
    # given models whose load never ends, and a short deadline
    monkeypatch.setattr(day_models, "MODELS_DEADLINE_S", 0.05)
    context = BatchContext(store=store, models=Future(), run_id="r", now=NOW)

    # when the day needs them, then it fails naming the wait, not hangs
    with pytest.raises(Unavailable, match="did not load within"):
        _ = context.champion


class _StageStarts:
    """Progress that records the stages in the order they start."""

    def __init__(self, on_features) -> None:
        self.names: list[str] = []
        self.on_features = on_features

    @contextmanager
    def stage(self, as_of, name):
        self.names.append(name)
        if name == "features":
            self.on_features()
        yield

    def days(self, total, what="backfill days"):
        return lambda day: None


def test_a_report_job_needs_a_completed_day_and_the_event_store(workspace_settings, tmp_path):
    with pytest.raises(NotFound, match="no completed batch run yet"):
        ReportJob().run(Runtime(workspace_settings, NOW))
    elsewhere = Settings(home=tmp_path / "h2", data_dir=tmp_path / "nothing")
    with pytest.raises(NotFound, match=r"events\.parquet does not exist"):
        ReportJob(as_of=FIRST_DAY).run(Runtime(elsewhere, NOW))


def test_the_report_reads_proved_files_lazily_and_validates_the_rest(
    simulated_log, monkeypatch, tmp_path
):
    # given the simulated log's clean parquet files, and a validation that fails if it runs
    import serving.app.batch_inputs as batch_inputs
    from features.validation_report import InputError
    from serving.app.jobs import _report_inputs
    from serving.app.kpi_inputs import StoredEvents

    log = simulated_log

    def whole_validation(*_args, **_kwargs):
        raise AssertionError("the whole log was validated")

    with monkeypatch.context() as patched:
        patched.setattr(batch_inputs, "load_valid_inputs", whole_validation)
        # when the report's inputs are read, then the log stays a file and the customers
        # are the validated ones
        events, customers = _report_inputs(log.events_path, log.customers_path, NOW)
    assert isinstance(events, StoredEvents) and events.path == log.events_path
    pd.testing.assert_frame_equal(customers, log.customers)
    # and a log the proof refuses is validated whole, failing with the validation's report
    bad = log.events.assign(event_type="teleported").head(3)
    bad.to_parquet(tmp_path / "events.parquet")
    with pytest.raises(InputError, match="teleported"):
        _report_inputs(tmp_path / "events.parquet", log.customers_path, NOW)
