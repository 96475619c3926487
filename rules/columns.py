"""A frame's columns as arrays, taken out once: what the engine reads instead of ``frame[name]``.

Reading a column of a DataFrame builds a Series (an index lookup, a block lookup, a new object):
on pandas 3 about 0.1 ms each on these shared cores, and deciding one learner read some two
hundred. ``Columns`` takes every column out in one pass over the frame's blocks and hands out
the values ``frame[name].to_numpy()`` would give, converted once and kept; the raw arrays
(an extension array keeps its dtype, e.g. Arrow strings) stay available for building frames.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd


class Columns:
    """The columns of one frame by name, read like the frame: ``name in columns``,
    ``columns[name]`` (its values as a numpy array, as ``Series.to_numpy()`` gives them) and
    ``len(columns)`` (the number of ROWS, as ``len(frame)``), so code written for a DataFrame's
    columns reads either.

    Attributes:
        rows: the number of rows.
    """

    def __init__(self, arrays: Mapping[str, Any], rows: int) -> None:
        """Wrap ``arrays`` (numpy or pandas extension arrays, each ``rows`` long).

        Raises:
            ValueError: naming a column whose length is not ``rows``.
        """
        for name, array in arrays.items():
            if len(array) != rows:
                raise ValueError(f"columns: {name!r} has {len(array)} values for {rows} rows")
        self._arrays = dict(arrays)
        self._values: dict[str, np.ndarray] = {}
        self.rows = rows

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Columns:
        """Every column of ``frame``, taken out in one pass (no Series is built).

        Raises:
            ValueError: the frame repeats a column name (a name must say which column).
        """
        # The names as a list first: iterating an Arrow-backed Index, or asking it is_unique
        # (a hash table per call), cost half of taking one learner's columns out.
        names = frame.columns.tolist()
        if len(set(names)) != len(names):
            repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
            raise ValueError(f"frame: repeated column names {repeated}")
        # ``_iter_column_arrays`` is pandas' own column walk (``DataFrame.items`` without the
        # Series); tests/rules/test_columns.py pins its values to ``frame[name].to_numpy()``.
        arrays = dict(zip(names, frame._iter_column_arrays(), strict=True))
        return cls(arrays, len(frame))

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __getitem__(self, name: str) -> np.ndarray:
        """The column's values as ``frame[name].to_numpy()`` gives them (converted once)."""
        values = self._values.get(name)
        if values is None:
            array = self._arrays[name]
            values = array if isinstance(array, np.ndarray) else _to_numpy(array, None)
            self._values[name] = values
        return values

    def to_numpy(self, name: str, dtype: Any = None) -> np.ndarray:
        """The column's values as ``frame[name].to_numpy(dtype)`` gives them (not kept)."""
        if dtype is None:
            return self[name]
        array = self._arrays[name]
        if isinstance(array, np.ndarray):
            return np.asarray(array, dtype=dtype)
        return _to_numpy(array, dtype)

    def array(self, name: str) -> Any:
        """The column as stored: a numpy array or a pandas extension array (its dtype kept)."""
        return self._arrays[name]

    def names(self) -> list[str]:
        """The column names, in frame order."""
        return list(self._arrays)

    def with_values(self, changed: Mapping[str, Any]) -> Columns:
        """A copy with some columns replaced or added (arrays of the same length)."""
        return Columns(self._arrays | dict(changed), self.rows)

    def frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        """The columns as a DataFrame (one constructor; the arrays' dtypes kept)."""
        return pd.DataFrame(self._arrays, index=index, copy=False)


def _to_numpy(array: Any, dtype: Any) -> np.ndarray:
    """``array.to_numpy(dtype)``; a categorical of strings through a table of its categories.

    pandas converts a categorical by taking its Arrow-backed categories row by row (~40 us per
    column on one learner, a sixth of serving one); the table holds pandas' own conversion of
    each category and of a missing value, so the values are identical.
    """
    if isinstance(array, pd.Categorical):
        table = _category_table(array.dtype, dtype)
        if table is not None:
            return table[np.asarray(array.codes) + 1]  # code -1 (missing) reads entry 0
    return array.to_numpy(dtype=dtype)


@functools.lru_cache(maxsize=256)
def _category_table(dtype: pd.CategoricalDtype, to: Any) -> np.ndarray | None:
    """Entry 0: what a missing value converts to; entry i + 1: category i. None unless the
    conversion gives objects (numeric categories change dtype when a value is missing)."""
    every = pd.Categorical.from_codes(np.arange(-1, len(dtype.categories)), dtype=dtype)
    table = every.to_numpy(dtype=to)
    return table if table.dtype == object else None


__all__ = ["Columns"]
