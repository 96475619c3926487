"""The stored customers by id, memory-mapped: no process of the service loads them whole.

A service with millions of learners used to read ``customers.parquet`` into a pandas frame in
every process that assembles features (seconds and hundreds of MB per million learners, at each
start). ``CustomerIndex.open`` keeps a sidecar beside the file instead (``serving.infra.sidecars``:
built once per version of the file, under a lock, from the customers as
``features.validation.valid_customers`` checks them; a file that breaks the contract is refused
with the contract's words):

- ``ids.npy``: the ids as sorted fixed-width bytes, looked up by binary search;
- ``enrolled_us.npy`` (int64 microseconds UTC), ``mrr.npy`` (float64, NaN when unknown) and
  ``product.npy`` (int8 positions in ``features.vocabulary.PRODUCT_TAGS``), row for row.

Every array is memory-mapped: a lookup touches a few pages, and the processes share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.online_inputs import Customer
from features.validation import valid_customers
from features.vocabulary import PRODUCT_TAGS
from serving.infra.sidecars import fixed_width, open_sidecar, sorted_position

FORMAT_VERSION = 1
"""Bumped when the sidecar's layout changes: an older sidecar is rebuilt, never misread."""
COLUMNS = ("ids", "enrolled_us", "mrr", "product")
_PRODUCTS = tuple(PRODUCT_TAGS)


@dataclass(frozen=True)
class CustomerIndex:
    """The customers' records by id (arrays row for row, sorted by id).

    Attributes:
        ids: sorted fixed-width UTF-8 bytes.
        enrolled_us: enrolment instants (microseconds, UTC).
        mrr: monthly revenue (NaN when unknown).
        product: positions in ``PRODUCT_TAGS``.
    """

    ids: np.ndarray
    enrolled_us: np.ndarray
    mrr: np.ndarray
    product: np.ndarray

    @classmethod
    def open(cls, customers_path: Path, index_root: Path) -> CustomerIndex:
        """The index of ``customers_path``: reused when ``index_root`` holds it, else built.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file breaks the customer contract (naming each problem).
            OSError: the index cannot be written under ``index_root``.
        """
        directory = open_sidecar(customers_path, index_root, version=FORMAT_VERSION, write=_write)
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in COLUMNS}
        return cls(**arrays)

    @classmethod
    def empty(cls) -> CustomerIndex:
        """No customers."""
        return cls(*_arrays(_no_customers()))

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, customer_id: str) -> int:
        """The learner's row, or -1 when the file does not hold them."""
        return sorted_position(self.ids, customer_id)

    def __contains__(self, customer_id: object) -> bool:
        return isinstance(customer_id, str) and self.position(customer_id) >= 0

    def customer(self, customer_id: str) -> Customer | None:
        """The learner's record, or None for a learner the file does not hold."""
        position = self.position(customer_id)
        if position < 0:
            return None
        return Customer(
            customer_id=customer_id,
            product_tag=_PRODUCTS[int(self.product[position])],
            enrolled_us=int(self.enrolled_us[position]),
            mrr=float(self.mrr[position]),
        )


def _write(customers_path: Path, directory: Path) -> dict:
    """Check the customers against the contract and write the arrays sorted by id."""
    try:
        frame = valid_customers(customers_path)
    except ValueError as error:
        raise ValueError(f"{customers_path}: {error}") from None
    for name, array in zip(COLUMNS, _arrays(frame), strict=True):
        np.save(directory / f"{name}.npy", array)
    return {"customers": len(frame)}


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """The customers' columns as arrays sorted by id (ids are unique: the contract says so)."""
    ids = fixed_width(pa.chunked_array([pa.array(frame["customer_id"].astype(str))]))
    order = np.argsort(ids, kind="stable")
    enrolled = frame["enrolled_at"].dt.tz_convert("UTC").dt.tz_localize(None)
    enrolled_us = enrolled.astype("datetime64[us]").to_numpy().view("int64")
    mrr = frame["mrr"].to_numpy(dtype="float64", na_value=np.nan)
    product = pd.Categorical(frame["product_tag"].astype(str), categories=_PRODUCTS).codes
    return ids[order], enrolled_us[order], mrr[order], product.astype("int8")[order]


def _no_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "product_tag": pd.Series(dtype="str"),
            "enrolled_at": pd.Series(dtype="datetime64[us, UTC]"),
            "mrr": pd.Series(dtype="float64"),
        }
    )


__all__ = ["FORMAT_VERSION", "CustomerIndex"]
