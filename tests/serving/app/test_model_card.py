"""The report's model card: reading the champion run's markdown artifacts."""

from __future__ import annotations

import pytest

from serving.app.model_card import early_warning_section, markdown_section, markdown_table


def test_markdown_helpers_read_the_table_and_a_section():
    # given a card with a metrics table and a baselines section
    card = "# Card\n\n## Metrics\n| scorer | PR-AUC |\n| --- | --- |\n| model | 0.7 |\n\n"
    card += "## Baselines\n- **recency**: days since\n"
    # when parsed
    header, rows = markdown_table(card)
    # then the separator line is not a row and the section stops at the next heading
    assert (header, rows) == (["scorer", "PR-AUC"], [["model", "0.7"]])
    assert markdown_section(card, "Baselines") == "- **recency**: days since"
    with pytest.raises(ValueError, match="markdown table"):
        markdown_table("no table here")


def test_the_early_warning_section_reads_definition_table_verdict_and_points():
    # given a card with the early-warning and operating-point sections
    card = (
        "## Metrics\n| a |\n| --- |\n| 1 |\n\n"
        "## Early warning (the claim)\nDefinition: a flag\nis right when.\n\n"
        "| scorer | N (days) | precision |\n| --- | --- | --- |\n| model | 14 | 0.800 |\n\n"
        "85% precision 14+ days ahead is NOT reached by the model.\n\n"
        "## Operating points (recorded)\n- `@early_warning`: 0.6200 (best reachable)\n"
    )
    # when parsed
    section = early_warning_section(card)
    # then each part is there, the definition on one line
    assert section["definition"] == "Definition: a flag is right when."
    assert section["rows"] == [["model", "14", "0.800"]]
    assert section["verdict"].endswith("NOT reached by the model.")
    assert section["operating_points"] == ["@early_warning: 0.6200 (best reachable)"]
    # and a card from before the section existed has none
    assert early_warning_section("## Metrics\n| a |\n| --- |\n") is None
