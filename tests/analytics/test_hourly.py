"""The streamed hourly matrix equals the SQL definition, from tables and from stores."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from headend.analytics.hourly import HourlyAccumulator, matrix_from_reads, matrix_from_store
from headend.analytics.matrix import HourlyMatrix, hourly_sql, matrix_from_hourly, reads_for_engines
from headend.model.schema import READS, TS
from headend.store import ParquetStore, StoreConfig
from headend.vee import VersionStore, current_reads

from ._data import T0


def reference(reads: pa.Table, reading_type: int = 0) -> HourlyMatrix:
    """The documented definition: the hourly SQL (DuckDB) pivoted."""
    con = duckdb.connect()
    con.register("r", reads_for_engines(reads))
    hourly = con.sql(hourly_sql("r", reading_type, "t")).to_arrow_table()
    con.close()
    return matrix_from_hourly(hourly)


def assert_same(a: HourlyMatrix, b: HourlyMatrix) -> None:
    np.testing.assert_array_equal(a.meter_idx, b.meter_idx)
    assert a.t0 == b.t0
    assert a.kwh.shape == b.kwh.shape
    np.testing.assert_array_equal(np.isnan(a.kwh), np.isnan(b.kwh))
    ok = ~np.isnan(a.kwh)
    assert np.array_equal(a.kwh[ok], b.kwh[ok])  # bit for bit


def messy_reads(seed: int = 1) -> pa.Table:
    """15-minute and hourly meters, gaps, a second reading type, sparse meter ids,
    ends off the quarter hour, whole missing days at the start of some meters."""
    rng = np.random.default_rng(seed)
    parts = []
    meters = np.array([3, 4, 9, 10, 40, 41, 42], np.int32)
    for i, m in enumerate(meters):
        step = 900 if i % 2 == 0 else 3600
        first = T0 + (86_400 * 2 if i == 3 else 0)
        t = first + step * np.arange(1, 6 * 86_400 // step + 1, dtype=np.int64)
        t = t + (7 if i == 5 else 0)  # ends 7 s after the quarter hour
        keep = rng.random(len(t)) > 0.1  # 10 % missing
        t = t[keep]
        for rt in (0, 1):
            parts.append(pa.table({
                "meter_idx": np.full(len(t), m, np.int32),
                "reading_type": pa.array(np.full(len(t), rt, np.uint8)),
                "interval_end": pa.array(t).cast(TS),
                "value": rng.integers(0, 2_000, len(t)).astype(np.int32),
                "quality": pa.array(np.zeros(len(t), np.uint32))}, schema=READS))
    return pa.concat_tables(parts)


def test_from_reads_equals_the_sql_definition():
    reads = messy_reads()
    assert_same(matrix_from_reads(reads), reference(reads))
    assert_same(matrix_from_reads(reads, reading_type=1), reference(reads, 1))


def test_from_reads_in_any_order_and_in_small_chunks():
    reads = messy_reads()
    shuffled = reads.take(np.random.default_rng(0).permutation(reads.num_rows))
    assert_same(matrix_from_reads(shuffled), reference(reads))
    sorted_ = reads.sort_by([("meter_idx", "ascending"), ("interval_end", "ascending")])
    assert_same(matrix_from_reads(sorted_, chunk_rows=100), reference(reads))


def test_accumulator_trims_rows_and_days_without_reads():
    acc = HourlyAccumulator(0, 9, T0, T0 + 10 * 86_400)
    acc.add(np.array([5, 5], np.int32), np.array([T0 + 3 * 86_400 + 900, T0 + 3 * 86_400 + 1800]),
            np.array([2, 3], np.int32))
    m = acc.finish(0.5)
    np.testing.assert_array_equal(m.meter_idx, [5])
    assert m.t0 == T0 + 3 * 86_400 + 3600 and m.kwh.shape == (1, 24)
    assert m.kwh[0, 0] == 2.5 and np.isnan(m.kwh[0, 1:]).all()


def test_accumulator_rejects_reads_outside_its_extent():
    acc = HourlyAccumulator(0, 1, T0, T0 + 86_400)
    with pytest.raises(ValueError, match="outside"):
        acc.add(np.array([2], np.int32), np.array([T0 + 900]), np.array([1]))


@pytest.fixture
def store(tmp_path):
    """The messy reads in a store: compacted days plus fresh segments."""
    reads = messy_reads()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    early = t < T0 + 3 * 86_400
    cfg = StoreConfig(bucket_bits=5, background_compaction=False)  # meters in 2 buckets
    with ParquetStore(tmp_path, config=cfg) as s:
        s.append_reads(reads.filter(pa.array(early)))
        s.compact()
        s.append_reads(reads.filter(pa.array(~early)))
    return tmp_path, reads, cfg


def test_from_store_equals_the_scan(store):
    root, _, cfg = store
    with ParquetStore(root, config=cfg) as s:
        files = s.plan_reads().files
        assert files > 2  # compacted files and segments in both buckets
        for kw in ({}, {"meters": np.array([4, 9, 41], np.int32)},
                   {"start": T0 + 86_400 + 1800, "end": T0 + 4 * 86_400 - 900}):
            got = matrix_from_store(s, chunk_rows=50, **kw)  # many small chunks
            want = reference(s.scan_reads(reading_types=np.array([0], np.uint8), **kw))
            assert_same(got, want)
        assert_same(matrix_from_store(s, reading_type=1),
                    reference(s.scan_reads(reading_types=np.array([1], np.uint8)), 1))


def test_from_store_with_vee_versions_equals_current_reads(store):
    root, reads, cfg = store
    vs = VersionStore(root)
    # edits of stored reads, and estimates of missing intervals (one beyond a meter's
    # last read, which current_reads leaves out without a window)
    edited = reads.filter(pa.array(np.r_[np.zeros(reads.num_rows - 40, bool),
                                         np.ones(40, bool)]))
    edited = edited.set_column(3, "value", pa.array(np.full(40, 77_777, np.int32)))
    vs.append(edited, method="manual", author="t", reason="test")
    m3 = reads.filter(pa.array((reads.column("meter_idx").to_numpy() == 3)
                               & (reads.column("reading_type").to_numpy() == 0)))
    present = m3.column("interval_end").cast(pa.int64()).to_numpy()
    grid = T0 + 900 * np.arange(1, 4 * 86_400 // 900, dtype=np.int64)
    gap = grid[~np.isin(grid, present)][:3]  # missing intervals inside the span
    assert len(gap) == 3
    est_t = np.r_[gap, present.max() + 86_400]
    vs.append(pa.table({"meter_idx": np.full(4, 3, np.int32),
                        "reading_type": pa.array(np.zeros(4, np.uint8)),
                        "interval_end": pa.array(est_t).cast(TS),
                        "value": np.array([5, 6, 7, 8], np.int32),
                        "quality": pa.array(np.zeros(4, np.uint32))}, schema=READS),
              method="estimate", author="t", reason="test")
    rt = np.array([0], np.uint8)
    with ParquetStore(root, config=cfg) as s:
        for start, end in ((None, None), (T0 + 3600, T0 + 5 * 86_400)):
            cur = vs.latest(start=start, end=end, reading_types=rt)
            got = matrix_from_store(s, start=start, end=end, overlay=cur)
            want = reference(current_reads(root, s.scan_reads(start=start, end=end,
                                                              reading_types=rt),
                                           start=start, end=end))
            assert_same(got, want)


def test_sparse_meter_ids_get_one_row_each(tmp_path):
    """Meter indices far apart (no matrix row per index in between)."""
    reads = messy_reads()
    m = reads.column("meter_idx").to_numpy().copy()
    m[m == 42] = 20_000_000  # far away
    reads = reads.set_column(0, READS.field("meter_idx"), pa.array(m, pa.int32()))
    got = matrix_from_reads(reads)
    assert got.kwh.shape[0] == 7
    assert_same(got, reference(reads))
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=25)) as s:
        s.append_reads(reads)
        s.compact()
        kw = {"meters": np.array([3, 20_000_000], np.int32)}
        want = reference(s.scan_reads(reading_types=np.array([0], np.uint8), **kw))
        got = matrix_from_store(s, **kw)
        assert got.kwh.shape[0] == 2
        assert_same(got, want)
        from headend.analytics.daily import daily_from_store

        dm = daily_from_store(s, **kw)
        np.testing.assert_array_equal(dm.meter_idx, [3, 20_000_000])
        np.testing.assert_allclose(dm.kwh, got.daily(), rtol=1e-12)
