"""M&V: baselines (10-of-10, high 5-of-10), day-of adjustment and its cap, opt-out timing,
eligibility, holidays and earlier event days, from hand-made arrays and from a store;
and a synthetic truth test (a known shed recovered within 5 % per feeder)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.dr.baseline import Window, compute_shed, participating_slots
from headend.dr.measure import NEVER, MVConfig, MVEvent, aggregate, measure, opted_out_at
from headend.model.schema import READS, TS
from headend.store import InMemoryStore

ADJ, EV = slice(0, 3), slice(4, 6)  # 3 adjustment slots, 1 gap slot, 2 event slots


def _window(days: int, event_kwh: float = 5.0, adjust_kwh: float = 1.0) -> np.ndarray:
    """One meter: every slot 1 kWh; the event slots of candidate day d hold d + 1 kWh;
    the event day's adjustment slots ``adjust_kwh`` and event slots ``event_kwh``."""
    x = np.ones((1, days + 1, 6))
    x[0, :days, 4:] = (np.arange(days) + 1)[:, None]
    x[0, -1, :3] = adjust_kwh
    x[0, -1, 4:] = event_kwh
    return x


def test_ten_of_ten_by_hand() -> None:
    x = _window(12, adjust_kwh=1.1)
    s = compute_shed(Window(x, ADJ, EV), np.array([2]))
    # the 10 most recent days are 3..12 (1-based), mean 7.5 per event slot; ratio 1.1
    assert s.baseline_days.tolist() == [10]
    assert s.adjustment[0] == pytest.approx(1.1)
    assert s.baseline_kwh[0] == pytest.approx(2 * 7.5 * 1.1)
    assert s.actual_kwh[0] == 10.0
    assert s.shed_kwh[0] == pytest.approx(2 * 7.5 * 1.1 - 10.0)


def test_high_five_of_ten_by_hand() -> None:
    x = _window(12)
    s = compute_shed(Window(x, ADJ, EV), np.array([2]), method="high5of10")
    # of days 3..12 the 5 highest are 8..12: mean 10 per slot
    assert s.baseline_days.tolist() == [5]
    assert s.baseline_kwh[0] == pytest.approx(20.0)


def test_high_five_ties_go_to_the_more_recent_day() -> None:
    x = np.ones((1, 11, 6))
    x[0, :10, 4:] = 2.0
    x[0, 9, :] = np.nan  # the most recent day is not eligible
    x[0, 3:9, 5] = 3.0  # days 3..8 tie on 5 kWh; 4..8 are the most recent five
    x[0, 3, 4] = 2.0
    s = compute_shed(Window(x, ADJ, EV), np.array([2]), method="high5of10", min_days=5)
    assert s.baseline_kwh[0] == pytest.approx(5.0)  # (2 + 3) per day


@pytest.mark.parametrize(("adjust_kwh", "ratio"), [(2.0, 1.2), (0.5, 0.8), (1.15, 1.15)])
def test_day_of_adjustment_is_capped_at_20_percent(adjust_kwh: float, ratio: float) -> None:
    x = _window(10, adjust_kwh=adjust_kwh)
    s = compute_shed(Window(x, ADJ, EV), np.array([2]))
    assert s.adjustment[0] == pytest.approx(ratio)
    assert s.baseline_kwh[0] == pytest.approx(2 * 5.5 * ratio)


def test_missing_event_day_adjustment_leaves_the_baseline_unadjusted() -> None:
    x = _window(10, adjust_kwh=3.0)
    x[0, -1, 1] = np.nan
    s = compute_shed(Window(x, ADJ, EV), np.array([2]))
    assert s.adjustment[0] == 1.0 and s.baseline_kwh[0] == pytest.approx(11.0)


def test_incomplete_days_are_not_eligible_and_too_few_give_no_baseline() -> None:
    x = _window(12)
    x[0, 11, 0] = np.nan  # an adjustment slot of the most recent day: not eligible
    x[0, 2, 5] = np.nan  # an event slot of day 3
    s = compute_shed(Window(x, ADJ, EV), np.array([2]))
    # eligible: 1, 2, 4..11 -> the 10 most recent are 1, 2, 4..11
    days = [1, 2, *range(4, 12)]
    assert s.baseline_kwh[0] == pytest.approx(2 * np.mean(days))
    x = _window(6)
    s = compute_shed(Window(x, ADJ, EV), np.array([2]), min_days=7)
    assert np.isnan(s.baseline_kwh[0]) and np.isnan(s.shed_kwh[0])
    assert s.actual_kwh[0] == 10.0  # the actual is known without a baseline


def test_gap_slot_needs_no_read() -> None:
    x = _window(10)
    x[0, :, 3] = np.nan  # the gap between adjustment and event is never used
    s = compute_shed(Window(x, ADJ, EV), np.array([2]))
    assert s.baseline_days[0] == 10


@pytest.mark.parametrize(("opt_out", "slots"), [
    (None, 2), (-10, 0), (0, 0), (3599, 0), (3600, 1), (5000, 1), (7200, 2), (9000, 2)])
def test_participating_slots_of_an_opt_out(opt_out: int | None, slots: int) -> None:
    o = NEVER if opt_out is None else 1_000_000 + opt_out
    assert participating_slots(1_000_000, 3600, 2, np.array([o])).tolist() == [slots]


def test_an_opt_out_during_the_event_counts_from_that_moment() -> None:
    x = _window(10, adjust_kwh=1.0)
    s = compute_shed(Window(x, ADJ, EV), np.array([1]))
    assert s.baseline_kwh[0] == pytest.approx(5.5) and s.actual_kwh[0] == 5.0
    s = compute_shed(Window(x, ADJ, EV), np.array([0]))
    assert (s.baseline_kwh[0], s.actual_kwh[0], s.shed_kwh[0]) == (0.0, 0.0, 0.0)


def test_opted_out_at_ignores_late_opt_outs_and_other_meters() -> None:
    meters = np.array([3, 5, 9], np.int32)
    t = pa.table({"meter_idx": pa.array([5, 5, 9, 4, 3], pa.int32()),
                  "at": pa.array([200, 150, 1000, 10, 999], pa.int64()).cast(TS)})
    got = opted_out_at(meters, t, end=1000)
    assert got.tolist() == [999, 150, NEVER]  # 9 opted out at the end: too late


def test_unknown_method_and_bad_window_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown baseline method"):
        compute_shed(Window(_window(10), ADJ, EV), np.array([2]), method="3of5")
    with pytest.raises(ValueError):
        Window(np.ones((1, 2, 4)), ADJ, slice(4, 6))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(11, 25), st.integers(0, 2**31 - 1),
       st.sampled_from(["10of10", "high5of10"]))
def test_blocks_and_meters_are_independent(m: int, days: int, seed: int, method: str) -> None:
    """Each meter's result is that of the meter alone: no mixing across rows or blocks."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, (m, days, 6))
    x[rng.random((m, days, 6)) < 0.03] = np.nan
    part = rng.integers(0, 3, m)
    whole = compute_shed(Window(x, ADJ, EV), part, method=method)
    blocks = compute_shed(Window(x, ADJ, EV), part, method=method, block=2)
    np.testing.assert_array_equal(whole.shed_kwh, blocks.shed_kwh)
    for i in range(m):
        one = compute_shed(Window(x[i:i + 1], ADJ, EV), part[i:i + 1], method=method)
        np.testing.assert_array_equal(one.baseline_kwh, whole.baseline_kwh[i:i + 1])
        np.testing.assert_array_equal(one.actual_kwh, whole.actual_kwh[i:i + 1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(11, 25), st.integers(0, 2**31 - 1))
def test_high_five_is_never_below_ten_of_ten_unadjusted(m: int, days: int, seed: int) -> None:
    """The 5 highest of the selected days average at least as much as all of them."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, (m, days, 6))
    x[rng.random((m, days, 6)) < 0.03] = np.nan
    part = np.full(m, 2)
    ten = compute_shed(Window(x, ADJ, EV), part, cap=0.0)
    five = compute_shed(Window(x, ADJ, EV), part, method="high5of10", cap=0.0)
    ok = ~np.isnan(ten.baseline_kwh)
    np.testing.assert_array_equal(ok, ~np.isnan(five.baseline_kwh))
    assert (five.baseline_kwh[ok] >= ten.baseline_kwh[ok] - 1e-9).all()


# ------------------------------------------------------------------ from a store

TZ = "America/New_York"
EVENT_DAY = date(2026, 7, 22)  # a Wednesday
EVENT_START = int(datetime(2026, 7, 22, 14, 0, tzinfo=__import__("zoneinfo").ZoneInfo(TZ))
                  .timestamp())  # 14:00 EDT = 18:00 UTC


def _reads(meters: np.ndarray, load_wh: np.ndarray, t0: int, days: int,
           interval_s: int = 900) -> pa.Table:
    """Reads of ``days`` days from ``t0``: meter i uses ``load_wh[i, j]`` Wh in interval j."""
    n = days * 86_400 // interval_s
    ends = t0 + interval_s * (np.arange(n, dtype=np.int64) + 1)
    m = np.repeat(meters, n)
    return pa.table({"meter_idx": pa.array(m, pa.int32()),
                     "reading_type": pa.array(np.zeros(len(m), np.uint8)),
                     "interval_end": pa.array(np.tile(ends, len(meters))).cast(TS),
                     "value": pa.array(load_wh.reshape(-1).astype(np.int32)),
                     "quality": pa.array(np.zeros(len(m), np.uint32))}, schema=READS)


def _day_profile(interval_s: int, t0: int, days: int) -> np.ndarray:
    """Local hour (in TZ) of each interval's start, for shaping loads."""
    n = days * 86_400 // interval_s
    start = t0 + interval_s * np.arange(n, dtype=np.int64)
    return ((start - 4 * 3600) % 86_400) // 3600  # EDT all of July


T0 = int(datetime(2026, 5, 1, 4, 0, tzinfo=UTC).timestamp())  # local midnight, EDT
DAYS = (EVENT_DAY - date(2026, 5, 1)).days + 1


def _store_with(load_wh: np.ndarray, meters: np.ndarray) -> InMemoryStore:
    st_ = InMemoryStore()
    st_.append_reads(_reads(meters, load_wh, T0, DAYS))
    return st_


def _event_day_mask(n: int, day: date) -> np.ndarray:
    start = T0 + 900 * np.arange(n, dtype=np.int64)
    local_day = (start - 4 * 3600) // 86_400
    return local_day == (day - date(1970, 1, 1)).days


def test_holidays_and_earlier_event_days_are_no_baseline_days() -> None:
    """A meter uses 1 Wh per interval except on two recent weekdays (a holiday and an
    earlier event day) where it used 100: with both excluded, the baseline is flat."""
    n = DAYS * 96
    load = np.ones((1, n))
    holiday, earlier = date(2026, 7, 20), date(2026, 7, 21)
    load[0, _event_day_mask(n, holiday) | _event_day_mask(n, earlier)] = 100
    store = _store_with(load, np.array([0]))
    ev = MVEvent("e1", EVENT_START, 120, np.array([0], np.int32),
                 exclude_days=(earlier,))
    cfg = MVConfig(timezone=TZ, holidays=(holiday,))
    got = measure(store, ev, cfg, np.array([900], np.int32))
    # 2 hours x 4 intervals x 1 Wh, ratio 1
    assert got.column("baseline_kwh").to_pylist() == [pytest.approx(0.008)]
    assert got.column("baseline_days").to_pylist() == [10]
    got = measure(store, MVEvent("e1", EVENT_START, 120, np.array([0], np.int32)), cfg,
                  np.array([900], np.int32))
    assert got.column("baseline_kwh").to_pylist()[0] > 0.008  # the event day counts now


def test_store_path_by_hand_with_an_adjustment_and_opt_outs() -> None:
    """Three meters with a flat 4 Wh per interval; on the event day 5 Wh before the
    event (ratio 1.25, capped to 1.2) and 2 Wh during it. Meter 1 opts out an hour into
    the event, meter 2 after it ended."""
    n = DAYS * 96
    load = np.full((3, n), 4.0)
    day = _event_day_mask(n, EVENT_DAY)
    end = T0 + 900 * (np.arange(n) + 1)
    during = day & (end > EVENT_START) & (end <= EVENT_START + 7200)
    before = day & (end > EVENT_START - 4 * 3600) & (end <= EVENT_START)
    load[:, before] = 5
    load[:, during] = 2
    store = _store_with(load, np.array([0, 1, 2]))
    oo = pa.table({"meter_idx": pa.array([1, 2], pa.int32()),
                   "at": pa.array([EVENT_START + 3600, EVENT_START + 7200]).cast(TS)})
    ev = MVEvent("e1", EVENT_START, 120, np.array([0, 1, 2], np.int32), program="p")
    got = measure(store, ev, MVConfig(timezone=TZ), np.full(3, 900, np.int32), oo)
    base_h = 4 * 0.004 * 1.2  # kWh per hour, adjusted
    assert got.column("opted_out").to_pylist() == [False, True, False]
    assert got.column("baseline_kwh").to_pylist() == pytest.approx([2 * base_h, base_h,
                                                                    2 * base_h])
    assert got.column("actual_kwh").to_pylist() == pytest.approx([0.016, 0.008, 0.016])
    assert got.column("adjustment").to_pylist() == pytest.approx([1.2] * 3)
    res = got.append_column("event_id", pa.array(["e1"] * 3))
    agg = aggregate(res, ["event_id"])
    assert agg.to_pylist() == [{"event_id": "e1", "meters": 3, "opted_out": 1, "measured": 3,
                                "baseline_kwh": pytest.approx(5 * base_h),
                                "actual_kwh": pytest.approx(0.04),
                                "shed_kwh": pytest.approx(5 * base_h - 0.04)}]


def test_a_meter_with_hourly_reads_and_missing_reads() -> None:
    """Hourly meters fill a slot with one read; a 15-minute meter missing one read of an
    hour makes that hour incomplete (the day is not eligible)."""
    n = DAYS * 96
    load = np.full((1, n), 3.0)
    store = _store_with(load, np.array([0]))
    hourly = _reads(np.array([1]), np.full((1, DAYS * 24), 12.0), T0, DAYS, 3600)
    store.append_reads(hourly)
    ev = MVEvent("e", EVENT_START, 60, np.array([0, 1], np.int32))
    got = measure(store, ev, MVConfig(timezone=TZ), np.array([900, 3600], np.int32))
    assert got.column("baseline_kwh").to_pylist() == pytest.approx([0.012, 0.012])
    assert got.column("shed_kwh").to_pylist() == pytest.approx([0.0, 0.0])


def test_same_local_hours_across_a_dst_change() -> None:
    """An event on 2026-11-04 (EST) takes its baseline from days before 2026-11-01 (EDT)
    at the same local hours: the load is high from 14:00 to 16:00 local every day."""
    t0 = int(datetime(2026, 9, 1, 4, 0, tzinfo=UTC).timestamp())
    days = 65
    n = days * 96
    start = t0 + 900 * np.arange(n, dtype=np.int64)
    from zoneinfo import ZoneInfo

    import pyarrow.compute as pc

    local = pc.local_timestamp(pa.array(start).cast(pa.timestamp("s", tz=TZ)))
    hour = pc.hour(local).to_numpy(zero_copy_only=False)
    load = np.where((hour >= 14) & (hour < 16), 50.0, 1.0)[None, :]
    store = InMemoryStore()
    store.append_reads(_reads(np.array([0]), load, t0, days))
    ev_start = int(datetime(2026, 11, 4, 14, 0, tzinfo=ZoneInfo(TZ)).timestamp())
    got = measure(store, MVEvent("e", ev_start, 120, np.array([0], np.int32)),
                  MVConfig(timezone=TZ), np.array([900], np.int32))
    assert got.column("baseline_kwh").to_pylist() == pytest.approx([0.4])
    assert got.column("shed_kwh").to_pylist() == pytest.approx([0.0])


def test_synthetic_truth_recovered_within_5_percent_per_feeder() -> None:
    """1,000 meters on 4 feeders with a daily shape, a per-meter level and noise; on the
    event day, enrolled meters shed a known fraction (10-40 %) of their load in the
    event window. The 10-of-10 shed per feeder is within 5 % of the true shed."""
    rng = np.random.default_rng(7)
    m = 1000
    n = DAYS * 96
    hour = _day_profile(900, T0, DAYS)
    shape = 0.6 + 0.8 * np.exp(-((hour - 15) / 3.0) ** 2)  # afternoon peak
    level = rng.uniform(100, 300, m)[:, None]  # Wh per 15 min at shape 1
    load = level * shape[None, :] * rng.gamma(50, 1 / 50, (m, n))
    end = T0 + 900 * (np.arange(n) + 1)
    during = (end > EVENT_START) & (end <= EVENT_START + 4 * 3600)
    frac = rng.uniform(0.1, 0.4, m)
    before = load.copy()
    load[:, during] *= (1 - frac)[:, None]
    load = np.round(load)
    true_shed = (np.round(before[:, during]) - load[:, during]).sum(axis=1) / 1000
    store = _store_with(load, np.arange(m))
    ev = MVEvent("e", EVENT_START, 240, np.arange(m, dtype=np.int32))
    got = measure(store, ev, MVConfig(timezone=TZ), np.full(m, 900, np.int32))
    feeder = np.arange(m) % 4
    res = got.append_column("feeder_id", pa.array([f"F{f}" for f in feeder]))
    agg = aggregate(res, ["feeder_id"]).to_pylist()
    for row, f in zip(agg, range(4), strict=True):
        truth = true_shed[feeder == f].sum()
        assert row["measured"] == 250
        assert abs(row["shed_kwh"] - truth) <= 0.05 * truth, (row, truth)


def test_event_not_on_whole_slots_is_refused() -> None:
    ev = MVEvent("e", EVENT_START + 900, 60, np.array([0], np.int32))
    with pytest.raises(ValueError, match="whole slots"):
        measure(InMemoryStore(), ev, MVConfig(), np.array([900], np.int32))
    got = measure(InMemoryStore(), ev, MVConfig(slot_s=900), np.array([900], np.int32))
    assert got.column("baseline_kwh").to_pylist() == [None]  # no reads: no baseline


def test_candidate_days_skip_weekends() -> None:
    from headend.dr.measure import _candidate_days

    days = _candidate_days(MVEvent("e", EVENT_START, 60, np.array([0], np.int32)),
                           MVConfig(timezone=TZ, lookback_days=14))
    assert days[-1] == EVENT_DAY
    assert all(d.weekday() < 5 for d in days)
    assert len(days) == 11 and days[0] == EVENT_DAY - timedelta(days=14)


def test_aggregate_per_program_over_events() -> None:
    """Results of several events, concatenated with their program, sum per program;
    meters without a shed count as meters but not in the energy."""
    from headend.dr.baseline import Shed
    from headend.dr.measure import result_table

    def one(event: str, program: str, base: list[float], act: list[float],
            opted: list[bool]) -> pa.Table:
        b, a = np.array(base), np.array(act)
        t = result_table(np.arange(len(b), dtype=np.int32), np.array(opted),
                         Shed(b, a, b - a, np.full(len(b), 10, np.int16), np.ones(len(b))))
        return t.append_column("event_id", pa.array([event] * len(b))).append_column(
            "program", pa.array([program] * len(b)))

    res = pa.concat_tables([one("e1", "p1", [2.0, np.nan], [1.0, 1.0], [False, True]),
                            one("e2", "p1", [3.0], [2.5], [False]),
                            one("e3", "p2", [1.0], [1.5], [True])])
    assert aggregate(res, ["program"]).to_pylist() == [
        {"program": "p1", "meters": 3, "opted_out": 1, "measured": 2, "baseline_kwh": 5.0,
         "actual_kwh": 3.5, "shed_kwh": 1.5},
        {"program": "p2", "meters": 1, "opted_out": 1, "measured": 1, "baseline_kwh": 1.0,
         "actual_kwh": 1.5, "shed_kwh": -0.5}]
    assert [r["event_id"] for r in aggregate(res, ["program", "event_id"]).to_pylist()] == \
        ["e1", "e2", "e3"]
