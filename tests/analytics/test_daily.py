"""Daily rollups: written by compaction, read instead of the hours, same answers."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from headend.analytics import EmbeddedEngine
from headend.analytics.daily import anomaly_from_store, daily_from_store
from headend.analytics.hourly import matrix_from_store
from headend.model.schema import READS, TS
from headend.store import ParquetStore, StoreConfig
from headend.store._rollup import SUFFIX
from headend.vee import VersionStore

from ._data import T0

CFG = StoreConfig(bucket_bits=5, background_compaction=False)  # meters in 2 buckets


def long_reads(days: int = 40, seed: int = 2) -> pa.Table:
    """Hourly and 15-minute meters over ``days`` (anomaly needs a history), with gaps
    and one unusual day."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, m in enumerate([3, 4, 9, 40, 41]):
        step = 900 if i % 2 else 3600
        t = T0 + step * np.arange(1, days * 86_400 // step + 1, dtype=np.int64)
        t = t[rng.random(len(t)) > 0.002]  # a few gaps: incomplete days
        v = rng.integers(100, 400, len(t)).astype(np.int32)
        v[(t > T0 + 30 * 86_400) & (t <= T0 + 31 * 86_400)] *= 5  # day 30: unusual
        parts.append(pa.table({"meter_idx": np.full(len(t), m, np.int32),
                               "reading_type": pa.array(np.zeros(len(t), np.uint8)),
                               "interval_end": pa.array(t).cast(TS), "value": v,
                               "quality": pa.array(np.zeros(len(t), np.uint32))},
                              schema=READS))
    return pa.concat_tables(parts)


@pytest.fixture
def store(tmp_path):
    """Compacted month/year files with rollups, plus newer segments without."""
    reads = long_reads()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    early = t <= T0 + 25 * 86_400
    with ParquetStore(tmp_path, config=CFG) as s:
        s.append_reads(reads.filter(pa.array(early)))
        s.compact()
        s.append_reads(reads.filter(pa.array(~early)))
    return tmp_path


def sidecars(root):
    return sorted(p for p in root.rglob(f"*{SUFFIX}"))


def assert_daily_equal(root, **kw):
    with ParquetStore(root, config=CFG) as s:
        dm = daily_from_store(s, **kw)
        hm = matrix_from_store(s, **kw)
    np.testing.assert_array_equal(dm.meter_idx, hm.meter_idx)
    assert dm.day0 == (hm.t0 - 3600) // 86_400
    want = hm.daily()
    assert dm.kwh.shape == want.shape
    np.testing.assert_array_equal(np.isnan(dm.kwh), np.isnan(want))
    np.testing.assert_allclose(dm.kwh, want, rtol=1e-12)
    return dm


def test_compaction_writes_rollups_and_they_give_the_daily_matrix(store):
    assert sidecars(store), "compaction wrote no rollup sidecar"
    dm = assert_daily_equal(store)
    assert np.isnan(dm.kwh).any() and not np.isnan(dm.kwh).all()  # gaps: incomplete days
    assert_daily_equal(store, meters=np.array([4, 40], np.int32))
    assert_daily_equal(store, start=T0 + 3 * 86_400, end=T0 + 33 * 86_400 + 1800)


def test_without_sidecars_the_rows_are_rolled_up(store):
    for p in sidecars(store):
        p.unlink()
    assert_daily_equal(store)


def test_anomaly_from_rollups_equals_the_engine(store):
    e = EmbeddedEngine()
    with ParquetStore(store, config=CFG) as s:
        e.load_store(s)
        got = anomaly_from_store(s, date(2024, 1, 31))
    want = e.anomaly(date(2024, 1, 31))
    assert got.schema.equals(want.schema)
    assert got.column("anomaly").to_pylist() == want.column("anomaly").to_pylist()
    assert any(got.column("anomaly").to_pylist())  # the unusual day is found
    for c in ("total_kwh", "mean_kwh", "std_kwh", "z"):
        np.testing.assert_allclose(got.column(c).to_numpy(zero_copy_only=False),
                                   want.column(c).to_numpy(zero_copy_only=False), rtol=1e-9)


def test_rollups_with_vee_versions(store):
    reads = long_reads()
    edit = reads.slice(100, 30)
    edit = edit.set_column(3, "value", pa.array(np.full(30, 9_999, np.int32)))
    VersionStore(store).append(edit, method="manual", author="t", reason="test")
    cur = VersionStore(store).latest(reading_types=np.array([0], np.uint8))
    with ParquetStore(store, config=CFG) as s:
        dm = daily_from_store(s, overlay=cur)
        hm = matrix_from_store(s, overlay=cur)
        plain = daily_from_store(s)
    np.testing.assert_array_equal(dm.meter_idx, hm.meter_idx)
    np.testing.assert_allclose(dm.kwh, hm.daily(), rtol=1e-12)
    assert not np.allclose(np.nan_to_num(dm.kwh), np.nan_to_num(plain.kwh))  # edit seen


def test_sidecars_go_with_their_files(tmp_path):
    reads = long_reads(days=10)
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    with ParquetStore(tmp_path, config=CFG) as s:
        s.append_reads(reads.filter(pa.array(t <= T0 + 5 * 86_400)))
        s.compact()
        first = sidecars(tmp_path)
        s.append_reads(reads.filter(pa.array(t > T0 + 5 * 86_400)))
        s.compact()  # a new year file replaces the old one
        second = sidecars(tmp_path)
        assert first and second and not set(first) & set(second)
        for p in second:
            assert p.with_name(p.name[:-len(SUFFIX)]).exists()
        size = s.stats().bytes_on_disk["reads"]
    orphan = second[0].with_name("year-000000099999.parquet" + SUFFIX)
    orphan.write_bytes(b"x")
    with ParquetStore(tmp_path, config=CFG) as s:
        s.compact()  # the bucket owner cleans its directories
        assert not orphan.exists()
        assert s.stats().bytes_on_disk["reads"] == size
        side = sum(p.stat().st_size for p in second)
        for p in second:
            p.unlink()
        assert s.stats().bytes_on_disk["reads"] == size - side  # rollups are counted
