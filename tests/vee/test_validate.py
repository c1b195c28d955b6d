import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.model import codes
from headend.vee import VeeConfig, build_grids, local_calendar, register_spans, validate
from headend.vee.validate import in_long_run

from ._data import T0, ivl, registers, series


def bit(name: str) -> int:
    return 1 << codes.QUALITY_BY_NAME[name].bit


VALID = bit("validated")
FAILED = bit("failed_validation")
# thresholds that keep every other rule quiet unless a test sets them
QUIET = {"zero_run_s": 10**7, "flat_run_s": 10**7, "spike_factor": 1e9, "high_factor": 1e9,
             "low_factor": 0.0}


def run(table, cfg, *, regs=None, now=None, interval=900):
    (g,) = build_grids(table, ivl(interval))
    cal = local_calendar(g.t0, g.value.shape[1], g.interval_s, cfg.tz)
    spans = register_spans(g, regs)
    return validate(g, cal, cfg, spans=spans, now=now)


def flags_of(res, name):
    return (res.flags[0] & bit(name)) != 0 if name != "failed_validation" else \
        (res.flags[0] & FAILED) != 0


def test_clean_reads_are_validated():
    res = run(series(0, T0 + 900, 900, [100, 120, 110, 130]), VeeConfig(**QUIET))
    np.testing.assert_array_equal(res.flags[0], [VALID] * 4)
    assert not res.suspect.any()


def test_negative_and_impossible_values_fail_validation():
    # 2000 kWh per 15 min is the physical maximum of kwh_del: 2_000_000 Wh
    res = run(series(0, T0 + 900, 900, [-5, 100, 2_000_001, 2_000_000]), VeeConfig(**QUIET))
    np.testing.assert_array_equal(res.flags[0], [FAILED, VALID, FAILED, VALID])
    assert res.counts["impossible"] == 2


def test_zero_consumption_for_n_intervals():
    cfg = VeeConfig(**{**QUIET, "zero_run_s": 3600})  # 4 quarter hours
    res = run(series(0, T0 + 900, 900, [5, 0, 0, 0, 0, 5, 0, 0, 0, 5]), cfg)
    expect = [False, True, True, True, True, False, False, False, False, False]
    np.testing.assert_array_equal(flags_of(res, "zero_consumption"), expect)
    np.testing.assert_array_equal(res.flags[0][1], FAILED | bit("zero_consumption"))
    assert res.counts["zero_consumption"] == 4


def test_zero_run_is_broken_by_a_missing_interval():
    cfg = VeeConfig(**{**QUIET, "zero_run_s": 3600})
    res = run(series(0, T0 + 900, 900, [5, 0, 0, 0, 0, 0, 5], missing=[3]), cfg)
    assert not flags_of(res, "zero_consumption").any()


def test_flat_line_of_a_repeated_non_zero_value():
    cfg = VeeConfig(**{**QUIET, "flat_run_s": 3600})
    res = run(series(0, T0 + 900, 900, [1, 7, 7, 7, 7, 2, 7, 7, 7, 3]), cfg)
    np.testing.assert_array_equal(flags_of(res, "flat_line"),
                                  [0, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def test_spike_against_both_neighbours():
    cfg = VeeConfig(**{**QUIET, "spike_factor": 10.0, "spike_min": 1.0})
    # 5000 Wh > 10 x 100 and 4900 Wh > 1 kWh: spike; 900 Wh is below spike_min
    res = run(series(0, T0 + 900, 900, [100, 100, 5000, 100, 90, 900, 80]), cfg)
    np.testing.assert_array_equal(flags_of(res, "spike"), [0, 0, 1, 0, 0, 0, 0])
    # first and last cells have one neighbour only: never spikes
    res = run(series(0, T0 + 900, 900, [9000, 100, 100, 9000]), cfg)
    assert not flags_of(res, "spike").any()


def test_high_against_the_meters_own_history():
    cfg = VeeConfig(**{**QUIET, "high_factor": 5.0, "high_min": 0.5})
    values = [1000] * 20 + [5001, 5000]
    res = run(series(0, T0 + 900, 900, values), cfg)
    # 95th percentile (lower nearest rank) = 1000 Wh; limit 5 x 1000 = 5000 Wh
    np.testing.assert_array_equal(flags_of(res, "high_vs_history"), [0] * 20 + [1, 0])


def test_high_uses_the_floor_for_meters_that_use_almost_nothing():
    cfg = VeeConfig(**{**QUIET, "high_factor": 5.0, "high_min": 0.5})
    res = run(series(0, T0 + 900, 900, [1] * 30 + [2400, 2600]), cfg)
    # p95 = 1 Wh is below the 0.5 kWh floor: limit 5 x 500 Wh = 2500 Wh
    np.testing.assert_array_equal(flags_of(res, "high_vs_history"), [0] * 30 + [0, 1])


def test_low_day_against_median_of_complete_days():
    cfg = VeeConfig(**{**QUIET, "low_factor": 0.1})
    day = np.arange(96) % 7 + 100  # about 9.9 kWh a day
    values = np.concatenate([day, day, day // 20, day])  # third day ~0.5 kWh
    res = run(series(0, T0 + 900, 900, values), cfg)
    low = flags_of(res, "low_vs_history")
    np.testing.assert_array_equal(low, np.repeat([False, False, True, False], 96))
    assert res.counts["low_vs_history"] == 96


def test_low_day_on_a_dst_day_counts_92_intervals_as_complete():
    # Paris, 2024-03-30 .. 04-01; the 31st has 92 quarter hours and uses little
    cfg = VeeConfig(**{**QUIET, "low_factor": 0.5, "tz": "Europe/Paris"})
    start = 1_711_753_200 + 900  # first interval ends 00:15 local on the 30th
    values = np.concatenate([np.full(96, 100), np.full(92, 10), np.full(96, 100)])
    values = values + (np.arange(len(values)) % 3)
    res = run(series(0, start, 900, values), cfg)
    low = flags_of(res, "low_vs_history")
    np.testing.assert_array_equal(low, np.r_[np.zeros(96), np.ones(92), np.zeros(96)])


def test_register_advance_against_interval_sum():
    cfg = VeeConfig(**{**QUIET, "register_tol_abs": 0.01, "register_tol_rel": 0.01})
    t = series(0, T0 + 900, 900, [100, 100, 100, 150, 100, 100, 100, 100])
    # first hour: advance 400 Wh but intervals sum 450 Wh; second hour matches
    regs = registers(0, [T0, T0 + 3600, T0 + 7200], [10_000, 10_400, 10_800])
    res = run(t, cfg, regs=regs)
    np.testing.assert_array_equal(flags_of(res, "register_mismatch"), [1] * 4 + [0] * 4)


def test_register_check_skips_spans_with_missing_intervals():
    cfg = VeeConfig(**QUIET)
    t = series(0, T0 + 900, 900, [100, 100, 100, 150, 100], missing=[1])
    regs = registers(0, [T0, T0 + 3600], [0, 999])
    res = run(t, cfg, regs=regs)
    assert not flags_of(res, "register_mismatch").any()


def test_time_check_from_meter_clock_flags_and_clock_skew():
    cfg = VeeConfig(**{**QUIET, "max_clock_skew_s": 300})
    q = {1: bit("clock_set_forward"), 2: bit("long_interval")}
    t = series(0, T0 + 900, 900, [100, 100, 100, 100, 100], quality=q)
    # 'now' is just after the 4th interval end: the 5th is in the future
    res = run(t, cfg, now=T0 + 4 * 900 + 10)
    np.testing.assert_array_equal(flags_of(res, "time_check"), [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(flags_of(res, "failed_validation"), [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(res.flags[0][[0, 3]], [VALID, VALID])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.integers(1, 14), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_in_long_run_matches_a_plain_run_scan(m, t, n, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2, (m, t)).astype(float)
    member = rng.random((m, t)) > 0.2
    expect = np.zeros((m, t), bool)
    for r in range(m):
        j = 0
        while j < t:
            if not member[r, j]:
                j += 1
                continue
            k = j
            while k + 1 < t and member[r, k + 1] and v[r, k + 1] == v[r, j]:
                k += 1
            expect[r, j:k + 1] = k - j + 1 >= n
            j = k + 1
    np.testing.assert_array_equal(in_long_run(v, member, n), expect)
