"""The `lstep` command line: the data commands end to end, exit codes and readable errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app

runner = CliRunner()


def _digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """A small simulated population, made once through the CLI."""
    out = tmp_path_factory.mktemp("sim") / "pop"
    result = runner.invoke(
        app, ["simulate", "--customers", "300", "--days", "100", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_simulate_twice_gives_byte_identical_files(tmp_path):
    # given the same arguments twice
    args = ["simulate", "--customers", "2000", "--days", "120", "--seed", "1", "--out"]
    # when both runs finish
    first = runner.invoke(app, [*args, str(tmp_path / "a")])
    second = runner.invoke(app, [*args, str(tmp_path / "b")])
    # then every file is the same, byte for byte
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    digests = _digest(tmp_path / "a")
    assert {"events.parquet", "customers.parquet", "truth.parquet"} <= set(digests)
    assert digests == _digest(tmp_path / "b")


def test_validate_passes_on_simulated_data(population):
    result = runner.invoke(
        app,
        ["validate", "--events", str(population / "events.parquet"),
         "--customers", str(population / "customers.parquet")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_validate_fails_naming_file_column_and_count(population, tmp_path):
    # given events with two negative durations
    events = pd.read_parquet(population / "events.parquet")
    sessions = events.index[events["event_type"] == "session"][:2]
    events.loc[sessions, "duration_s"] = -5.0
    bad = tmp_path / "bad_events.parquet"
    events.to_parquet(bad)
    # when validated
    customers = str(population / "customers.parquet")
    result = runner.invoke(app, ["validate", "--events", str(bad), "--customers", customers])
    # then exit 1 and the message names the file, the column and the row count
    assert result.exit_code == 1
    assert "bad_events.parquet" in result.output
    assert "duration_s" in result.output
    assert "2 rows" in result.output


def test_features_and_labels_commands_write_matching_frames(population, tmp_path):
    # given the simulated population
    inputs = ["--events", str(population / "events.parquet"),
              "--customers", str(population / "customers.parquet")]  # fmt: skip
    # when features and labels are built at the same dates
    features = runner.invoke(
        app, ["features", *inputs, "--as-of", "2026-03-01", "--as-of", "2026-03-08",
              "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    labels = runner.invoke(
        app, ["labels", *inputs, "--spine", str(tmp_path / "f.parquet"),
              "--out", str(tmp_path / "y.parquet")],
    )  # fmt: skip
    # then both succeed and the labels cover exactly the feature rows (windows complete)
    assert features.exit_code == 0, features.output
    assert labels.exit_code == 0, labels.output
    frame = pd.read_parquet(tmp_path / "f.parquet")
    churn = pd.read_parquet(tmp_path / "y.parquet")
    assert set(frame["as_of"].dt.date.astype(str)) == {"2026-03-01", "2026-03-08"}
    assert len(churn) == len(frame)
    assert churn["churned"].isin([0, 1]).all()


def test_features_requires_exactly_one_way_to_say_where(population, tmp_path):
    result = runner.invoke(
        app,
        ["features", "--events", str(population / "events.parquet"),
         "--customers", str(population / "customers.parquet"),
         "--as-of", "2026-03-01", "--every-days", "7", "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "exactly one of --as-of, --every-days, --spine" in result.output


def test_missing_file_is_one_readable_line(tmp_path):
    result = runner.invoke(
        app,
        ["features", "--events", str(tmp_path / "nope.parquet"),
         "--customers", str(tmp_path / "nope2.parquet"), "--as-of", "2026-03-01",
         "--out", str(tmp_path / "f.parquet")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "nope.parquet" in result.output
    assert "Traceback" not in result.output
