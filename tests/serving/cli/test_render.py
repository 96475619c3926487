"""The CLI's renderings: what a terminal shows of the library's results."""

from __future__ import annotations

from rich.console import Console

from features.validation import Problem, ValidationReport
from serving.cli.render import kpi_value, validation_report


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
