"""The customer index: each stored learner's record by id, from a memory-mapped sidecar."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from features.validation import load_customers
from serving.infra.customer_index import CustomerIndex


def customers_frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "product_tag", "enrolled_at", "mrr"])
    return frame.assign(
        enrolled_at=pd.to_datetime(frame["enrolled_at"], utc=True, format="ISO8601")
    )


@pytest.fixture
def customers_path(tmp_path):
    path = tmp_path / "customers.parquet"
    customers_frame(
        [
            ["B-2", "PT_002", "2024-03-05 10:00:00", 49.0],
            ["A-1", "PT_001", "2024-03-01 09:30:00.123456", None],
            ["Zoë", "PT_003", "2024-01-01 00:00:00", 0.0],
        ]
    ).to_parquet(path, index=False)
    return path


def test_every_stored_customer_comes_back_as_the_contract_reads_them(simulated_log, tmp_path):
    # given the simulated customers indexed
    path = simulated_log.events_path.parent / "customers.parquet"
    index = CustomerIndex.open(path, tmp_path / "index")
    expected, _ = load_customers(path)
    # when each learner is looked up by id, then the record is the file's
    assert len(index) == len(expected) > 100
    for row in expected.itertuples():
        found = index.customer(row.customer_id)
        assert found.product_tag == row.product_tag
        assert found.enrolled_us == row.enrolled_at.value // 1000
        assert (math.isnan(found.mrr) and pd.isna(row.mrr)) or found.mrr == row.mrr


def test_nulls_non_ascii_ids_and_unknown_ids(customers_path, tmp_path):
    index = CustomerIndex.open(customers_path, tmp_path / "index")
    assert math.isnan(index.customer("A-1").mrr)
    assert index.customer("A-1").enrolled_us % 1_000_000 == 123456
    assert index.customer("Zoë").product_tag == "PT_003" and "Zoë" in index
    for unknown in ("", "A", "B-3", "a-much-longer-id-than-any-stored", 7):
        assert unknown not in index
    assert index.customer("B-3") is None


def test_a_file_breaking_the_contract_is_refused_naming_the_problem(tmp_path):
    # given customers with an unknown product tag
    path = tmp_path / "customers.parquet"
    customers_frame([["A", "PT_999", "2024-03-01", 10.0]]).to_parquet(path, index=False)
    # when indexed, then the error names the file and the column, and nothing is left to read
    with pytest.raises(ValueError, match=r"customers\.parquet.*product_tag"):
        CustomerIndex.open(path, tmp_path / "index")
    assert not list((tmp_path / "index").glob("v*"))


def test_a_new_version_of_the_file_is_indexed_again(customers_path, tmp_path):
    first = CustomerIndex.open(customers_path, tmp_path / "index")
    assert "C-9" not in first
    customers_frame([["C-9", "PT_001", "2024-02-01", 5.0]]).to_parquet(customers_path, index=False)
    later = os.stat(customers_path).st_mtime_ns + 10**9
    os.utime(customers_path, ns=(later, later))
    again = CustomerIndex.open(customers_path, tmp_path / "index")
    assert "C-9" in again and "A-1" not in again
    assert len(list((tmp_path / "index").glob("v*"))) == 1
