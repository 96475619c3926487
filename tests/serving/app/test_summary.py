"""The batch day's summary as data (``serving.app.summary``): the tag counts before and after."""

from __future__ import annotations

import pandas as pd

from serving.app.summary import _counts_after, tag_counts

TAGS = ["ST_001", "ST_002", "ST_003", "ST_004", "ST_005", "ST_006"]


def test_the_tags_after_count_each_decided_learners_new_tag_and_the_others_stored_one():
    # given a stored state of four learners, and decisions (the engine's categorical tags) for
    # three of them and a new learner; one decision without a tag (no move decided)
    state = pd.DataFrame(
        {"customer_id": ["a", "b", "c", "d"], "tag": ["ST_001", "ST_001", "ST_004", "ST_006"]}
    )
    decisions = pd.DataFrame(
        {
            "customer_id": pd.array(["a", "b", "c", "n"], dtype="str"),
            "to_tag": pd.Categorical(["ST_004", None, "ST_004", "ST_001"], categories=TAGS),
        }
    )
    # when counted
    after = _counts_after(state, decisions)
    # then a and c count as ST_004, n as ST_001, b and d keep theirs; no empty tag is listed
    assert after == {"ST_001": 2, "ST_004": 2, "ST_006": 1}
    assert list(after) == sorted(after)  # in tag order


def test_tag_counts_read_a_categorical_as_its_texts():
    # given the same tags as text and as a categorical with unused categories
    texts = pd.Series(["ST_004", "ST_001", "ST_004", None])
    categorical = texts.astype(pd.CategoricalDtype(TAGS))
    # when / then both count the same, tags in order, none for the unused ones
    assert tag_counts(texts) == tag_counts(categorical) == {"ST_001": 1, "ST_004": 2}
