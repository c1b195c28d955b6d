import datetime as dt

import numpy as np

from headend.model import codes
from headend.vee import VeeConfig, build_grids, estimate, local_calendar, register_spans, validate

from ._data import T0, ivl, registers, series


def bit(name: str) -> int:
    return 1 << codes.QUALITY_BY_NAME[name].bit


EST = bit("estimated")
INTERP = EST | bit("estimated_interpolation")
LIKE = EST | bit("estimated_like_day")
PRORATE = EST | bit("estimated_prorated")
QUIET = {"zero_run_s": 10**7, "flat_run_s": 10**7, "spike_factor": 1e9, "high_factor": 1e9,
             "low_factor": 0.0}


def run(table, cfg, *, interval, regs=None):
    (g,) = build_grids(table, ivl(interval))
    cal = local_calendar(g.t0, g.value.shape[1], g.interval_s, cfg.tz)
    spans = register_spans(g, regs)
    val = validate(g, cal, cfg, spans=spans)
    return g, estimate(g, cal, cfg, suspect=val.suspect, spans=spans)


def test_linear_interpolation_of_a_short_gap():
    _g, est = run(series(0, T0 + 900, 900, [100, 0, 0, 0, 500], missing=[1, 2, 3]),
                 VeeConfig(**QUIET), interval=900)
    np.testing.assert_array_equal(est.mask[0], [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(est.value[0, 1:4], [200, 300, 400])
    np.testing.assert_array_equal(est.quality[0, 1:4], [INTERP] * 3)
    assert est.counts == {"interpolation": 3, "prorated": 0, "like_day": 0}


def test_two_hours_is_the_longest_interpolated_gap():
    cfg = VeeConfig(**QUIET)
    # 8 missing quarter hours = 2 h: interpolated, rounded half to even
    _g, est = run(series(0, T0 + 900, 900, [0] * 10, missing=range(1, 9)), cfg, interval=900)
    np.testing.assert_array_equal(est.quality[0, 1:9], [INTERP] * 8)
    # 9 missing (2 h 15 min) and no like day: still filled, by interpolation as fallback
    _g, est = run(series(0, T0 + 900, 900, [90] + [0] * 9 + [0], missing=range(1, 10)), cfg,
                 interval=900)
    np.testing.assert_array_equal(est.value[0, 1:10], [81, 72, 63, 54, 45, 36, 27, 18, 9])


def hourly_days(days: int, gaps: dict[int, range], outage_day: int | None = None):
    """Hourly meter: value at day d, local hour h = 100 + 10 d + h (Wh)."""
    d = np.repeat(np.arange(days), 24)
    h = np.tile(np.arange(24), days)
    values = 100 + 10 * d + h
    missing = [24 * day + hh for day, hours in gaps.items() for hh in hours]
    q = {24 * outage_day + 12: bit("power_fail")} if outage_day is not None else None
    return series(0, T0 + 3600, 3600, values, missing=missing, quality=q)


def test_like_days_average_three_weekdays_skipping_holidays_and_outage_days():
    # day 0 = Mon 2024-01-01; day 10 = Thu 01-11 misses 06:00-18:00
    # day 8 (Tue 01-09) had an outage, day 7 (Mon 01-08) is a holiday, 5-6 a weekend:
    # like days are 9, 4 and 3
    cfg = VeeConfig(**QUIET, holidays=(dt.date(2024, 1, 8),))
    _g, est = run(hourly_days(14, {10: range(6, 18)}, outage_day=8), cfg, interval=3600)
    cols = 24 * 10 + np.arange(6, 18)
    expect = np.mean([100 + 10 * d + np.arange(6, 18) for d in (9, 4, 3)], axis=0)
    np.testing.assert_array_equal(est.value[0, cols], np.rint(expect))
    np.testing.assert_array_equal(est.quality[0, cols], [LIKE] * 12)
    assert est.counts["like_day"] == 12


def test_like_days_of_a_weekend_day_are_weekend_days_and_holidays():
    # day 13 = Sun 01-14: like days Sat 01-13 (12), holiday Mon 01-08 (7), Sun 01-07 (6)
    cfg = VeeConfig(**QUIET, holidays=(dt.date(2024, 1, 8),))
    _g, est = run(hourly_days(15, {13: range(24)}), cfg, interval=3600)
    cols = 24 * 13 + np.arange(24)
    expect = np.mean([100 + 10 * d + np.arange(24) for d in (12, 7, 6)], axis=0)
    np.testing.assert_array_equal(est.value[0, cols], np.rint(expect))


def test_like_days_look_forward_when_too_few_are_before():
    cfg = VeeConfig(**QUIET)
    # day 1 (Tue) misses its morning: like days are Mon (0), then Wed (2), Thu (3)
    _g, est = run(hourly_days(5, {1: range(6)}), cfg, interval=3600)
    expect = np.mean([100 + 10 * d + np.arange(6) for d in (0, 2, 3)], axis=0)
    np.testing.assert_array_equal(est.value[0, 24:30], np.rint(expect))


def test_like_days_follow_local_time_across_a_dst_change():
    # Paris; value = 10 x local hour + 1 every day. Thu 2024-04-04 misses 10:00-13:00
    # local; like days Wed 3rd, Tue 2nd, Mon 1st. Tue 2024-04-02 misses 09:00-12:00:
    # like days Mon 1st, Fri 29 Mar, Thu 28 Mar (before the change, UTC+1).
    cfg = VeeConfig(**QUIET, tz="Europe/Paris")
    first = 1_711_580_400 + 900  # 2024-03-27T23:00Z = Thu 28 Mar 00:00 local
    n = 96 * 8 - 4
    t = first + 900 * np.arange(n)
    from headend.vee.grid import local_seconds

    local_hour = (local_seconds(t - 900, "Europe/Paris") % 86_400) // 3600
    values = 10 * local_hour + 1
    cal_day = (local_seconds(t - 900, "Europe/Paris") // 86_400)
    day_of = cal_day - cal_day[0]  # 0 = 28 Mar ... 4 = 1 Apr, 5 = 2 Apr, 7 = 4 Apr
    gap1 = np.flatnonzero((day_of == 7) & (local_hour >= 10) & (local_hour < 13))
    gap2 = np.flatnonzero((day_of == 5) & (local_hour >= 9) & (local_hour < 12))
    _g, est = run(series(0, first, 900, values, missing=np.r_[gap1, gap2]), cfg, interval=900)
    np.testing.assert_array_equal(est.value[0, gap1], values[gap1])
    np.testing.assert_array_equal(est.value[0, gap2], values[gap2])
    assert (est.quality[0, np.r_[gap1, gap2]] == LIKE).all()


def test_prorating_a_register_advance_over_a_gap():
    # one day of 15-minute reads of 100 Wh, 12 intervals (3 h) missing, no like day;
    # the register advanced 10,000 Wh: 1,600 Wh are spread evenly, summing exactly
    cfg = VeeConfig(**QUIET)
    values = np.full(96, 100)
    regs = registers(0, [T0, T0 + 86_400], [50_000, 60_000])
    _g, est = run(series(0, T0 + 900, 900, values, missing=range(40, 52)), cfg, interval=900,
                 regs=regs)
    np.testing.assert_array_equal(est.value[0, 40:52], [133, 134, 133] * 4)
    assert est.value[0, 40:52].sum() == 1600
    np.testing.assert_array_equal(est.quality[0, 40:52], [PRORATE] * 12)


def test_prorating_follows_the_like_day_shape():
    # three weekdays of hourly reads; day 3 (Thu) misses 06:00-12:00, registers bracket day 3
    cfg = VeeConfig(**QUIET)
    table = hourly_days(5, {3: range(6, 12)})
    day3 = 100 + 30 + np.arange(24)
    advance = int(day3.sum()) + 600  # the missing hours used 600 Wh more than usual
    regs = registers(0, [T0 + 3 * 86_400, T0 + 4 * 86_400], [0, advance])
    _g, est = run(table, cfg, interval=3600, regs=regs)
    cols = 72 + np.arange(6, 12)
    shape = np.mean([100 + 10 * d + np.arange(6, 12) for d in (2, 1, 0)], axis=0)
    residual = day3[6:12].sum() + 600
    assert est.value[0, cols].sum() == residual
    np.testing.assert_allclose(est.value[0, cols], residual * shape / shape.sum(), atol=1)
    assert (est.quality[0, cols] == PRORATE).all()


def test_cells_outside_a_meters_span_are_not_estimated():
    t = series(0, T0 + 900, 900, [1, 2, 3])
    t2 = series(1, T0 + 900 * 5, 900, [1, 0, 3], missing=[1])
    import pyarrow as pa

    (g,) = build_grids(pa.concat_tables([t, t2]), ivl(900, 900))
    cal = local_calendar(g.t0, g.value.shape[1], 900)
    est = estimate(g, cal, VeeConfig(**QUIET))
    np.testing.assert_array_equal(est.mask, [[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]])
