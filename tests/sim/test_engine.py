"""iter_uploads without faults: shapes, values, registers, determinism."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.model.codes import READING_TYPE_BY_NAME, REGISTER_TYPE_BY_NAME
from headend.model.schema import EVENTS, READS, REGISTERS
from headend.sim import build_utility, iter_uploads

RT = {k: v.code for k, v in READING_TYPE_BY_NAME.items()}
REG = {k: v.code for k, v in REGISTER_TYPE_BY_NAME.items()}


def _np(t: pa.Table, col: str) -> np.ndarray:
    c = t.column(col)
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    return c.to_numpy()


def test_cycles_and_schemas(clean):
    u = clean.u
    assert len(clean.uploads) == 2 * 96 == u.n_cycles
    per_cycle = 2 * u.n_electric + len(u.solar_idx) + u.n_water + u.n_gas
    for up in clean.uploads:
        cycle_time, reads, registers, events = up
        assert cycle_time == up.cycle_time and cycle_time.tzinfo is not None
        assert reads.schema == READS and registers.schema == REGISTERS
        assert events.schema == EVENTS
        assert reads.num_rows == per_cycle
        assert (_np(reads, "interval_end") == up.cycle_s).all()
        assert (up.reads_tag == up.cycle * 4).all()
        assert events.num_rows == 0
    times = [up.cycle_s for up in clean.uploads]
    assert times[0] == u.start_s + 900 and np.all(np.diff(times) == 900)
    # registers: initial snapshot in the first cycle, then one per midnight
    with_regs = [up.cycle for up in clean.uploads if up.registers.num_rows]
    assert with_regs == [1, 96, 192]


def test_channels_per_meter(clean):
    u = clean.u
    r = clean.uploads[40].reads
    m, t = _np(r, "meter_idx"), _np(r, "reading_type")
    ne, nw = u.n_electric, u.n_water
    assert set(t[m < ne]) == {RT["kwh_del"], RT["volts"], RT["kwh_rec"]}
    np.testing.assert_array_equal(np.sort(m[t == RT["kwh_rec"]]), u.solar_idx)
    assert (t[(m >= ne) & (m < ne + nw)] == RT["water_m3"]).all()
    assert (t[m >= ne + nw] == RT["gas_m3"]).all()
    # one row per key
    key = m.astype(np.int64) * 8 + t
    assert len(np.unique(key)) == len(key)
    # rows are grouped by collector, meters ascending within a collector
    coll = u.meter_collector[m]
    assert (np.diff(coll) >= 0).all()


def test_values_plausible(clean):
    u = clean.u
    r = clean.reads
    m, t, v = _np(r, "meter_idx"), _np(r, "reading_type"), _np(r, "value")
    end = _np(r, "interval_end")
    assert (_np(r, "quality") == 0).all()
    assert (v >= 0).all()
    volts = v[t == RT["volts"]] / 10
    assert 225 < volts.min() and volts.max() < 255
    assert abs(np.median(volts) - 240) < 3
    kwh = v[t == RT["kwh_del"]]
    res = u.customer_class[m[t == RT["kwh_del"]]] == 0
    daily_res = kwh[res].sum() / 1000 / res.sum() * 96  # kWh per residential meter-day
    assert 8 < daily_res < 40
    # evening peak above night for residential
    hour = (end[t == RT["kwh_del"]] % 86400) // 3600
    assert kwh[res & (hour == 19)].mean() > 1.3 * kwh[res & (hour == 3)].mean()
    # PV export only in daylight
    rec = t == RT["kwh_rec"]
    h_rec = (end[rec] % 86400) // 3600
    assert v[rec][(h_rec < 6) | (h_rec > 19)].sum() == 0
    assert v[rec][(h_rec >= 11) & (h_rec <= 14)].sum() > 0
    water = v[t == RT["water_m3"]]
    assert (water == 0).mean() > 0.2 and water.max() > 0
    gas = v[t == RT["gas_m3"]]
    assert gas.mean() > 0


def _interval_sums(r: pa.Table, rtype: int, lo: int, hi: int) -> dict[int, int]:
    t = _np(r, "reading_type")
    end = _np(r, "interval_end")
    sel = (t == rtype) & (end > lo) & (end <= hi)
    m = _np(r, "meter_idx")[sel]
    s = np.bincount(m, weights=_np(r, "value")[sel].astype(np.float64))
    return {int(i): int(s[i]) for i in np.unique(m)}


def _reg(g: pa.Table, reg: int, when: int) -> dict[int, int]:
    sel = (_np(g, "register") == reg) & (_np(g, "read_time") == when)
    return dict(zip(_np(g, "meter_idx")[sel].tolist(), _np(g, "value")[sel].tolist(),
                    strict=True))


def test_register_advance_equals_interval_sum(clean):
    u = clean.u
    r, g = clean.reads, clean.registers
    d0, d1, d2 = u.start_s, u.start_s + 86400, u.start_s + 2 * 86400
    for rt, reg in (("kwh_del", "kwh_del_total"), ("kwh_rec", "kwh_rec_total"),
                    ("water_m3", "water_m3_total"), ("gas_m3", "gas_m3_total")):
        for lo, hi in ((d0, d1), (d1, d2)):
            sums = _interval_sums(r, RT[rt], lo, hi)
            a, b = _reg(g, REG[reg], lo), _reg(g, REG[reg], hi)
            assert len(sums) > 0 and set(sums) == set(a) == set(b)
            assert all(b[m] - a[m] == sums[m] for m in sums), (rt, lo)
    # TOU registers split the same energy
    lo, hi = d1, d2
    sums = _interval_sums(r, RT["kwh_del"], lo, hi)
    ta, tb = _reg(g, REG["kwh_del_tou_a"], lo), _reg(g, REG["kwh_del_tou_a"], hi)
    ua, ub = _reg(g, REG["kwh_del_tou_b"], lo), _reg(g, REG["kwh_del_tou_b"], hi)
    tot = _reg(g, REG["kwh_del_total"], hi)
    assert all((tb[m] - ta[m]) + (ub[m] - ua[m]) == sums[m] for m in sums)
    assert all(tb[m] + ub[m] == tot[m] for m in sums)
    assert sum(tb[m] - ta[m] for m in sums) > 0  # 16-21 h on a weekday (2026-01-06)


def test_kw_max(clean):
    u = clean.u
    r, g = clean.reads, clean.registers
    hi = u.start_s + 86400
    t, end = _np(r, "reading_type"), _np(r, "interval_end")
    sel = (t == RT["kwh_del"]) & (end > u.start_s) & (end <= hi)
    mx = np.zeros(u.n_electric, np.int64)
    np.maximum.at(mx, _np(r, "meter_idx")[sel], _np(r, "value")[sel])
    kw = _reg(g, REG["kw_max"], hi)
    assert len(kw) == u.n_electric
    assert all(kw[m] == mx[m] * 4 for m in kw)  # W = Wh per 15 min x 4
    assert not _reg(g, REG["kw_max"], u.start_s)  # no day behind the first snapshot


def test_deterministic():
    a = list(iter_uploads(build_utility(800, seed=9)))
    b = list(iter_uploads(build_utility(800, seed=9)))
    c = list(iter_uploads(build_utility(800, seed=10)))
    assert len(a) == len(b) == 96
    assert all(x.reads.equals(y.reads) and x.registers.equals(y.registers)
               for x, y in zip(a, b, strict=True))
    assert not a[50].reads.equals(c[50].reads)


def test_intervals_5_and_60_minutes():
    u5 = build_utility(300, seed=1, interval_s=300)
    ups = list(iter_uploads(u5))
    assert len(ups) == 288
    assert ups[0].cycle_s == u5.start_s + 300
    u60 = build_utility(300, seed=1, interval_s=3600, network="plc")
    ups = list(iter_uploads(u60))
    assert len(ups) == 24
    # hourly energy is about 4x a 15-minute interval
    r60 = pa.concat_tables(up.reads for up in ups)
    u15 = build_utility(300, seed=1)
    r15 = pa.concat_tables(up.reads for up in iter_uploads(u15))
    e60 = pc.sum(r60.filter(pc.equal(r60["reading_type"], RT["kwh_del"]))["value"]).as_py()
    e15 = pc.sum(r15.filter(pc.equal(r15["reading_type"], RT["kwh_del"]))["value"]).as_py()
    assert 0.9 < e60 / e15 < 1.1
