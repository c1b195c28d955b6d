"""The projected similarity kernel returns the exact top-k where it must."""

import numpy as np
import pytest

from headend.analytics import liu
from headend.analytics import similarity as S
from headend.errors import ConfigError


def _exact(x, k, rows=None):
    return liu.similarity(x, k, rows=rows, method="exact")


def test_projected_with_every_row_a_candidate_is_exact():
    x = np.random.default_rng(1).gamma(2.0, 1.0, (60, 48))
    other, cos = liu.similarity(x, 5, method="projected", candidates=59, dims=4)
    eo, ec = _exact(x, 5)
    np.testing.assert_array_equal(other, eo)
    np.testing.assert_allclose(cos, ec, rtol=0, atol=1e-12)


def test_projected_is_exact_on_data_within_the_subspace():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 96))  # rank 3 <= dims
    x[7, 5] = np.nan  # missing hour counts as 0: x stays in a rank-4 space
    other, cos = liu.similarity(x, 5, method="projected", candidates=20, dims=8)
    eo, ec = _exact(x, 5)
    np.testing.assert_array_equal(other, eo)
    np.testing.assert_allclose(cos, ec, rtol=0, atol=1e-12)
    assert S.recall_at_k(other, eo) == 1.0


def test_projected_rows_match_the_whole_result():
    x = np.random.default_rng(3).gamma(2.0, 1.0, (80, 24))
    other, cos = liu.similarity(x, 3, method="projected", candidates=79)
    rows = np.array([5, 0, 79])
    o2, c2 = liu.similarity(x, 3, rows=rows, method="projected", candidates=79)
    np.testing.assert_array_equal(o2, other[rows])
    np.testing.assert_array_equal(c2, cos[rows])
    assert not (other == np.arange(80)[:, None]).any()  # never itself


def test_recall_at_k_counts_shared_neighbours():
    assert S.recall_at_k(np.array([[1, 2], [0, 3]]), np.array([[2, 1], [0, 2]])) == 0.75


def test_unknown_method_is_rejected():
    with pytest.raises(ConfigError, match="similarity method"):
        liu.similarity(np.ones((3, 4)), 1, method="lsh")


def test_candidate_cut_keeps_the_exact_top_c():
    a = np.random.default_rng(4).normal(size=(50, 2000)).astype(np.float32)
    a[3] = 1.0  # all equal: the cut keeps every column, any c of them are the top
    cut = S._cutoffs(a, 20)
    assert np.isfinite(cut).all()
    for row, k in zip(a, cut):
        got = np.sort(row[S._top(row, 20, k)])
        np.testing.assert_array_equal(got, np.sort(row)[-20:])
