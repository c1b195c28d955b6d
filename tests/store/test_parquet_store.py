"""ParquetStore specifics: tiers of compaction, crash safety, bucket locks, layout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from headend.errors import StorageError
from headend.store import ParquetStore, StoreConfig

from ._data import DAY, T0, grid_reads, reads, rows
from .conftest import SMALL

ROOT_SRC = str(Path(__file__).resolve().parents[2] / "src")


def files(root: Path) -> list[str]:
    """Data files of the reads (not their sidecars: daily rollups, block sums)."""
    return sorted(str(p.relative_to(root)) for p in (root / "reads").rglob("*")
                  if p.is_file() and not p.name.endswith((".daily", ".blocks")))


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT_SRC)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_layout_segments_then_day_then_month(tmp_path: Path) -> None:
    now = [float(T0 + 5 * DAY)]
    s = ParquetStore(tmp_path, config=SMALL, clock=lambda: now[0])
    a = grid_reads(20, 2, rts=(0, 1))  # meters 0..19: buckets 0 and 1, Jan 1-3
    s.append_reads(a.slice(0, 3000))
    s.append_reads(a.slice(2000))
    assert files(tmp_path) == [  # one multi-day segment per bucket and append
        "reads/b=000000/y=2026/seg-0101-0103-000000000000.arrow",
        "reads/b=000000/y=2026/seg-0101-0103-000000000001.arrow",
        "reads/b=000001/y=2026/seg-0101-0103-000000000000.arrow"]
    assert rows(s.scan_reads()) == sorted(rows(a))
    s.compact()  # January is open: day files only
    assert [f.split("/")[-1] for f in files(tmp_path) if "b=000000" in f] == [
        "day-0101-000000000002.parquet", "day-0102-000000000003.parquet",
        "day-0103-000000000004.parquet"]
    st = s.stats()
    assert (st.rows["reads"], st.segments["reads"], st.compacted_files["reads"]) == (
        len(a), 0, 6)
    now[0] = float(T0 + 33 * DAY)  # February 3: January closed (2-day grace)
    s.compact()
    assert files(tmp_path) == ["reads/b=000000/y=2026/mon-01-000000000005.parquet",
                               "reads/b=000001/y=2026/mon-01-000000000004.parquet"]
    assert rows(s.scan_reads()) == sorted(rows(a))
    assert s.append_reads(a).accepted == 0  # index rebuilt from month files after reopen too
    s.close()
    s = ParquetStore(tmp_path, config=SMALL)
    assert s.append_reads(a.slice(100, 50)).accepted == 0
    late = reads([3], [0], [T0 + DAY + 450], [77])  # off-grid, into a compacted month
    assert s.append_reads(late).accepted == 1
    s.compact()
    assert rows(s.scan_reads(meters=np.array([3], np.int32), start=T0 + DAY,
                             end=T0 + DAY + 900, reading_types=np.array([0], np.uint8))) == [
        rows(a.slice(3 * 2 * 192 + 95, 1))[0], (3, 0, T0 + DAY + 450, 77, 0)]
    s.close()


def test_year_tier_and_bounded_merge(tmp_path: Path) -> None:
    cfg = StoreConfig(bucket_bits=4, row_group_rows=1024, merge_rows=2048, top_level="year",
                      day_copies=False,
                      auto_compact_segments=3, writer_threads=1)
    a = grid_reads(16, 3, t0=T0 - 2 * DAY)  # Dec 30 2025 .. Jan 1 2026 (end at 00:00)
    with ParquetStore(tmp_path, config=cfg, clock=lambda: T0 + 400 * DAY) as s:
        for i in range(0, len(a), 500):  # auto-compaction kicks in every 3 segments
            s.append_reads(a.slice(i, 500))
        s.compact()
        assert [f.split("/")[-1][:4] for f in files(tmp_path)] == ["year", "year"]
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert s.append_reads(a).accepted == 0


def test_temp_and_obsolete_files_cleaned_when_bucket_taken(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0) as s:
        s.append_reads(reads([1, 2], [0, 0], [T0 + 900] * 2, [1, 2]))
        s.compact()
    d = tmp_path / "reads" / "b=000000" / "y=2026"
    (d / ".tmp-999999-abc-seg-0101-000000000009.arrow").write_bytes(b"partial")
    day = next(d.glob("day-*"))
    # an obsolete leftover: an older segment the day file supersedes (crash before unlink)
    (d / "seg-0101-000000000000.arrow").write_bytes(b"garbage never read")
    with ParquetStore(tmp_path, config=SMALL) as s:
        assert rows(s.scan_reads()) == [(1, 0, T0 + 900, 1, 0), (2, 0, T0 + 900, 2, 0)]
        assert s.append_reads(reads([2, 3], [0, 0], [T0 + 900] * 2, [0, 3])).new.tolist() == [
            False, True]
        names = sorted(p.name for p in d.iterdir())
        assert names == [day.name, "seg-0101-000000000002.arrow"]


CRASH_APPEND = """
import os, signal, sys, numpy as np, pyarrow as pa
from pathlib import Path
from headend.model import schema as S
from headend.store import ParquetStore, StoreConfig
from headend.store import parquet as P
cfg = StoreConfig(bucket_bits=4, auto_compact_segments=0, writer_threads=2)
s = ParquetStore(Path(sys.argv[1]), config=cfg)
t0 = int(sys.argv[2])
def tab(m, v):
    return pa.table([pa.array(np.array(m, np.int32)), pa.array(np.zeros(len(m), np.uint8)),
        pa.array(np.full(len(m), t0 + 900, np.int64)).cast(S.TS), pa.array(np.array(v, np.int32)),
        pa.array(np.zeros(len(m), np.uint32))], schema=S.READS)
s.append_reads(tab([1, 2, 16], [10, 20, 160]))  # both bucket directories exist
print("acked", flush=True)
mode = sys.argv[3]
orig_sync, orig_replace = P._fs.fsync_dir, os.replace
def die_after_sync(d):
    orig_sync(d); os.kill(os.getpid(), signal.SIGKILL)
def die_before_rename(a, b):
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "after_durable":
    P._fs.fsync_dir = die_after_sync
elif mode == "before_rename":
    os.replace = die_before_rename
elif mode == "in_compaction":
    s.append_reads(tab([3, 17], [30, 170]))
    import headend.store._compact as C
    real = C._fs.publish_path
    def die_after_publish(*a, **k):
        real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)
    C._fs.publish_path = die_after_publish
    s.compact()
s.append_reads(tab([2, 3, 17], [0, 30, 170]))
print("not reached", flush=True)
"""


@pytest.mark.parametrize("mode", ["after_durable", "before_rename", "in_compaction"])
def test_kill_9_then_retry_no_loss_no_doubles(tmp_path: Path, mode: str) -> None:
    p = run_child(CRASH_APPEND, str(tmp_path), str(T0), mode)
    assert p.returncode == -9, p.stderr
    assert p.stdout == "acked\n"
    cfg = StoreConfig(bucket_bits=4, auto_compact_segments=0)
    with ParquetStore(tmp_path, config=cfg) as s:
        retry = s.append_reads(reads([2, 3, 17], [0, 0, 0], [T0 + 900] * 3, [0, 30, 170]))
        # the killed append made 3 and 17 durable before dying, except before the rename
        assert retry.new.tolist() == ([False, True, True] if mode == "before_rename"
                                      else [False, False, False])
        s.compact()
        assert rows(s.scan_reads()) == [(1, 0, T0 + 900, 10, 0), (2, 0, T0 + 900, 20, 0),
                                        (3, 0, T0 + 900, 30, 0), (16, 0, T0 + 900, 160, 0),
                                        (17, 0, T0 + 900, 170, 0)]
        assert not [p for p in (tmp_path / "reads").rglob(".tmp-*")]


HOLD_BUCKET = """
import sys, time, numpy as np, pyarrow as pa
from pathlib import Path
from headend.model import schema as S
from headend.store import ParquetStore, StoreConfig
s = ParquetStore(Path(sys.argv[1]), config=StoreConfig(bucket_bits=4))
t = pa.table([pa.array(np.array([5], np.int32)), pa.array(np.zeros(1, np.uint8)),
    pa.array(np.array([int(sys.argv[2]) + 900])).cast(S.TS), pa.array(np.array([1], np.int32)),
    pa.array(np.zeros(1, np.uint32))], schema=S.READS)
s.append_reads(t)
print("holding", flush=True)
sys.stdin.readline()
s.close()
"""


def test_two_processes_bucket_locks(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT_SRC)
    with subprocess.Popen([sys.executable, "-c", HOLD_BUCKET, str(tmp_path), str(T0)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=env) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline() == "holding\n"
            with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=4)) as s:
                with pytest.raises(StorageError, match="reads bucket 0 .* locked by another"):
                    s.append_reads(reads([6], [0], [T0 + 900], [2]))
                assert s.append_reads(reads([16], [0], [T0 + 900], [3])).accepted == 1
                s.compact()  # skips the locked bucket 0, compacts bucket 1
                assert rows(s.scan_reads()) == [(5, 0, T0 + 900, 1, 0), (16, 0, T0 + 900, 3, 0)]
                assert next(f for f in files(tmp_path) if "b=000001" in f).endswith(".parquet")
        finally:
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(timeout=30)
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=4)) as s:  # free now
        assert s.append_reads(reads([6], [0], [T0 + 900], [2])).accepted == 1


def test_bucket_of_and_index_bound(tmp_path: Path) -> None:
    cfg = StoreConfig(bucket_bits=4, index_cache_bytes=1, auto_compact_segments=0)
    with ParquetStore(tmp_path, config=cfg) as s:
        assert s.bucket_of(np.array([0, 15, 16, 1000], np.int32)).tolist() == [0, 0, 1, 62]
        assert cfg.bucket_size == 16
        a = grid_reads(40, 2)
        s.append_reads(a)
        assert len(s._index._d) == 1  # LRU bounded: evicted indexes rebuild from disk
        assert s.append_reads(a).accepted == 0


def test_background_compaction_with_concurrent_appends_and_scans(tmp_path: Path) -> None:
    cfg = StoreConfig(bucket_bits=4, row_group_rows=1024, merge_rows=4096,
                      auto_compact_segments=3, background_compaction=True, writer_threads=1)
    a = grid_reads(32, 1, rts=(0, 1))
    n = len(a)
    with ParquetStore(tmp_path, config=cfg, clock=lambda: T0) as s:
        done = 0
        for i in range(0, n, 200):
            assert s.append_reads(a.slice(i, 200)).accepted == min(200, n - i)
            done = min(n, i + 200)
            if i % 1000 == 0:  # scans see every acknowledged row, once, while merging
                assert len(s.scan_reads()) == done
        assert s.append_reads(a).accepted == 0
        assert s.background_errors == []
    names = files(tmp_path)
    assert sum(".parquet" in f for f in names) >= 2  # the background merged segments
    with ParquetStore(tmp_path, config=cfg, clock=lambda: T0) as s:
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert s.append_reads(a).accepted == 0
