"""Text columns as integer codes: each value's position among categories, fast at a million.

``codes_of`` is how the rules engine, the capacity cut and the serving side find a day's learners
(ids as text) among others: binary search on the ids' bytes where one side is sorted or can be
sorted cheaply, Arrow's hash lookup otherwise, a categorical by its few categories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

NO_CODE = -1
"""Categorical code for null (no rule, no tag, not held) and for a value not found."""


def codes_of(values: ArrayLike, categories: Sequence[str] | pd.Series) -> np.ndarray:
    """Position of each value in ``categories`` (first match), -1 where absent or null.

    Arrow's hash lookup is several times faster than a pandas Index on a million strings; a
    categorical (a Series or ``pd.Categorical``) is coded by its few categories, its codes then
    mapped, rather than each of its million values looked up. The day's ids, sorted by the
    store on one side of the lookup at least, are found by binary search (``_codes_sorted``).
    """
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        categorical = values if isinstance(values, pd.Categorical) else values.array
        into = np.append(codes_of(categorical.categories, categories), NO_CODE)  # [-1]: null
        return into[categorical.codes]
    values, categories = _arrow(values), _arrow(categories)
    if len(categories) >= SORTED_FROM and len(values) >= SORTED_FROM:
        searched = _codes_sorted(values, categories)
        if searched is not None:
            return searched
    few = len(categories) >= INVERTED_FROM and len(categories) >= 4 * len(values)
    if few and values.type == categories.type and len(values):
        return _codes_inverted(values, categories)
    return _index_in(values, categories)


INVERTED_FROM = 50_000
"""Categories from which a lookup of at most a quarter as many values hashes the values, not
the categories: building the hash table is most of a lookup (a million ids: 0.23 s of CPU to
find 40k values among them, 0.03 s to find them among the 40k)."""


SORTED_FROM = 10_000
"""Values and categories from which ids sorted by the store are looked up by binary search on
their bytes (``_codes_sorted``): a hash lookup of a million ids among a million is
~0.3 s of CPU, the search a tenth of that."""


def _codes_sorted(values: pa.Array, categories: pa.Array) -> np.ndarray | None:
    """``codes_of`` by binary search, when one side is sorted (None: it does not apply).

    Texts of one width without nulls (the day's customer ids) are compared as their bytes:
    up to eight bytes as big-endian integers, wider ones (UUIDs, ``cus_...`` ids) as numpy
    fixed-width bytes, read in place. Strictly increasing categories (so
    distinct) are searched for each value (unless the values are wide, in no order and at least
    as many: hashed); else strictly increasing values are searched for
    each category and the result inverted, when no value is found twice; else integer keys
    are sorted (``_found_sorting``). Anything else, or a precondition that does not hold, is
    left to the hash lookup.
    """
    keyed = _byte_keys(values), _byte_keys(categories)
    if keyed[0] is None or keyed[1] is None:
        return None
    (value_keys, value_width), (category_keys, category_width) = keyed
    if value_width != category_width:  # texts of other widths: none equals another
        return np.full(len(values), NO_CODE, dtype=np.int64)
    if _increasing(category_keys):
        if value_width > 8 and len(values) >= len(categories) and not _increasing(value_keys):
            # wide ids in no order cost more to sort than to hash once they are as many as the
            # categories (among 1M sorted: 1M / 4M 9-byte ids 0.37 / 1.77 s sorted, 0.28 / 0.64
            # s hashed; 36-byte UUIDs 1.11 / 4.65 against 0.34 / 1.42 s; 300k: 0.09 against 0.18)
            return None
        return _found_in(value_keys, category_keys)
    if not _increasing(value_keys):
        # ids of up to eight bytes (integers) sort fast; wider ones cost more than the hash
        # (36-byte UUIDs: 0.49 s against 0.36 s), as does sorting many more categories than
        # values (``_codes_inverted`` hashes the values) or many more values than categories
        # (16M repeated ids among 921k: 3.7 s sorted against 1.0 s hashed; up to 4x as many,
        # in order or not, sorting still wins: 3.7M among 921k 0.33-0.69 s against 0.62-1.16)
        few_each = len(categories) < 4 * len(values) and len(values) <= 4 * len(categories)
        sortable = category_keys.dtype == np.uint64 and few_each
        return _found_sorting(value_keys, category_keys) if sortable else None
    at = _found_in(category_keys, value_keys)
    found = np.flatnonzero(at >= 0)
    if len(found) and np.bincount(at[found]).max() > 1:  # a repeated category: first matters
        return None
    codes = np.full(len(values), NO_CODE, dtype=np.int64)
    codes[at[found]] = found
    return codes


def _found_sorting(value_keys: np.ndarray, category_keys: np.ndarray) -> np.ndarray:
    """``codes_of`` of keys in no order: the categories' keys sorted (the first occurrence of a
    repeated one kept), then searched. A million ids in no order found among a million: sorting
    and searching ~0.1 s of CPU against Arrow's hash table's ~0.2-0.33 s."""
    order = np.argsort(category_keys)
    sorted_keys = category_keys[order]
    repeated = sorted_keys[1:] == sorted_keys[:-1]
    if repeated.any():  # the first occurrence must lead its run: a stable sort puts it there
        order = np.argsort(category_keys, kind="stable")
        sorted_keys = category_keys[order]
        repeated = sorted_keys[1:] == sorted_keys[:-1]
    first = np.concatenate([[True], ~repeated])
    at = _found_in(value_keys, sorted_keys[first])
    return np.where(at >= 0, order[first][np.maximum(at, 0)], NO_CODE).astype(np.int64)


def _found_in(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Each key's position in the strictly increasing ``sorted_keys``, -1 where absent.

    Keys out of order are searched in order, then put back: a million searches in random
    order miss the cache (0.27 s of CPU), in order with the sort they are 0.12 s.
    """
    order = None if _increasing(keys) else np.argsort(keys)
    searched = keys if order is None else keys[order]
    at = np.minimum(np.searchsorted(sorted_keys, searched), len(sorted_keys) - 1)
    found = np.where(sorted_keys[at] == searched, at, NO_CODE).astype(np.int64)
    if order is None:
        return found
    codes = np.empty_like(found)
    codes[order] = found
    return codes


def _increasing(keys: np.ndarray) -> bool:
    """Strictly increasing (so distinct)."""
    return bool((keys[:-1] < keys[1:]).all())


def _byte_keys(texts: pa.Array) -> tuple[np.ndarray, int] | None:
    """Each text's UTF-8 bytes as one key that orders as the bytes do, and the texts' width;
    None unless every text is present and of one width of at least a byte.

    Up to eight bytes: an unsigned integer, read big-endian (zero-padded to eight bytes; the
    one width keeps "a" and "a\\0" apart). Wider: numpy fixed-width bytes over Arrow's buffer,
    no copy; numpy ignores trailing NULs when comparing these, which for texts of one width
    changes neither equality nor order. A million 36-byte UUIDs found among a million sorted
    ones: 0.2 s of CPU, against 0.55 s for the hash lookup.
    """
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        return None
    if texts.null_count or not len(texts):
        return None
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], offset_type)[texts.offset :][: len(texts) + 1]
    width = int(offsets[1] - offsets[0])
    if width < 1 or int(offsets[-1] - offsets[0]) != width * len(texts):
        return None
    if not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(texts.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    if width > 8:
        return data.view(f"S{width}"), width
    padded = np.zeros((len(texts), 8), np.uint8)
    padded[:, :width] = data.reshape(len(texts), width)
    return padded.view(">u8").ravel().astype(np.uint64), width


def _codes_inverted(values: pa.Array, categories: pa.Array) -> np.ndarray:
    """``codes_of`` with the lookup turned round: each category finds the first value equal to
    it; a value's code is the first category row that found it, a repeated value takes its
    first occurrence's code."""
    first = _index_in(values, values)  # each value's first occurrence (a value finds itself)
    found = _index_in(categories, values)
    rows = np.flatnonzero(found >= 0)
    # np.unique's index is the first: the rows are in ascending order
    matched, at = np.unique(found[rows], return_index=True)
    code_of_first = np.full(len(values), NO_CODE, dtype=np.int64)
    code_of_first[matched] = rows[at]
    return np.where(first >= 0, code_of_first[first], NO_CODE)


def _index_in(values: pa.Array, categories: pa.Array) -> np.ndarray:
    """Arrow's hash lookup: each value's first position in ``categories``, -1 where absent."""
    found = pc.index_in(values, value_set=categories)
    return pc.fill_null(found, -1).to_numpy().astype(np.int64)


def text_order(values: ArrayLike) -> np.ndarray | None:
    """The stable order that sorts ``values`` by their UTF-8 bytes (Arrow's and pandas' order of
    text), from their byte keys of up to eight bytes (``_byte_keys``); None when those keys do
    not apply (a null, texts of several widths or of more than eight bytes): the caller sorts
    some other way.

    A million ids of one width: ~0.02-0.04 s of CPU for the keys and numpy's sort (one or two
    runs already in order, as the store's ids are, cost the sort almost nothing) against
    Arrow's ``sort_indices``' 0.08-0.36 s. Wider ids (36-byte UUIDs) sorted as numpy bytes
    cost more than Arrow's sort when in no order (0.51 against 0.44 s), so they are left to it.
    """
    keys = _integer_keys(values)
    return None if keys is None else np.argsort(keys, kind="stable")


def texts_repeat(values: ArrayLike) -> bool | None:
    """Whether a text of ``values`` occurs twice, from their byte keys of up to eight bytes
    sorted (``_byte_keys``; a million ids: ~0.01-0.02 s of CPU against Arrow's hash, ~0.1-0.4 s
    with its fresh table's pages); None when the keys do not apply (a null, texts of several
    widths or of more than eight bytes): the caller finds out some other way."""
    keys = _integer_keys(values)
    if keys is None:
        return None
    keys = np.sort(keys)
    return bool((keys[1:] == keys[:-1]).any())


def _integer_keys(values: ArrayLike) -> np.ndarray | None:
    """The texts' ``_byte_keys`` when they are integers (one width of up to eight bytes)."""
    keyed = _byte_keys(_arrow(values))
    return None if keyed is None or keyed[0].dtype != np.uint64 else keyed[0]


def _arrow(values: ArrayLike) -> pa.Array:
    """``values`` as one Arrow array; an Arrow array or column as it is (``one_array``).

    ``pa.array`` of a ``ChunkedArray`` (a table's column) converts it value by value through
    Python: 0.66 s for a million ids, all of it holding the GIL (the scores file's sort, on its
    thread beside the day's commit)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return one_array(values)
    return one_array(pa.array(values))


def one_array(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``array`` as one Arrow array: a pandas column concatenated from several frames, or
    fetched from DuckDB in record batches, converts to a chunked one. A single chunk is
    returned as it is, not copied (a memory-mapped file's column stays a view of the map)."""
    if not isinstance(array, pa.ChunkedArray):
        return array
    return array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()


__all__ = ["NO_CODE", "codes_of", "one_array", "text_order", "texts_repeat"]
