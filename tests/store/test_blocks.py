"""Block-sum sidecars (``<file>.blocks``): feeder-days from block sums plus partial
blocks equal a brute-force sum over ``scan_reads`` in every case; sidecar lifecycle;
migration of stores with day copies or without sums."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.store import ParquetStore, StoreConfig, _blocks
from headend.store._layout import ParquetMeta
from headend.store._query import interval_sum

from ._data import DAY, T0, grid_reads, reads, rows
from .test_day_copies import killed_in_compaction
from .test_parquet_store import files

BASE = StoreConfig(bucket_bits=5, row_group_rows=1024, merge_rows=4096,
                   auto_compact_segments=0, writer_threads=1, reader_threads=2)
OPEN = T0 + 3 * DAY  # January 2026 still open: day files only
CLOSED = T0 + 400 * DAY  # 2025 and 2026 closed: year files


def cfg(**kw: Any) -> StoreConfig:
    return dataclasses.replace(BASE, **kw)


def by_scan(s: ParquetStore, lo: int, hi: int, rt: int, day: int) -> list[tuple[object, ...]]:
    t = s.scan_reads(meters=np.arange(lo, hi, dtype=np.int32), start=day, end=day + DAY,
                     reading_types=np.array([rt], np.uint8))
    return rows(interval_sum(t))


def sidecars(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "reads").rglob("*.blocks"))


@pytest.mark.parametrize("slice_rows", [1 << 22, 700])
def test_block_sums_equal_a_grouped_sum(monkeypatch: pytest.MonkeyPatch,
                                        slice_rows: int) -> None:
    monkeypatch.setattr(_blocks, "_SLICE", slice_rows)  # summed in slices, then merged
    rng = np.random.default_rng(3)
    n = 5000
    m = np.sort(rng.integers(0, 300, n)).astype(np.int32)
    rt = rng.integers(0, 3, n).astype(np.uint8)
    t = T0 - DAY + rng.integers(0, 4 * DAY, n).astype(np.int64) // 300 * 300
    v = rng.integers(-(2**31), 2**31 - 1, n).astype(np.int32)
    got = _blocks.block_sums(m, rt, t, v, 4)
    want: dict[tuple[int, int, int, int], list[int]] = {}
    for mi, ri, ti, vi in zip(m.tolist(), rt.tolist(), t.tolist(), v.tolist(), strict=True):
        w = want.setdefault((ti // DAY, ri, mi >> 4, ti % DAY), [0, 0])
        w[0] += vi
        w[1] += 1
    assert rows(got) == [(*k, s, c) for k, (s, c) in sorted(want.items())]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "config": cfg(
            block_meters=draw(st.sampled_from([1, 2, 4, 8, 16, 64])),
            part_rows=draw(st.sampled_from([0, 3000, 9000])),
            top_level=draw(st.sampled_from(["month", "year"])),
            merge_rows=draw(st.sampled_from([1024, 4096, 1 << 20])),
            day_copies=draw(st.booleans())),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "meters": draw(st.integers(1, 80)),
        # batches: (first day, days, share of rows kept, off-grid, then compact at)
        "batches": draw(st.lists(st.tuples(
            st.integers(-2, 3), st.integers(1, 2), st.floats(0.2, 1.0),
            st.booleans(), st.sampled_from([None, "days", OPEN, CLOSED, CLOSED])),
            min_size=1, max_size=4)),
        # (first meter, meters) as shares of the store's meters, type, day, shift [s]
        "queries": draw(st.lists(st.tuples(
            st.floats(0, 1), st.floats(0, 1.05), st.integers(0, 1),
            st.integers(-2, 4), st.sampled_from([0, 0, 0, 900, 3600 * 7 + 5])),
            min_size=1, max_size=10)),
    }


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sc=scenarios())
def test_feeder_sum_equals_brute_force(tmp_path_factory: pytest.TempPathFactory,
                                       sc: dict[str, Any]) -> None:
    """Late data, versions of files (day, month, year, parts), segments not compacted,
    days with and without sums, windows not aligned to midnight, with and without
    valid day copies: the feeder sum equals a plain sum over the scanned rows."""
    root = tmp_path_factory.mktemp("blk")
    rng = np.random.default_rng(sc["seed"])
    now = [OPEN]
    with ParquetStore(root, config=sc["config"], clock=lambda: now[0]) as s:
        for d0, nd, keep, off, when in sc["batches"]:
            a = grid_reads(sc["meters"], nd, rts=(0, 1), t0=T0 + d0 * DAY,
                           seed=int(rng.integers(1 << 30)))
            a = a.filter(pa.array(rng.random(len(a)) < keep))
            if off:  # off-grid times and large values of either sign
                t = a.column("interval_end").cast(pa.int64()).to_numpy()
                t = t - rng.integers(0, 2, len(t)) * rng.integers(1, 900, len(t))
                v = rng.integers(-(2**31), 2**31 - 1, len(t)).astype(np.int32)
                a = reads(a.column("meter_idx").to_numpy(), a.column("reading_type").to_numpy(),
                          t, v)
            s.append_reads(a)
            if when == "days":
                s.compact()
            elif when is not None:
                now[0] = when
                s.compact()
        for a, b, rt, d, shift in sc["queries"]:
            lo = int(a * sc["meters"])
            n = int(b * (sc["meters"] - lo))
            day = T0 + d * DAY + shift
            got = rows(s.feeder_interval_sum(lo, lo + n, rt, day))
            assert got == by_scan(s, lo, lo + n, rt, day), (lo, n, rt, d, shift)


def test_default_store_answers_feeder_days_from_block_sums(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No day copies; the year parts get a sidecar each; a feeder-day decodes only its
    partial blocks' rows of the year file (not the feeder's whole year)."""
    c = cfg(part_rows=20_000, row_group_rows=1024)
    assert StoreConfig().day_copies is False and StoreConfig().block_meters == 16
    a = grid_reads(64, 10, rts=(0, 1))  # bucket 0 and 1: 32 meters x 2 x 960 each
    with ParquetStore(tmp_path, config=c, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        names = [f.split("/")[-1] for f in files(tmp_path)]
        assert not [n for n in names if n.startswith("dcp-")]
        assert sidecars(tmp_path) == sorted(f"{n}.blocks" for n in names)
        decoded = []
        real = ParquetMeta.read

        def counting(self: ParquetMeta, rgs: list[int], columns: list[str] | None
                     ) -> pa.Table:
            t = real(self, rgs, columns)
            decoded.append(len(t))
            return t

        monkeypatch.setattr(ParquetMeta, "read", counting)
        for lo, hi in [(0, 64), (16, 48), (3, 61), (5, 9)]:
            decoded.clear()
            got = rows(s.feeder_interval_sum(lo, hi, 1, T0 + 4 * DAY))
            n = sum(decoded)
            assert got == by_scan(s, lo, hi, 1, T0 + 4 * DAY)
            partial = (-lo % 16) + hi % 16 if hi - lo >= 16 else hi - lo
            # rows of the partial blocks' meters, in whole row groups of 1024 rows
            assert n <= partial * 2 * 960 + 4 * 1024, (lo, hi, decoded)
        assert s.stats().bytes_on_disk["reads"] > sum(
            p.stat().st_size for p in (tmp_path / "reads").rglob("*.parquet"))


def test_unreadable_sidecar_falls_back_to_rows(tmp_path: Path) -> None:
    a = grid_reads(40, 2, rts=(0, 1))
    with ParquetStore(tmp_path, config=cfg(), clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        for p in (tmp_path / "reads").rglob("*.blocks"):
            p.write_bytes(b"not parquet")
        for lo, hi in [(0, 40), (3, 37)]:
            assert rows(s.feeder_interval_sum(lo, hi, 1, T0 + DAY)) == by_scan(
                s, lo, hi, 1, T0 + DAY)


def test_sidecars_deleted_with_their_file_and_orphans_removed(tmp_path: Path) -> None:
    a = grid_reads(20, 2)
    with ParquetStore(tmp_path, config=cfg(top_level="month"), clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        first = sidecars(tmp_path)
        assert [n[:6] for n in first] == ["mon-01"]
        s.append_reads(grid_reads(20, 1, t0=T0 + 5 * DAY))  # late: month merged again
        s.compact()
        second = sidecars(tmp_path)
        assert len(second) == 1 and second != first  # the old one went with its file
    d = next((tmp_path / "reads").rglob("y=2026"))
    (d / "mon-01-000000000999.parquet.blocks").write_bytes(b"x")  # crash leftover
    with ParquetStore(tmp_path, config=cfg(top_level="month"), clock=lambda: CLOSED) as s:
        s.append_reads(grid_reads(1, 1, t0=T0 + 40 * DAY))  # takes bucket 0: cleanup
        assert sidecars(tmp_path) == second


def test_migration_drops_copies_and_adds_missing_sums(tmp_path: Path) -> None:
    """A store written with day copies and no block sums: compacted with the default
    configuration it keeps no copies and its year file gets its sums."""
    a = grid_reads(40, 3, rts=(0, 1))
    old = cfg(day_copies=True, block_meters=0)
    with ParquetStore(tmp_path, config=old, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
    assert sidecars(tmp_path) == []
    assert any("/dcp-" in f for f in files(tmp_path))
    with ParquetStore(tmp_path, config=cfg(), clock=lambda: CLOSED) as s:
        before = [rows(s.feeder_interval_sum(3, 37, 0, T0 + d * DAY)) for d in range(3)]
        s.compact()
        assert not any("/dcp-" in f for f in files(tmp_path))
        assert len(sidecars(tmp_path)) == 2  # buckets 0 and 1
        for d in range(3):
            got = rows(s.feeder_interval_sum(3, 37, 0, T0 + d * DAY))
            assert got == before[d] == by_scan(s, 3, 37, 0, T0 + d * DAY)
        assert rows(s.scan_reads()) == sorted(rows(a))


def test_block_meters_must_be_a_power_of_two() -> None:
    from headend.errors import ConfigError

    with pytest.raises(ConfigError):
        StoreConfig(block_meters=24)
    assert StoreConfig(block_meters=0).block_bits == 0
    assert StoreConfig(block_meters=64).block_bits == 6


SIDECARS_THEN_DIE = """
real = C._fs.publish_path
def sidecars_then_die(path, write_to, *a, **k):
    if path.name.startswith("year-") and path.suffix == ".parquet":
        write_to(C._fs.temp_path(path))  # publishes the sidecars, not the year file
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, write_to, *a, **k)
C._fs.publish_path = sidecars_then_die
"""


def test_kill_9_after_the_sidecars_before_their_file(tmp_path: Path) -> None:
    a = killed_in_compaction(
        tmp_path, "bucket_bits=5, row_group_rows=1024, merge_rows=4096, "
        "auto_compact_segments=0, writer_threads=1, block_meters=4", SIDECARS_THEN_DIE)
    orphan = sidecars(tmp_path)
    assert len(orphan) == 1 and not list((tmp_path / "reads").rglob(orphan[0][:-7]))
    c = cfg(block_meters=4)
    with ParquetStore(tmp_path, config=c, clock=lambda: CLOSED) as s:
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert s.append_reads(a).accepted == 0  # takes the bucket: orphans removed
        assert sidecars(tmp_path) == []
        for lo, hi in [(0, 10), (1, 9)]:
            assert rows(s.feeder_interval_sum(lo, hi, 0, T0)) == by_scan(s, lo, hi, 0, T0)
        s.compact()
        assert len(sidecars(tmp_path)) == 1
        for lo, hi in [(0, 10), (1, 9)]:
            assert rows(s.feeder_interval_sum(lo, hi, 0, T0)) == by_scan(s, lo, hi, 0, T0)
