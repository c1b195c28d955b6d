"""Intervals learned from the reads: never assumed, declared ones win, history kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from headend.ingest.hooks import open_ingestor
from headend.model import codes
from headend.model.schema import INTERVALS, TS
from headend.store import DataDir
from headend.store.intervals import IntervalHistory
from headend.vee import current_reads, vee_tables
from headend.vee.intervals import learn_intervals

from ._data import T0, reads, series

METERS_H = b"meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id"


def history(declared: list[int] | None = None, learned: list[tuple[int, int, int, int]] = ()
            ) -> IntervalHistory:
    rows = list(zip(*learned, strict=True)) if learned else [[], [], [], []]
    t = pa.table({"meter_idx": pa.array(rows[0], pa.int32()),
                  "reading_type": pa.array(rows[1], pa.uint8()),
                  "effective_from": pa.array(rows[2], pa.int64()).cast(TS),
                  "interval_s": pa.array(rows[3], pa.int32())}, schema=INTERVALS)
    return IntervalHistory(np.asarray(declared or [0] * 8, np.int32), t)


def learned(entries: pa.Table) -> list[tuple[int, int, int, int]]:
    return list(zip(entries.column("meter_idx").to_pylist(),
                    entries.column("reading_type").to_pylist(),
                    entries.column("effective_from").cast(pa.int64()).to_pylist(),
                    entries.column("interval_s").to_pylist(), strict=True))


def test_learns_hourly_15_and_5_minutes_despite_gaps_duplicates_and_off_grid_rows():
    hourly = series(0, T0 + 3600, 3600, [1] * 48, missing=[5, 6, 7, 20])
    quarter = series(1, T0 + 900, 900, [1] * 96, missing=range(10, 30))
    five = series(2, T0 + 300, 300, [1] * 100)
    odd = reads(2, [T0 + 300 * 7 + 120], [1])  # one read off the 5-minute grid
    volts = series(1, T0 + 3600, 3600, [2300] * 10, rt=2)  # same meter, other type
    t = pa.concat_tables([hourly, quarter, five, odd, hourly.slice(0, 3), volts])
    entries, pending = learn_intervals(t, history())
    assert sorted(learned(entries)) == [(0, 0, T0 + 3600, 3600), (1, 0, T0 + 900, 900),
                                        (1, 2, T0 + 3600, 3600), (2, 0, T0 + 300, 300)]
    assert pending.num_rows == 0


def test_too_little_evidence_stays_unknown_and_is_kept_for_the_next_batch():
    few = series(0, T0 + 900, 900, [1] * 3)  # 3 reads
    sparse = series(1, T0 + 900, 900, [1] * 20, missing=range(1, 19))  # 2 reads a day apart
    entries, pending = learn_intervals(pa.concat_tables([few, sparse]), history())
    assert entries.num_rows == 0 and pending.num_rows == 5
    more = series(0, T0 + 4 * 900, 900, [1] * 3)
    entries, pending = learn_intervals(pa.concat_tables([pending, more]), history())
    assert learned(entries) == [(0, 0, T0 + 900, 900)]
    assert pending.num_rows == 2


def test_reprogrammed_15_to_5_minutes_gets_a_new_interval_from_then_on():
    h = history(learned=[(0, 0, T0 + 900, 900)])
    t_change = T0 + 86_400
    after = series(0, t_change + 300, 300, [1] * 24)
    entries, _ = learn_intervals(after, h)
    assert learned(entries) == [(0, 0, t_change + 300, 300)]
    # and 5 to 60 minutes (reads on the old grid, but far sparser than it)
    h2 = history(learned=[(0, 0, T0 + 900, 900), (0, 0, t_change + 300, 300)])
    hourly = series(0, T0 + 3 * 86_400, 3600, [1] * 24)
    entries, _ = learn_intervals(hourly, h2)
    assert learned(entries) == [(0, 0, T0 + 3 * 86_400, 3600)]


def test_declared_interval_wins_and_is_never_learned():
    h = history(declared=[900, 0])
    hourly = series(0, T0 + 3600, 3600, [1] * 24)
    entries, pending = learn_intervals(hourly, h)
    assert entries.num_rows == 0 and pending.num_rows == 0
    assert h.at(np.array([0, 1], np.int32), np.array([0, 0], np.uint8),
                np.array([T0, T0], np.int64)).tolist() == [900, 0]


def test_declared_meters_in_a_batch_change_nothing_for_the_others():
    # meters 1 and 3 undeclared (learned or pending), 0 and 2 declared; reading types
    # with codes far apart (0, 17) share the batch
    und = pa.concat_tables([series(1, T0 + 900, 900, [1] * 8),
                            series(1, T0 + 3600, 3600, [5] * 6, rt=17),
                            series(3, T0 + 300, 300, [1] * 2)])
    dec = pa.concat_tables([series(0, T0 + 3600, 3600, [1] * 24),
                            series(2, T0 + 900, 900, [1] * 8, rt=17)])
    h = history(declared=[900, 0, 900, 0])
    alone, alone_pending = learn_intervals(und, h)
    mixed, mixed_pending = learn_intervals(pa.concat_tables([dec, und, dec]), h)
    assert learned(mixed) == learned(alone) == [(1, 0, T0 + 900, 900),
                                                 (1, 17, T0 + 3600, 3600)]
    assert mixed_pending.equals(alone_pending) and mixed_pending.num_rows == 2


def test_learning_costs_memory_in_proportion_to_the_batch_not_to_the_reading_type_codes():
    import tracemalloc

    # an upload of a learned fleet, one read per key of 200,000 meters x 2 reading
    # types: the group arrays must not hold a slot for each of the 32 possible codes of
    # each meter (that took 42x the batch's bytes, now 4x)
    n = 200_000
    m = np.repeat(np.arange(n, dtype=np.int32), 2)
    rt = pa.array(np.tile([0, 1], n), pa.uint8())
    batch = reads(m, np.full(2 * n, T0 + 900), np.ones(2 * n)).set_column(
        1, "reading_type", rt)
    h = IntervalHistory(np.zeros(n, np.int32), pa.table({
        "meter_idx": pa.array(m), "reading_type": rt,
        "effective_from": pa.array(np.full(2 * n, T0)).cast(TS),
        "interval_s": pa.array(np.full(2 * n, 900, np.int32))}, schema=INTERVALS))
    tracemalloc.start()
    try:
        entries, pending = learn_intervals(batch, h)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entries.num_rows == 0 and pending.num_rows == 0
    assert peak < 12 * batch.nbytes


def test_history_lookup_by_time():
    h = history(learned=[(0, 0, T0 + 900, 900), (0, 0, T0 + 86_400, 300), (1, 2, T0, 3600)])
    m = np.array([0, 0, 0, 0, 1, 1, 2], np.int32)
    rt = np.array([0, 0, 0, 0, 2, 0, 0], np.uint8)
    t = np.array([T0 - 86_400, T0 + 900, T0 + 86_400, T0 + 99_000, T0, T0, T0], np.int64)
    assert h.at(m, rt, t).tolist() == [900, 900, 300, 300, 3600, 0, 0]
    assert h.current()[0][:3].tolist() == [300, 3600, 0]


def test_history_lookups_match_a_read_by_read_oracle():
    rng = np.random.default_rng(7)
    for _ in range(100):
        n_meters = int(rng.integers(1, 40))
        declared = np.where(rng.random(n_meters) < 0.3, 900, 0).astype(np.int32)
        keys = {(int(m), int(rt), T0 + 86_400 * int(d))
                for m, rt, d in zip(rng.integers(0, n_meters, 40), rng.integers(0, 8, 40),
                                    rng.integers(0, 6, 40), strict=True)}
        entries = sorted((*k, int(rng.choice([300, 900, 3600]))) for k in keys)
        h = history(declared.tolist(), entries)
        m = rng.integers(0, n_meters, 300).astype(np.int32)
        rt = rng.integers(0, 8, 300).astype(np.uint8)
        t = T0 + rng.integers(-86_400, 7 * 86_400, 300)
        interval_s, segment = h.segments(m, rt, t)
        for i in range(300):
            mine = [j for j, e in enumerate(entries) if e[:2] == (m[i], rt[i])]
            if declared[m[i]]:
                want = (declared[m[i]], -1)
            elif not mine:
                want = (0, -1)
            else:  # the last entry in effect at t; the first also covers earlier reads
                j = max([j for j in mine if entries[j][2] <= t[i]], default=mine[0])
                want = (entries[j][3], j)
            assert (interval_s[i], segment[i]) == want
        assert h.at(m, rt, t).tolist() == interval_s.tolist()


def test_a_declared_fleet_history_holds_no_index_per_reading_type():
    declared = np.full(1_000_000, 900, np.int32)
    h = history(declared.tolist(), [(5, 0, T0, 300)])
    held = sum(a.nbytes for a in vars(h).values() if isinstance(a, np.ndarray))
    assert held < 2 * declared.nbytes  # not 8 reading-type slots of 20 bytes per meter
    m = np.array([0, 5, 999_999], np.int32)
    assert h.at(m, np.zeros(3, np.uint8), np.full(3, T0)).tolist() == [900, 900, 900]


def test_unknown_interval_validates_but_does_not_estimate():
    t = series(0, T0 + 900, 900, [100, 100, 100, 100, 100, 100], missing=[2, 3])
    table, _method, summary = vee_tables(t, history())
    assert table.num_rows == 4 and summary.estimated == 0 and summary.validated == 4
    # once known, the same reads get their two holes estimated
    table, _method, summary = vee_tables(t, history(learned=[(0, 0, T0 + 900, 900)]))
    assert table.num_rows == 6 and summary.estimated == 2


def test_estimates_stay_on_each_intervals_own_grid():
    quarter = series(0, T0 + 900, 900, [100] * 8, missing=[3])  # one 15-min hole
    five = series(0, T0 + 2 * 3600 + 300, 300, [30] * 12, missing=[5, 6])  # two 5-min holes
    h = history(learned=[(0, 0, T0 + 900, 900), (0, 0, T0 + 2 * 3600 + 300, 300)])
    table, _m, summary = vee_tables(pa.concat_tables([quarter, five]), h)
    assert summary.estimated == 3
    t = table.column("interval_end").cast(pa.int64()).to_numpy()
    est = table.filter(pa.array((table.column("quality").to_numpy() & codes.ESTIMATED_MASK) != 0))
    assert sorted(est.column("interval_end").cast(pa.int64()).to_pylist()) == [
        T0 + 4 * 900, T0 + 2 * 3600 + 6 * 300, T0 + 2 * 3600 + 7 * 300]
    assert np.all(np.diff(t) > 0)


def _csv(rows: list[tuple[str, int, float]]) -> bytes:
    import datetime as dt

    lines = [b"meter_id,reading_type,interval_end,value,quality"]
    for meter, t, v in rows:
        ts = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{meter},kwh_del,{ts},{v:.3f},".encode())
    return b"\n".join(lines) + b"\n"


def test_ingest_without_interval_minutes_estimates_true_holes_only(tmp_path: Path):
    """Hourly, 15- and 5-minute meters loaded without interval_minutes: every exported
    row is a read received or an estimate of a hole on that meter's own grid."""
    meters = METERS_H + b"\n" + b"\n".join(
        f"{m},electric,rf,true,C1,T1,F1,S1".encode() for m in ("H1", "Q1", "F1")) + b"\n"
    (tmp_path / "meters.csv").write_bytes(meters)
    rows: list[tuple[str, int, float]] = []
    holes = {"H1": (3600, {10, 11}), "Q1": (900, {40, 41, 42}), "F1": (300, {100})}
    for meter, (step, gap) in holes.items():
        n = 2 * 86_400 // step
        rows += [(meter, T0 + step * (i + 1), 0.1 + (i % 7) / 100) for i in range(n)
                 if i not in gap]
    rows.sort(key=lambda r: r[1])  # a utility export: by time
    (tmp_path / "reads.csv").write_bytes(_csv(rows))
    data = tmp_path / "data"
    ing = open_ingestor(data, rules=False)
    res = ing.ingest_paths([tmp_path / "meters.csv", tmp_path / "reads.csv"])
    assert res.accepted == len(rows)
    with DataDir.open(data) as dd:
        cur = current_reads(data, dd.store.scan_reads())
        reg = dd.registry
        assert reg.table().column("interval_s").to_pylist() == [300, 3600, 900]
        assert reg.declared().column("interval_s").to_pylist() == [0, 0, 0]
    assert cur.num_rows == len(rows) + 2 + 3 + 1
    # export meters: interval_minutes learned, marked as such
    out = subprocess.run([sys.executable, "-m", "headend", "export", "meters", "--data",
                          str(data)], capture_output=True, check=True).stdout.decode()
    lines = out.strip().splitlines()
    assert lines[0].endswith(",interval_minutes,critical_care,interval_source,switch_state")
    assert [ln.split(",")[-4:] for ln in lines[1:]] == [
        ["5", "false", "learned", "unknown"], ["60", "false", "learned", "unknown"],
        ["15", "false", "learned", "unknown"]]


def test_ingest_with_vee_off_still_learns(tmp_path: Path):
    data = tmp_path / "data"
    ing = open_ingestor(data, rules=False, vee=False)
    meters = METERS_H + b"\n" + b"M1,electric,rf,true,C1,T1,F1,S1\n"
    (tmp_path / "m.csv").write_bytes(meters)
    (tmp_path / "r.csv").write_bytes(_csv([("M1", T0 + 3600 * (i + 1), 0.5)
                                           for i in range(24)]))
    ing.ingest_paths([tmp_path / "m.csv", tmp_path / "r.csv"])
    with DataDir.open(data) as dd:
        assert dd.registry.interval_s(np.array([0], np.int32)).tolist() == [3600]


def test_ingest_of_a_meter_reprogrammed_from_15_to_5_minutes(tmp_path: Path):
    meters = METERS_H + b"\nM1,electric,rf,true,C1,T1,F1,S1\n"
    (tmp_path / "meters.csv").write_bytes(meters)
    change = T0 + 86_400
    q = [("M1", T0 + 900 * (i + 1), 0.2) for i in range(96) if i not in (20, 21)]
    f = [("M1", change + 300 * (i + 1), 0.07) for i in range(288) if i not in (50,)]
    (tmp_path / "day1.csv").write_bytes(_csv(q))
    (tmp_path / "day2.csv").write_bytes(_csv(f))
    data = tmp_path / "data"
    ing = open_ingestor(data, rules=False)
    ing.ingest_paths([tmp_path / "meters.csv", tmp_path / "day1.csv"])
    ing.ingest_paths([tmp_path / "day2.csv"])
    with DataDir.open(data) as dd:
        h = dd.registry.intervals()
        assert list(zip(h.effective_from.tolist(), h.interval_s.tolist(), strict=True)) == [
            (T0 + 900, 900), (change + 300, 300)]
        cur = current_reads(data, dd.store.scan_reads())
    t = cur.column("interval_end").cast(pa.int64()).to_numpy()
    est = (cur.column("quality").to_numpy() & codes.ESTIMATED_MASK) != 0
    # the two quarter hours and the one 5-minute interval: nothing else invented
    assert cur.num_rows == len(q) + len(f) + 3
    assert sorted(t[est].tolist()) == [T0 + 900 * 21, T0 + 900 * 22, change + 300 * 51]
