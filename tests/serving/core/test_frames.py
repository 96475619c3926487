"""``serving.core.frames``: the store's own rows typed without the pandera pass, as validated."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from serving.core.frames import (
    OVERRIDES_COLUMNS,
    OVERRIDES_SCHEMA,
    RUNS_COLUMNS,
    RUNS_SCHEMA,
    STATE_COLUMNS,
    STATE_SCHEMA,
    STORED_SCORES_COLUMNS,
    STORED_SCORES_SCHEMA,
    TRANSITIONS_COLUMNS,
    TRANSITIONS_SCHEMA,
    distinct_sorted,
    is_in,
    repeats_in,
    sorted_by_id,
    stored_frame,
    validate_frame,
)
from tests.serving.batches import FIRST_DAY, apply, at, decisions, set_override

DAY_1, DAY_2, DAY_3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


@pytest.fixture
def three_days(scores_store):
    """Two rules-only days, an override recorded then cleared, and a scored day with a gap."""
    apply(scores_store, DAY_1, FIRST_DAY)
    apply(scores_store, DAY_2, [("a", "ST_001", "ST_004"), ("b", "ST_001", "ST_001")])
    set_override(scores_store, "c", "ST_004", actor="kim", reason="call", now=at(DAY_2, 9))
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "p_churn": [0.8, None, 0.1],  # b unscored: a null probability
            "p_low": [0.7, None, 0.05],
            "p_high": [0.9, None, 0.2],
            "confidence": [0.6, None, 0.9],
        }
    )
    moves = [("a", "ST_004", "ST_004"), ("b", "ST_001", "ST_001"), ("c", "ST_004", "ST_004")]
    scores_store.apply_batch(
        DAY_3, decisions(DAY_3, moves), scores, run_id="scored", model_version="1",
        rules_only=False, now=at(DAY_3),
    )  # fmt: skip
    return scores_store


def test_every_store_read_is_typed_as_its_validation_would_type_it(three_days):
    # Given a store with transitions (automatic and manual), overrides, runs and scores
    store = three_days
    reads = {
        "transitions": (store.transitions_frame(), TRANSITIONS_SCHEMA),
        "history": (store.history("c"), TRANSITIONS_SCHEMA),
        "runs": (store.runs(), RUNS_SCHEMA),
        "scores": (store.scores_frame(), STORED_SCORES_SCHEMA),
        "state": (store.state_frame(DAY_3), STATE_SCHEMA),
        "overrides": (store.overrides_frame(), OVERRIDES_SCHEMA),
    }
    for name, (frame, schema) in reads.items():
        # When each read (typed by stored_frame) is validated in full
        validated = validate_frame(frame, schema)
        # Then the checks pass and the validation changes nothing: not a dtype, not a value
        assert not frame.empty, name
        pd.testing.assert_frame_equal(frame, validated, obj=name)
    # And nulls of text columns stay missing (the automatic move has no actor), not "None"
    actors = store.history("c")["actor"]
    assert actors.isna().tolist() == [True, False] and actors.iloc[-1] == "kim"


def test_a_stored_frame_without_a_required_column_or_with_an_unknown_one_is_refused():
    # Given a transitions frame with its reason column renamed
    frame = pd.DataFrame({name: [] for name in TRANSITIONS_SCHEMA.columns}).rename(
        columns={"reason": "excuse"}
    )
    # When it is typed, then the error names the frame and both columns
    with pytest.raises(
        ValueError, match=r"transitions: missing columns \['reason'\], unexpected \['excuse'\]"
    ):
        stored_frame(frame, TRANSITIONS_COLUMNS)


def test_a_stored_frame_takes_the_optional_columns_it_has_and_keeps_their_order():
    # Given scores without the optional campaign columns, in another order than the schema's
    frame = pd.DataFrame({"run_id": ["r"], "as_of": [date(2024, 3, 1)], "customer_id": ["a"]})
    schema = STORED_SCORES_SCHEMA.select_columns(["customer_id", "as_of", "run_id"])
    # When it is typed, then the columns stay in the frame's order, with the schema's types
    typed = stored_frame(frame, STORED_SCORES_COLUMNS.select(["customer_id", "as_of", "run_id"]))
    assert list(typed.columns) == ["run_id", "as_of", "customer_id"]
    assert typed["as_of"].dtype == validate_frame(frame, schema)["as_of"].dtype


@pytest.mark.parametrize(
    ("columns", "schema"),
    [
        (STATE_COLUMNS, STATE_SCHEMA),
        (OVERRIDES_COLUMNS, OVERRIDES_SCHEMA),
        (TRANSITIONS_COLUMNS, TRANSITIONS_SCHEMA),
        (STORED_SCORES_COLUMNS, STORED_SCORES_SCHEMA),
        (RUNS_COLUMNS, RUNS_SCHEMA),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_the_stored_columns_of_a_frame_are_its_schemas_names_types_and_optional_columns(
    columns, schema
):
    # Given the plain column types that type the store's reads, and the pandera schema
    # When both are listed in order / Then they agree column by column
    assert columns.name == schema.name
    assert list(columns.dtypes) == list(schema.columns)
    for name, column in schema.columns.items():
        assert pd.api.types.pandas_dtype(columns.dtypes[name]) == column.dtype.type, name
    assert columns.optional == {
        name for name, column in schema.columns.items() if not column.required
    }


@pytest.mark.parametrize("dtype", ["str", "object", "category"])
def test_is_in_agrees_with_pandas_isin_and_never_finds_a_null(dtype):
    # given ids of a string dtype, one of them null, and candidates holding some of them
    ids = pd.Series(["C1", "C2", None, "C4", "C2"], dtype=dtype)
    candidates = pd.Index(["C2", "C4", "C9"])
    # when they are looked up
    found = is_in(ids, candidates)
    # then the answer is pandas' for every present id, and the null is not in
    assert found.dtype == bool
    assert found.tolist() == [False, True, False, True, True]
    present = ids.notna().to_numpy()
    assert (found[present] == ids[present].isin(candidates).to_numpy()).all()


@pytest.mark.parametrize("ids_in_order", [True, False])
@pytest.mark.parametrize("candidates_in_order", [True, False])
def test_is_in_a_day_of_ids_agrees_with_pandas_isin(ids_in_order, candidates_in_order):
    # given a day's worth of ids (in id order or not: binary search or hash lookup) and
    # candidates holding every third of them and others
    numbers = np.random.default_rng(7).permutation(30_000)
    ids = pd.Series([f"C{n:06d}" for n in numbers], dtype="str")
    candidates = pd.Series([f"C{n:06d}" for n in numbers[::3]] + ["C999999"], dtype="str")
    ids = ids.sort_values(ignore_index=True) if ids_in_order else ids
    if candidates_in_order:
        candidates = candidates.sort_values(ignore_index=True)
    # when they are looked up, then the answer is pandas'
    found = is_in(ids, candidates)
    assert found.sum() == 10_000
    assert (found == ids.isin(candidates).to_numpy()).all()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["C03", "C01", "C02"], False),
        (["C03", "C01", "C03"], True),  # one width: the byte keys tell
        (["a", "bb", "a"], True),  # several widths: Arrow's hash tells
        (["a", "bb", "ccc"], False),
        (["a", None, None], True),  # two nulls are one value twice
        (["a", None], False),
    ],
)
def test_repeats_in_tells_whether_a_value_occurs_twice(values, expected):
    assert repeats_in(pa.array(values, pa.string())) is expected


ODD_IDS = ["b", "a", "é", "B", "a", "10", "9", "", "日本", "z\x00"]


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_sorted_by_id_is_a_stable_sort_values_of_the_ids(dtype):
    # given ids out of order (a repeat, unicode, upper case, digits, empty) and a row number
    frame = pd.DataFrame({"customer_id": pd.Series(ODD_IDS, dtype=dtype), "row": range(10)})
    frame.index = range(100, 110)
    # when / then the frame sort_values gives, repeats in their order, a fresh index
    expected = frame.sort_values("customer_id", ignore_index=True, kind="stable")
    pd.testing.assert_frame_equal(sorted_by_id(frame), expected)
    # and ids with a null are sorted as sort_values sorts them (the null last)
    with_null = frame.assign(customer_id=pd.Series([None, *ODD_IDS[1:]], dtype=dtype).to_numpy())
    expected = with_null.sort_values("customer_id", ignore_index=True, kind="stable")
    pd.testing.assert_frame_equal(sorted_by_id(with_null), expected)


@pytest.mark.parametrize("in_order", [False, True])
def test_sorted_by_id_of_ids_of_one_width_is_a_stable_sort_values(in_order):
    # given ids of one width (as a store's are), repeats among them, in no order or in order
    rng = np.random.default_rng(3)
    ids = [f"C{number:07d}" for number in rng.integers(0, 500, 2_000)]
    frame = pd.DataFrame({"customer_id": pd.Series(ids, dtype="str"), "row": range(2_000)})
    if in_order:
        frame = frame.sort_values("customer_id", kind="stable")
    frame.index = range(5_000, 7_000)
    # when / then: the rows sort_values gives, repeats in their order, a fresh index
    expected = frame.sort_values("customer_id", ignore_index=True, kind="stable")
    pd.testing.assert_frame_equal(sorted_by_id(frame), expected)


@pytest.mark.parametrize("seed", range(5))
def test_distinct_sorted_rows_are_pandas_first_rows_of_each_key_in_key_order(seed):
    # given rows whose (text, text, day) keys repeat, some parts missing, in no order, with
    # a column that differs between the rows of one key and index labels of their own
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(0, 300))
    days = pd.to_datetime(["2026-03-01", "2026-03-02", "2026-03-03"]).astype("datetime64[us]")
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice(["C1", "C2", "C10", None], rows), dtype="str"),
            "from_tag": rng.choice(np.array(["ST_001", "new", None], dtype=object), rows),
            "as_of": rng.choice(days, rows),
            "row": np.arange(rows),
        },
        index=rng.permutation(rows) + 100,
    )
    keys = ["customer_id", "from_tag", "as_of"]
    # when made distinct and sorted, then the rows are pandas' own, labels included
    expected = frame.drop_duplicates(keys).sort_values(keys, na_position="last", kind="stable")
    pd.testing.assert_frame_equal(distinct_sorted(frame, keys), expected)
