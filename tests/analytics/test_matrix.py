import numpy as np

from headend.analytics.matrix import _dense_unique


def test_dense_unique_is_np_unique():
    for m in (np.array([5, 3, 5, 9, 3], np.int32), np.array([7], np.int32),
              np.array([0, 2_000_000_000, 0], np.int32)):  # sparse: the sort path
        rows, inv = _dense_unique(m)
        r2, i2 = np.unique(m, return_inverse=True)
        np.testing.assert_array_equal(rows, r2)
        np.testing.assert_array_equal(inv, i2)
        assert rows.dtype == np.int32
