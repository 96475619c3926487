"""``lstep score --engine spark``: the option reaches the job, bad input is one line."""

from __future__ import annotations

from typer.testing import CliRunner

from serving.cli.main import app
from tests.serving.fixtures import FIRST_DAY


def test_the_command_names_a_missing_spark_input_in_one_line(lstep_home, tmp_path):
    # When lstep score --engine spark is given an events path that does not exist
    missing = tmp_path / "nowhere" / "events.parquet"
    result = CliRunner().invoke(
        app,
        ["score", "--as-of", str(FIRST_DAY), "--engine", "spark", "--rules-only",
         "--events", str(missing), "--customers", str(missing)],
    )  # fmt: skip
    # Then it fails with one line naming the path, no traceback
    assert result.exit_code == 1
    message = result.output.replace("\n", "")  # rich wraps the line at the terminal width
    assert f"error: {missing} does not exist" in message and "Traceback" not in message
