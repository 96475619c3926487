"""The pairs' temporary tables: distinct pairs in key order, as pandas would make them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.infra.pair_tables import unique_pairs


@pytest.mark.parametrize("seed", range(6))
def test_unique_pairs_are_pandas_distinct_pairs_in_key_order(seed):
    # given pairs that repeat, in no order, some ids and campaigns missing, with a column
    # whose value differs between the rows of one pair
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(0, 400))
    learners = np.array([f"C{n:03d}" for n in range(60)] + [None], dtype=object)
    campaigns = np.array(["CP_01", "CP_12", "CP_22", None], dtype=object)
    pairs = pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice(learners, rows), dtype="str"),
            "campaign_id": rng.choice(campaigns, rows),
            "since": pd.Series(rng.integers(0, 1000, rows)),
        }
    ).set_index(pd.Index(rng.permutation(rows) * 3))
    # when made distinct
    got = unique_pairs(pairs)
    # then they are pandas' drop_duplicates (each pair's first row) sorted by the pair, nulls
    # last, rows and index labels alike
    keys = ["customer_id", "campaign_id"]
    expected = pairs.drop_duplicates(keys).sort_values(keys, na_position="last", kind="stable")
    pd.testing.assert_frame_equal(got, expected)
