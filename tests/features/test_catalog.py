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
