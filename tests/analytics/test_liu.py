import numpy as np

from headend.analytics import liu


def test_histogram_ten_equal_width_buckets_between_min_and_max():
    x = np.array([
        np.arange(11, dtype=float),  # 0..10: one per bucket, the maximum joins bucket 9
        np.full(11, 3.0),  # flat: everything in bucket 0
        np.r_[np.arange(10.0), np.nan],  # NaN not counted; 0..9 -> buckets 0,1,2,...
    ])
    counts, lo, hi = liu.histogram(x)
    np.testing.assert_array_equal(counts[0], [1] * 9 + [2])
    np.testing.assert_array_equal(counts[1], [11] + [0] * 9)
    # (v - 0) / 9 * 10: 0,1.1,2.2,...,8.9,10 -> 0,1,2,3,4,5,6,7,8,9(10 clipped)
    np.testing.assert_array_equal(counts[2], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(lo, [0, 3, 0])
    np.testing.assert_array_equal(hi, [10, 3, 9])


def temps(n_repeat: int = 5) -> np.ndarray:
    return np.tile(np.arange(-5.0, 36.0), n_repeat)  # integer degrees, 5 hours each


def test_threeline_household_linear_in_temperature():
    t = temps()
    x = (0.5 + 0.1 * t)[None, :]
    fits = liu.threeline(x, t)
    for q in (10.0, 90.0):
        f = fits[q]
        np.testing.assert_allclose([f.s1[0], f.s2[0], f.s3[0]], [0.1, 0.1, 0.1], atol=1e-9)
        np.testing.assert_allclose(f.a[0], 0.5, atol=1e-9)
        assert f.sse[0] < 1e-20 and f.points[0] == 41
        # every breakpoint pair fits exactly: the first one wins
        assert (f.k1[0], f.k2[0]) == (-4.0, -3.0)


def test_threeline_recovers_heating_base_cooling():
    t = temps()
    y = 2 + 0.3 * np.maximum(10 - t, 0) + 0.2 * np.maximum(t - 20, 0)
    # add a spread so the 10th and 90th percentiles differ: +-1 on alternate repeats
    spread = np.repeat([0.0, 1.0, -1.0, 0.5, -0.5], 41)
    x = (y + spread)[None, :]
    fits = liu.threeline(x, t)
    for q, shift in ((10.0, -0.8), (90.0, 0.8)):  # linear interpolation of 5 points
        f = fits[q]
        assert (f.k1[0], f.k2[0]) == (10.0, 20.0)
        np.testing.assert_allclose([f.s1[0], f.s2[0], f.s3[0]], [-0.3, 0.0, 0.2], atol=1e-9)
        np.testing.assert_allclose(f.a[0], 5.0 + shift, atol=1e-9)


def test_par_recovers_the_generating_model():
    rng = np.random.default_rng(7)
    d = 40
    temp = rng.uniform(-10, 35, d * 24)
    c, a1, a2, a3, bc, bh, bk = 1.0, 0.5, 0.2, 0.1, 0.05, 0.03, 0.02
    y = np.zeros((d, 24))
    y[:3] = rng.uniform(1, 2, (3, 24))
    tt = temp.reshape(d, 24)
    for day in range(3, d):
        tcur = tt[day]
        y[day] = (c + a1 * y[day - 1] + a2 * y[day - 2] + a3 * y[day - 3]
                  + bc * np.maximum(tcur - 20, 0) + bh * np.maximum(16 - tcur, 0)
                  + bk * np.maximum(5 - tcur, 0))
    p = liu.par(y.reshape(1, -1), temp)
    np.testing.assert_allclose(p.coef[0], np.tile([c, a1, a2, a3, bc, bh, bk], (24, 1)),
                               atol=1e-7)
    np.testing.assert_array_equal(p.n[0], np.full(24, d - 3))
    assert (p.rmse[0] < 1e-9).all()


def test_par_skips_days_with_missing_values():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (1, 10 * 24))
    x[0, 5 * 24 + 3] = np.nan  # day 5, hour 3: lost as a target and as lag 1..3 of days 6-8
    p = liu.par(x, rng.uniform(0, 30, 10 * 24))
    assert p.n[0, 3] == 7 - 4 and p.n[0, 2] == 7


def test_similarity_top_k_by_cosine():
    x = np.array([[1.0, 0, 0], [2.0, 0, 0], [1.0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    other, cos = liu.similarity(x, 2)
    np.testing.assert_array_equal(other[0], [1, 2])
    np.testing.assert_allclose(cos[0], [1.0, np.sqrt(0.5)])
    np.testing.assert_array_equal(other[2], [0, 1])  # equal cosines: lower row first
    np.testing.assert_array_equal(other[3], [0, 1])  # all zero: lower rows first
    np.testing.assert_allclose(cos[3], [0.0, 0.0])
    np.testing.assert_allclose(cos[4], [0.0, 0.0])
    o2, _c2 = liu.similarity(x, 2, rows=np.array([2]), block=1)
    np.testing.assert_array_equal(o2, other[[2]])


def test_anomaly_z_score_against_previous_days():
    daily = np.array([[10, 12, 10, 12, 10, 12, 10, 30.0],
                      [10, 10, 10, 10, 10, 10, 10, 10.0],
                      [np.nan] * 5 + [1, 2, 30.0]])
    total, mean, std, z, flag = liu.anomaly(daily, 7)
    hist = daily[0, :7]
    np.testing.assert_allclose(mean[0], hist.mean())
    np.testing.assert_allclose(std[0], hist.std(ddof=1))
    np.testing.assert_allclose(z[0], (30 - hist.mean()) / hist.std(ddof=1))
    assert flag.tolist() == [True, False, False]
    assert np.isnan(z[1]) and np.isnan(z[2])  # flat history; too short history
    np.testing.assert_array_equal(total, [30, 10, 30])
