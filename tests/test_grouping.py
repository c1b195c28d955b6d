"""``headend._grouping.unique_inverse`` answers as ``np.unique(..., return_inverse=True)``."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from headend._grouping import unique_inverse


@given(arrays(np.int64, st.integers(0, 300), elements=st.integers(-5, 40)))
def test_matches_numpy_unique(keys: np.ndarray) -> None:
    uniq, inv = unique_inverse(keys)
    want_u, want_i = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(uniq, want_u)
    np.testing.assert_array_equal(inv, want_i.reshape(-1))
    assert inv.dtype == np.int64 and uniq.dtype == keys.dtype


def test_packed_device_time_keys_of_sorted_meters() -> None:
    # rows sorted by meter then time, keys (transformer << 32 | time): the rules' case
    meter = np.repeat(np.arange(40), 96)
    t = np.tile(1_767_225_600 + 900 * np.arange(96), 40)
    packed = ((meter // 8).astype(np.int64) << 32) | t
    uniq, inv = unique_inverse(packed)
    assert len(uniq) == 5 * 96
    np.testing.assert_array_equal(uniq[inv], packed)
    assert np.all(np.diff(uniq) > 0)


def test_empty_and_unsigned() -> None:
    u, i = unique_inverse(np.zeros(0, np.uint64))
    assert len(u) == 0 and len(i) == 0 and u.dtype == np.uint64
    u, i = unique_inverse(np.array([3, 1, 3, 2**63], np.uint64))
    assert u.tolist() == [1, 3, 2**63] and i.tolist() == [1, 0, 1, 2]
