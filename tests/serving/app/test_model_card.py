"""The report's model card: reading the champion run's markdown artifacts."""

from __future__ import annotations

import pytest

from serving.app.model_card import markdown_section, markdown_table


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
