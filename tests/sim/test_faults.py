"""Fault scenarios: each kind is in the ground truth and visible in the data."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ConfigError
from headend.model.codes import EVENT, QUALITY_BY_NAME, READING_TYPE_BY_NAME, REGISTER_TYPE_BY_NAME
from headend.sim import (
    GROUND_TRUTH,
    Faults,
    Momentary,
    Outage,
    WaterLeak,
    build_utility,
    iter_uploads,
)

RT = {k: v.code for k, v in READING_TYPE_BY_NAME.items()}
REG = {k: v.code for k, v in REGISTER_TYPE_BY_NAME.items()}
Q = {k: 1 << v.bit for k, v in QUALITY_BY_NAME.items()}
D = 900

KINDS = {"outage", "momentary", "cover_removed", "magnetic_tamper", "reverse_energy",
         "under_voltage", "over_voltage", "water_leak", "spike", "flat_line", "gap",
         "duplicate", "retransmission", "late_upload", "clock_skew"}


def cols(t: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for name in t.column_names:
        c = t.column(name)
        out[name] = (c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_numpy()
    return out


def ts(x: dt.datetime) -> int:
    return int(x.timestamp())


@pytest.fixture(scope="module")
def data(faulted):
    return cols(faulted.reads), cols(faulted.events), cols(faulted.registers)


def test_every_kind_in_ground_truth(faulted):
    gt = faulted.plan.ground_truth()
    assert gt.schema == GROUND_TRUTH
    assert set(gt.column("kind").to_pylist()) == KINDS
    for row in gt.to_pylist():
        assert row["n_meters"] == len(row["meter_idx"]) == len(row["meter_ids"]) >= 1
        assert row["meter_ids"] == [str(100_000_000 + m) for m in row["meter_idx"]]
        assert row["end"] > row["start"]
        json.loads(row["detail"])


def skewed(run) -> list[int]:
    """Meters whose clocks are off (their event times are shifted)."""
    return [x["meter_idx"][0] for x in run.truth("clock_skew")]


def _fully_inside(end: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return (end - D >= lo) & (end <= hi)


def test_outage(faulted, data):
    r, e, _ = data
    (inc,) = faulted.truth("outage")
    assert inc["level"] == "transformer"
    lo, hi, ms = ts(inc["start"]), ts(inc["end"]), np.array(inc["meter_idx"])
    mine = np.isin(r["meter_idx"], ms)
    assert mine.any()
    inside = _fully_inside(r["interval_end"], lo, hi)
    assert not (mine & inside).any()  # no reads while out
    partial = mine & (r["interval_end"] > lo) & (r["interval_end"] - D < hi) & ~inside
    channels = 2 * len(ms) + np.isin(ms, faulted.u.solar_idx).sum()  # kwh_del, volts, kwh_rec
    assert partial.sum() == 2 * channels  # the two partial intervals
    assert (r["quality"][partial] & Q["power_fail"]).all()
    (mom,) = faulted.truth("momentary")  # may hit the same meters: its interval is flagged too
    t_mom = ts(mom["start"]) - ts(mom["start"]) % D + D
    other = mine & ~partial & ~(np.isin(r["meter_idx"], mom["meter_idx"])
                                & (r["interval_end"] == t_mom))
    assert not (r["quality"][other] & Q["power_fail"]).any()
    ev = np.isin(e["meter_idx"], ms) & ~np.isin(e["meter_idx"], skewed(faulted))
    gasp = ev & (e["event_code"] == EVENT.power_fail) & (abs(e["event_time"] - lo) < 60)
    rest = ev & (e["event_code"] == EVENT.power_restored) & (abs(e["event_time"] - hi) < 60)
    ms = ms[~np.isin(ms, skewed(faulted))]
    np.testing.assert_array_equal(np.sort(e["meter_idx"][gasp]), ms)  # no loss by default
    np.testing.assert_array_equal(np.sort(e["meter_idx"][rest]), ms)
    assert ((e["event_time"][gasp] >= lo) & (e["event_time"][gasp] <= lo + 2)).all()
    assert ((e["event_time"][rest] >= hi) & (e["event_time"][rest] < hi + 30)).all()
    assert inc["events_sent"] == 2 * len(ms) and inc["events_lost"] == 0


def test_momentary(faulted, data):
    r, e, _ = data
    (inc,) = faulted.truth("momentary")
    lo, hi, ms = ts(inc["start"]), ts(inc["end"]), np.array(inc["meter_idx"])
    assert hi - lo < 300
    end = lo - lo % D + D
    sel = np.isin(r["meter_idx"], ms) & (r["interval_end"] == end)
    assert sel.sum() >= len(ms)  # nobody's read is missing
    assert (r["quality"][sel] & Q["power_fail"]).all()
    gasps = np.isin(e["meter_idx"], ms) & (e["event_code"] == EVENT.power_fail)
    gasps &= (e["event_time"] >= lo) & (e["event_time"] <= lo + 2)
    np.testing.assert_array_equal(np.sort(e["meter_idx"][gasps]),
                                  ms[~np.isin(ms, skewed(faulted))])


def _meter_reads(r, m, rtype):
    sel = (r["meter_idx"] == m) & (r["reading_type"] == rtype)
    return r["interval_end"][sel], r["value"][sel], r["quality"][sel]


def _event(e, m, code):
    sel = (e["meter_idx"] == m) & (e["event_code"] == code)
    return e["event_time"][sel]


def test_tamper(faulted, data):
    r, e, _ = data
    (cov,) = faulted.truth("cover_removed")
    m, lo = cov["meter_idx"][0], ts(cov["start"])
    assert _event(e, m, EVENT.cover_removed).tolist() == [lo]
    end, _, q = _meter_reads(r, m, RT["kwh_del"])
    flagged = end[(q & Q["tamper"]) != 0]
    assert flagged.tolist() == [lo - lo % D + D]
    (mag,) = faulted.truth("magnetic_tamper")
    m, lo, hi = mag["meter_idx"][0], ts(mag["start"]), ts(mag["end"])
    assert _event(e, m, EVENT.magnetic_tamper).tolist() == [lo]
    end, _, q = _meter_reads(r, m, RT["kwh_del"])
    flagged = (q & Q["tamper"]) != 0
    np.testing.assert_array_equal(flagged, (end > lo) & (end - D < hi))
    assert flagged.sum() == 25  # 6 h = 24 intervals, not on the grid


def test_reverse_energy(faulted, data):
    r, e, _ = data
    (inc,) = faulted.truth("reverse_energy")
    m, lo, hi = inc["meter_idx"][0], ts(inc["start"]), ts(inc["end"])
    assert _event(e, m, EVENT.reverse_energy).tolist() == [lo]
    end, v, q = _meter_reads(r, m, RT["kwh_del"])
    inside = _fully_inside(end, lo, hi)
    assert inside.sum() == 23 and (v[inside] == 0).all()
    assert ((q & Q["reverse_rotation"]) != 0).sum() == 25
    assert (v[(end <= lo) | (end - D >= hi)] > 0).mean() > 0.5


@pytest.mark.parametrize("kind,check", [("under_voltage", lambda v: v < 2200),
                                        ("over_voltage", lambda v: v > 2550)])
def test_voltage(faulted, data, kind, check):
    r, e, _ = data
    (inc,) = faulted.truth(kind)
    lo, hi, ms = ts(inc["start"]), ts(inc["end"]), np.array(inc["meter_idx"])
    sel = np.isin(r["meter_idx"], ms) & (r["reading_type"] == RT["volts"])
    inside = sel & _fully_inside(r["interval_end"], lo, hi)
    outside = sel & ((r["interval_end"] <= lo) | (r["interval_end"] - D >= hi))
    assert inside.sum() == len(ms) and check(r["value"][inside]).all()
    assert not check(r["value"][outside]).any()
    code = EVENT.under_voltage if kind == "under_voltage" else EVENT.over_voltage
    two_way = faulted.u.meters.column("two_way").to_numpy(zero_copy_only=False)
    got = np.isin(e["meter_idx"], ms) & (e["event_code"] == code)
    np.testing.assert_array_equal(np.sort(e["meter_idx"][got]), ms[two_way[ms]])
    assert inc["events_sent"] == two_way[ms].sum()


def test_water_leak(faulted, data):
    r, e, _ = data
    (inc,) = faulted.truth("water_leak")
    m, lo, hi = inc["meter_idx"][0], ts(inc["start"]), ts(inc["end"])
    assert hi - lo >= 86400
    assert _event(e, m, EVENT.water_leak).tolist() == [lo + 86400]
    end, v, _ = _meter_reads(r, m, RT["water_m3"])
    inside = _fully_inside(end, lo, hi)
    assert inside.sum() >= 96 and (v[inside] > 0).all()  # continuous flow >= 24 h
    assert (v[end > hi + D] == 0).any()  # intermittent again afterwards


def test_spike_flat_line_gap(faulted, data):
    r, _, _ = data
    for inc in faulted.truth("spike"):
        m, at = inc["meter_idx"][0], ts(inc["end"])
        end, v, _ = _meter_reads(r, m, RT["kwh_del"])
        assert v[end == at][0] > 8 * np.median(v[end != at])
    for inc in faulted.truth("flat_line"):
        m, lo, hi = inc["meter_idx"][0], ts(inc["start"]), ts(inc["end"])
        end, v, _ = _meter_reads(r, m, RT["kwh_del"])
        flat = v[(end > lo) & (end <= hi)]
        assert len(flat) == 24 and len(set(flat.tolist())) == 1
        assert len(set(v[end > hi].tolist())) > 5
    for inc in faulted.truth("gap"):
        m, lo, hi = inc["meter_idx"][0], ts(inc["start"]), ts(inc["end"])
        end = r["interval_end"][r["meter_idx"] == m]
        assert not ((end > lo) & (end <= hi)).any()
        assert len(np.unique(end)) == 192 - 8


@pytest.mark.parametrize("kind,flag", [("duplicate", 2), ("retransmission", 1)])
def test_resent_uploads(faulted, kind, flag):
    for inc in faulted.truth(kind):
        at, again, ms = ts(inc["start"]), ts(inc["end"]), np.array(inc["meter_idx"])
        assert again == at + D
        orig = next(up for up in faulted.uploads if up.cycle_s == at)
        resend = next(up for up in faulted.uploads if up.cycle_s == again)
        tag = orig.cycle * 4 + flag
        rows = resend.reads.filter(pa.array(resend.reads_tag == tag))
        mine = orig.reads.filter(pa.array(np.isin(orig.reads.column("meter_idx").to_numpy(),
                                                   ms)))
        assert rows.num_rows == mine.num_rows > 0
        assert rows.equals(mine)
        assert set(rows.column("meter_idx").to_numpy()) <= set(ms.tolist())


def test_late_upload(faulted):
    (inc,) = faulted.truth("late_upload")
    lo, hi, ms = ts(inc["start"]), ts(inc["end"]), np.array(inc["meter_idx"])
    held = [up for up in faulted.uploads if lo <= up.cycle_s < hi]
    assert len(held) == 8  # 2 h of cycles
    for up in held:
        assert not np.isin(up.reads.column("meter_idx").to_numpy(), ms).any()
    (late,) = [up for up in faulted.uploads if up.cycle_s == hi]
    tags = late.reads_tag[late.reads_tag != late.cycle * 4]
    created = np.unique(tags // 4)
    np.testing.assert_array_equal(np.sort(created), [up.cycle for up in held])
    # delivered newest first (out of order)
    first_seen = [int(t) // 4 for t in dict.fromkeys(tags.tolist())]
    assert first_seen == sorted(first_seen, reverse=True)
    lr = late.reads.filter(pa.array(late.reads_tag != late.cycle * 4))
    ends = lr.column("interval_end").cast(pa.int64()).to_numpy()
    assert set(ends.tolist()) == {up.cycle_s for up in held}


def test_clock_skew(faulted, data):
    _, _, g = data
    u = faulted.u
    for inc in faulted.truth("clock_skew"):
        m, skew = inc["meter_idx"][0], json.loads(inc["detail"])["skew_s"]
        assert 60 <= abs(skew) <= 900
        times = np.unique(g["read_time"][g["meter_idx"] == m])
        np.testing.assert_array_equal(times, u.start_s + skew + 86400 * np.arange(3))
    other = g["meter_idx"] == 0
    assert set(g["read_time"][other].tolist()) == {u.start_s + 86400 * k for k in range(3)}


def test_storm(storm):
    gt = storm.plan.ground_truth()
    assert set(gt.column("kind").to_pylist()) == {"outage"}
    levels = gt.column("level").to_pylist()
    assert levels.count("transformer") == 300 and levels.count("feeder") == 1
    rows = gt.to_pylist()
    starts = np.array([ts(x["start"]) for x in rows])
    assert starts.max() - starts.min() <= 1800  # simultaneous
    e = cols(storm.events)
    n_meter_outages = sum(x["n_meters"] for x in rows)
    n_dark = len(storm.plan.power_off.meter)  # transformers inside the feeder's outage
    assert n_dark < n_meter_outages  # overlap: one gasp per dark span, not per outage
    gasps = (e["event_code"] == EVENT.power_fail).sum()
    assert abs(gasps / n_dark - 0.7) < 0.03
    sent = sum(x["events_sent"] for x in rows)
    lost = sum(x["events_lost"] for x in rows)
    assert sent + lost == 2 * n_dark
    r = cols(storm.reads)
    for x in rows[:40]:
        lo, hi = ts(x["start"]), ts(x["end"])
        mine = np.isin(r["meter_idx"], x["meter_idx"]) & _fully_inside(r["interval_end"], lo, hi)
        assert not mine.any()


def test_lost_gasps_configurable():
    u = build_utility(4000, seed=2)
    start = dt.datetime(2026, 1, 5, 8, 0, 7, tzinfo=dt.UTC)
    f = Faults((Outage(level="feeder", count=1, start=start, duration_s=1200, gasp_loss=0.5),))
    plan = f.resolve(u)
    (inc,) = plan.incidents
    ev = plan.event_table()
    gasps = (ev.column("event_code").to_numpy() == EVENT.power_fail).sum()
    assert gasps == inc.events_sent - len(inc.meters)  # restorations all arrive
    assert abs(gasps / len(inc.meters) - 0.5) < 0.05
    assert inc.start_s == ts(start)


def test_faults_deterministic_and_validated():
    u = build_utility(2000, seed=4)
    a = Faults.from_names("all").resolve(u).ground_truth()
    b = Faults.from_names(["all"]).resolve(u).ground_truth()
    assert a.equals(b)
    with pytest.raises(ConfigError):
        Faults.from_names("meteor")
    with pytest.raises(ConfigError):
        Faults((Momentary(duration_s=600),)).resolve(u)
    with pytest.raises(ConfigError):
        Faults((WaterLeak(duration_s=3600),)).resolve(u)
    with pytest.raises(ConfigError):
        Faults((Outage(level="planet"),)).resolve(u)
    assert len(list(iter_uploads(u, Faults.from_names("tamper")))) == 96
