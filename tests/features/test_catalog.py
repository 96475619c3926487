"""The feature catalog: valid, complete, and the generated docs match it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from features.catalog import FeatureCatalog, catalog_markdown, load_catalog

REPO = Path(__file__).resolve().parents[2]


def test_catalog_has_twelve_named_risk_indicators_and_their_count():
    # given the packaged catalog
    catalog = load_catalog()
    # when we list the risk flags
    flags = catalog.risk_indicators
    # then there are exactly twelve, all booleans, plus the integer count of them
    assert len(flags) == 12
    assert all(catalog.get(name).dtype == "bool" for name in flags)
    assert catalog.get("risk_indicator_count").dtype == "int"


def test_docs_features_md_is_the_generated_catalog():
    # given the committed docs page and the catalog
    committed = (REPO / "docs" / "features.md").read_text(encoding="utf-8")
    # then they agree: regenerate with `lstep catalog --markdown > docs/features.md`
    assert committed == catalog_markdown()


def test_unknown_feature_lookup_names_the_known_ones():
    with pytest.raises(KeyError, match="days_since_last_event"):
        load_catalog().get("no_such_feature")


def test_catalog_rejects_duplicate_names_and_unknown_event_types():
    spec = {"name": "x", "label": "x", "description": "x", "unit": "count", "dtype": "int",
            "group": "frequency"}  # fmt: skip
    with pytest.raises(ValidationError, match="twice"):
        FeatureCatalog.model_validate({"features": [spec, spec]})
    with pytest.raises(ValidationError, match="unknown event types"):
        FeatureCatalog.model_validate({"features": [{**spec, "needs": ["teleport"]}]})


def test_each_risk_flag_quoting_evidence_quotes_a_numeric_feature_with_a_phrase():
    # given the packaged catalog
    catalog = load_catalog()
    quoting = [spec for spec in catalog.features if spec.evidence]
    # then the flags that quote evidence are risk indicators, each with a phrase of a number
    assert {spec.name for spec in quoting} <= set(catalog.risk_indicators)
    assert len(quoting) >= 8
    for spec in quoting:
        assert catalog.get(spec.evidence).dtype in ("int", "float")
        assert spec.phrase is not None and "{value" in spec.phrase


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phrase": "no activity for {days} days"}, "does not format a value"),
        ({"phrase": "{value:.0q}"}, "does not format a value"),
        ({"evidence": "days_since_last_event"}, "only a risk flag quotes evidence"),
    ],
)
def test_a_phrase_that_cannot_be_formatted_or_misplaced_evidence_fails_at_load(change, message):
    spec = {"name": "x", "label": "x", "description": "x", "unit": "count", "dtype": "int",
            "group": "frequency"}  # fmt: skip
    with pytest.raises(ValidationError, match=message):
        FeatureCatalog.model_validate({"features": [{**spec, **change}]})


def test_evidence_must_name_a_catalog_feature():
    flag = {"name": "risk_x", "label": "x", "description": "x", "unit": "flag", "dtype": "bool",
            "group": "risk", "phrase": "{value:.0f}", "evidence": "no_such_feature"}  # fmt: skip
    with pytest.raises(ValidationError, match=r"risk_x -> no_such_feature"):
        FeatureCatalog.model_validate({"features": [flag]})


def test_the_catalog_read_by_libyaml_is_the_one_the_pure_python_loader_reads():
    # given the packaged catalog's text
    import yaml

    text = (Path(__file__).parents[2] / "features" / "catalog.yaml").read_text(encoding="utf-8")
    # when it is read by the pure-Python safe loader / then load_catalog (libyaml) agrees
    assert load_catalog() == FeatureCatalog.model_validate(yaml.load(text, Loader=yaml.SafeLoader))
