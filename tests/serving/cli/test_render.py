"""The CLI's renderings: what a terminal shows of the library's results."""

from __future__ import annotations

from datetime import date

import pytest
from rich.console import Console

from features.validation import Problem, ValidationReport
from serving.app.summary import BatchResult
from serving.cli.render import batch_summary, kpi_value, validation_report


def test_a_validation_report_renders_as_a_table_with_every_problem():
    # given a report with one note and one error
    note = Problem("events.csv", None, "2 exact duplicate rows dropped", 2, severity="note")
    error = Problem("events.csv", "channel", "1 row has a channel outside web", 1, ("'tv'",))
    report = ValidationReport((note, error), events_rows=10, customers_rows=3, duplicates_dropped=2)
    # when drawn with rich
    console = Console(record=True, width=200)
    console.print(validation_report(report))
    text = console.export_text()
    # then the summary leads and both problems appear, the error before the note
    assert text.splitlines()[0] == "input validation FAILED: 1 error, 1 note"
    assert "channel outside web; e.g. 'tv'" in text
    assert text.index("channel outside web") < text.index("exact duplicate rows dropped")


def test_kpi_values_carry_their_unit_and_a_dash_without_data():
    assert kpi_value(71.25, "%") == "71.2%"
    assert kpi_value(1234.5, "hours") == "1,234.5 hours"
    assert kpi_value(None, "%") == "-"


@pytest.mark.parametrize("over", [0, 62])
def test_the_batch_summary_says_how_many_learners_the_capacity_moved(over):
    # given a dry-run day whose capacity moved ``over`` urgent learners to automated outreach
    result = BatchResult(
        as_of=date(2026, 6, 30), run=None, dry_run=True, already_done=False, rules_only=True,
        model_version=None, to_call=150, over_capacity=over,
        overflow_priority="P3" if over else None,
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(batch_summary(result))
    text = console.export_text()
    # then the summary counts them, and says nothing of the kind when none was moved
    line = "62 P1/P2 learners over capacity moved to automated outreach (P3); 150 left to contact"
    assert (line in text) == bool(over)
    assert ("over capacity" in text) == bool(over)
