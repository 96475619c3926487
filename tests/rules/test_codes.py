"""Tests for rules.codes.codes_of: each value's position among categories."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rules import codes as codes_module
from rules.codes import codes_of, one_array, text_order, texts_repeat

CATEGORIES = ["P1", "P2", "P3", "P2"]  # a repeated category: the first position counts
VALUES = ["P2", "P1", None, "P9", "P2", "P3"]
EXPECTED = [1, 0, -1, -1, 1, 2]


@pytest.mark.parametrize(
    "values",
    [
        pd.Categorical(VALUES, categories=["P9", "P3", "P2", "P1"]),
        pd.Series(pd.Categorical(VALUES, categories=["P3", "P9", "P2", "P1"], ordered=True)),
        pd.Series(VALUES, dtype=object),
        pa.array(VALUES),
    ],
    ids=["categorical", "ordered-series", "object-series", "arrow"],
)
def test_each_value_is_coded_by_its_first_category_and_minus_one_when_absent_or_null(values):
    assert codes_of(values, CATEGORIES).tolist() == EXPECTED


def test_a_categorical_is_coded_by_its_categories_not_value_by_value(monkeypatch):
    # given a million-row categorical of three categories
    column = pd.Series(pd.Categorical.from_codes(np.arange(1_000_000) % 4 - 1, ["P3", "P1", "P2"]))
    looked_up = []
    original = pa.array

    def counted(values, *args, **kwargs):
        looked_up.append(len(values))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(pa, "array", counted)
    # when
    codes = codes_of(column, ["P1", "P2", "P3"])
    # then only the categories were looked up, and the codes are the values' positions
    assert max(looked_up) == 3
    assert codes[:8].tolist() == [-1, 2, 0, 1, -1, 2, 0, 1]


def test_few_values_among_many_categories_are_coded_as_a_plain_lookup_codes_them():
    # given many categories (repeats, a null, an empty text) and far fewer values (repeats,
    # absent ones, a null, an empty text), enough to turn the lookup round
    rng = np.random.default_rng(3)
    size = codes_module.INVERTED_FROM * 2
    categories = pa.array([f"C{i}" for i in rng.integers(0, size, size)] + ["", None])
    values = pa.array(
        [f"C{i}" for i in rng.integers(0, 2 * size, size // 5)] + [None, "C1", "C1", "", "x"]
    )
    # when coded
    codes = codes_of(values, categories)
    # then each is the first position Arrow's lookup of the values among the categories gives
    plain = pc.fill_null(pc.index_in(values, value_set=categories), -1).to_numpy()
    assert np.array_equal(codes, plain)
    assert (codes >= 0).sum() > size // 20  # not a vacuous agreement on "absent"


def test_few_values_among_many_categories_hash_the_values_not_the_categories(monkeypatch):
    # given few values among many categories, and Arrow's lookup recorded
    categories = pa.array([f"C{i}" for i in range(codes_module.INVERTED_FROM)])
    values = pa.array(["C7", "C3", "nope"])
    hashed = []
    original = pc.index_in

    def recorded(probed, value_set):
        hashed.append(len(value_set))
        return original(probed, value_set=value_set)

    monkeypatch.setattr(pc, "index_in", recorded)
    # when coded, then no hash table of the many categories was built
    assert codes_of(values, categories).tolist() == [7, 3, -1]
    assert max(hashed) == len(values)


def _ids(numbers: np.ndarray, large: bool = False) -> pa.Array:
    """Ids of one width, as the store writes them (``C`` and seven digits)."""
    return pa.array([f"C{n:07d}" for n in numbers], pa.large_string() if large else pa.string())


def _plain(values: pa.Array, categories: pa.Array) -> np.ndarray:
    """Arrow's hash lookup: what ``codes_of`` gives whichever way it looks up."""
    return pc.fill_null(pc.index_in(values, value_set=categories), -1).to_numpy()


@pytest.mark.parametrize(
    ("values_sorted", "categories_sorted", "large"),
    [(True, True, False), (False, True, True), (True, False, False), (False, False, False)],
    ids=["both sorted", "categories sorted", "values sorted", "neither"],
)
def test_ids_of_one_width_are_coded_as_the_hash_lookup_codes_them(
    values_sorted, categories_sorted, large
):
    # given many ids of one width, some absent from the other side, sorted or shuffled
    rng = np.random.default_rng(5)
    size = codes_module.SORTED_FROM * 3
    pool = rng.choice(4 * size, 2 * size, replace=False)
    categories, values = np.sort(pool[:size] // 2 * 2), np.sort(pool[size // 2 :])
    categories = np.unique(categories) if categories_sorted else rng.permutation(categories)
    values = values if values_sorted else rng.permutation(values)
    categories, values = _ids(categories, large), _ids(values, large)
    # when coded, then each code is the hash lookup's, and many values were found
    codes = codes_of(values, categories)
    assert np.array_equal(codes, _plain(values, categories))
    assert (codes >= 0).sum() > size // 4


def test_sorted_ids_are_searched_not_hashed(monkeypatch):
    # given a day's sorted ids among the store's sorted ids, and Arrow's hash lookup refused
    size = codes_module.SORTED_FROM
    categories, values = _ids(np.arange(0, 4 * size, 2)), _ids(np.arange(size, 3 * size))
    expected = _plain(values, categories)
    monkeypatch.setattr(pc, "index_in", lambda *args, **kwargs: pytest.fail("hashed"))
    # when coded, then the codes are the lookup's all the same
    assert np.array_equal(codes_of(values, categories), expected)
    # and a sorted side of sliced arrays (an offset into their buffers) is searched alike
    assert np.array_equal(codes_of(values[5:], categories[3:]), _plain_shifted(expected[5:], 3))


@pytest.mark.parametrize("repeats", [False, True], ids=["distinct", "categories repeat"])
def test_ids_in_no_order_are_sorted_and_searched_not_hashed(monkeypatch, repeats):
    # given shuffled ids on both sides (some values absent, some categories there twice or
    # more), and Arrow's hash lookup's codes worked out before it is refused
    rng = np.random.default_rng(11)
    size = codes_module.SORTED_FROM * 2
    numbers = rng.permutation(size)
    if repeats:
        numbers = np.concatenate([numbers, rng.choice(size, size // 2)])
    categories = _ids(numbers)
    values = _ids(rng.permutation(np.arange(size // 2, size + size // 2)))
    expected = _plain(values, categories)
    monkeypatch.setattr(pc, "index_in", lambda *args, **kwargs: pytest.fail("hashed"))
    # when coded, then each value has the first position of its id, -1 where absent
    codes = codes_of(values, categories)
    assert np.array_equal(codes, expected)
    assert 0 < (codes >= 0).sum() < len(values)


def test_many_more_ids_than_categories_in_no_order_are_hashed(monkeypatch):
    # given five times as many repeated ids as shuffled categories, and the sort refused
    rng = np.random.default_rng(12)
    size = codes_module.SORTED_FROM * 2
    categories = _ids(rng.permutation(size))
    values = _ids(rng.integers(0, 2 * size, 5 * size))
    expected = _plain(values, categories)
    monkeypatch.setattr(
        codes_module, "_found_sorting", lambda *args: pytest.fail("sorted: the hash is cheaper")
    )
    # when coded, then the hash lookup gave the codes
    assert np.array_equal(codes_of(values, categories), expected)


def _plain_shifted(codes: np.ndarray, dropped: int) -> np.ndarray:
    """Codes among categories with the first ``dropped`` taken off."""
    return np.where(codes >= dropped, codes - dropped, -1)


@pytest.mark.parametrize(
    "edit",
    ["repeated category", "other widths", "a null value", "mixed widths"],
)
def test_ids_breaking_the_searchs_preconditions_are_coded_as_the_hash_lookup_codes_them(edit):
    # given sorted values and shuffled categories, broken in one way the search must notice
    rng = np.random.default_rng(8)
    size = codes_module.SORTED_FROM * 2
    values = _ids(np.arange(size))
    categories = _ids(rng.permutation(np.arange(size // 2, 2 * size)))
    if edit == "repeated category":  # the first of the two positions is the code
        categories = pa.concat_arrays([categories, categories])
    elif edit == "other widths":
        categories = pa.array([f"D{n:08d}" for n in range(size)])
    elif edit == "a null value":
        values = pa.concat_arrays([values, pa.array([None], pa.string())])
    else:
        values = pa.concat_arrays([values, pa.array(["C1"])])
    # when coded, then each code is the hash lookup's
    assert np.array_equal(codes_of(values, categories), _plain(values, categories))


@pytest.mark.parametrize(
    ("values_sorted", "share", "searched"),
    [(True, 1.0, True), (False, 0.5, True), (False, 1.0, False), (False, 2.0, False)],
    ids=["values sorted", "fewer shuffled", "as many shuffled", "more shuffled"],
)
def test_wide_ids_sorted_on_one_side_are_coded_as_the_hash_lookup_codes_them(
    monkeypatch, values_sorted, share, searched
):
    # given UUIDs (36 bytes) among the store's sorted UUIDs, some absent: the values sorted,
    # or shuffled and fewer than, as many as or more than the categories
    rng = np.random.default_rng(11)
    size = codes_module.SORTED_FROM * 2
    pool = np.unique(rng.integers(0, 2**62, 3 * size))
    texts = [str(uuid.UUID(int=int(n) << 64 | int(n))) for n in pool]
    categories = pa.array(texts[: 2 * size])  # sorted: the pool is, and so are its UUIDs' texts
    values = texts[size : 3 * size]
    values = values if values_sorted else list(rng.choice(values, int(share * 2 * size)))
    values = pa.array(values)
    expected = _plain(values, categories)
    hashed = []
    index_in = pc.index_in
    monkeypatch.setattr(
        pc, "index_in", lambda *args, **kwargs: hashed.append(1) or index_in(*args, **kwargs)
    )
    # when coded, then each code is the hash lookup's and half the values were found
    codes = codes_of(values, categories)
    assert np.array_equal(codes, expected)
    assert 0.4 < (codes >= 0).mean() < 0.6
    # and sorted or fewer values were searched; as many or more in no order, hashed (their
    # sort costs more than the hash)
    assert not hashed if searched else hashed


def test_wide_ids_differing_only_in_a_trailing_nul_stay_apart():
    # given ids of one width whose bytes differ only by a trailing NUL against a letter
    size = codes_module.SORTED_FROM
    nul = "\x00"
    categories = pa.array([f"learner-{n:08d}{nul}" for n in range(size)])
    values = pa.array([f"learner-{n:08d}{nul if n % 2 else 'a'}" for n in range(size)])
    # when coded, then only the ids with the NUL are found, each at its own position
    codes = codes_of(values, categories)
    assert np.array_equal(codes, _plain(values, categories))
    assert np.array_equal(codes, np.where(np.arange(size) % 2 == 1, np.arange(size), -1))


def test_one_array_keeps_a_single_chunk_as_it_is_and_joins_several():
    # given a column of one chunk (a memory-mapped file's) and one of two chunks
    single = pa.chunked_array([pa.array(["a", "b"])])
    several = pa.chunked_array([pa.array(["a"]), pa.array(["b", "c"])])

    # when
    kept, joined = one_array(single), one_array(several)

    # then: the single chunk is the very array (its buffers not copied); the chunks are one
    assert kept.buffers()[2].address == single.chunk(0).buffers()[2].address
    assert isinstance(joined, pa.Array)
    assert joined.to_pylist() == ["a", "b", "c"]
    assert one_array(pa.chunked_array([], type=pa.string())).to_pylist() == []


@pytest.mark.parametrize("width", [1, 3, 7, 8])
@pytest.mark.parametrize("seed", range(3))
def test_text_order_sorts_ids_of_one_width_as_arrows_stable_sort(width, seed):
    # given ids of one width in no order, with repeats, bytes beyond ASCII and a NUL inside
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("AZaz09\x00\x7f"), dtype=object)
    pool = ["".join(rng.choice(alphabet, width)) for _ in range(300)]
    ids = pa.array([pool[i] for i in rng.integers(0, len(pool), 2_000)])

    # when
    order = text_order(ids)

    # then: the very permutation of Arrow's stable sort (repeats keep their order)
    expected = pc.sort_indices(ids).to_numpy()
    assert order is not None
    assert np.array_equal(order, expected)


def test_text_order_of_a_tables_column_reads_its_chunk_in_place(monkeypatch):
    # given a table's id column (a ChunkedArray of one chunk) in no order
    ids = pa.table({"customer_id": ["C3", "C1", "C2"]}).column("customer_id")
    seen = []
    monkeypatch.setattr(codes_module, "_byte_keys", lambda texts: seen.append(texts) or None)

    # when
    text_order(ids)

    # then: the keys are read off the column's own chunk, not a copy made value by value
    assert seen[0].buffers()[2].address == ids.chunk(0).buffers()[2].address


@pytest.mark.parametrize(
    "values",
    [["b", "a", None], ["bb", "a", "cc"], ["y" * 9, "x" * 9], []],
    ids=["null", "widths", "wider than eight bytes", "empty"],
)
def test_text_order_leaves_what_its_keys_cannot_order_to_the_caller(values):
    # given ids with a null, ids of several widths, of nine bytes, no ids
    # when / then: no order, so that the caller sorts another way
    assert text_order(pa.array(values, pa.string())) is None


@pytest.mark.parametrize("width", [1, 5, 8])
def test_texts_repeat_tells_whether_an_id_of_one_width_occurs_twice(width):
    # given distinct ids of one width, in no order, and the same with one id written twice
    rng = np.random.default_rng(width)
    distinct = [f"{number:0{width}d}" for number in rng.permutation(min(10**width, 5_000))]
    repeated = [*distinct, distinct[len(distinct) // 2]]

    # when / then: a repeat is found wherever it is, and none among distinct ids
    assert texts_repeat(pa.array(distinct)) is False
    assert texts_repeat(pa.array(repeated)) is True
    assert texts_repeat(pa.array(list(reversed(repeated)))) is True


@pytest.mark.parametrize(
    "values",
    [["a", None], ["a", "bb"], ["x" * 9, "y" * 9], []],
    ids=["null", "widths", "wider than eight bytes", "empty"],
)
def test_texts_repeat_leaves_what_its_keys_cannot_tell_to_the_caller(values):
    # given ids with a null, of several widths, of nine bytes, none
    # when / then: no answer, so that the caller asks pandas
    assert texts_repeat(pa.array(values, pa.string())) is None
