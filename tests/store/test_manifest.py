"""The owner's manifest (no listing per append) and multi-day segments of bulk files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from headend.errors import StorageError
from headend.store import ParquetStore, StoreConfig
from headend.store import parquet as P

from ._data import DAY, T0, grid_reads, reads, rows
from .conftest import SMALL

ROOT_SRC = str(Path(__file__).resolve().parents[2] / "src")


def names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "reads")) for p in (root / "reads").rglob("*")
                  if p.is_file() and not p.name.endswith((".daily", ".blocks")))


@contextmanager
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Paths listed (os.scandir / os.listdir) inside the block."""
    got: list[str] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(p: Any = ".") -> Any:
        got.append(str(p))
        return real_scandir(p)

    def listdir(p: Any = ".") -> Any:
        got.append(str(p))
        return real_listdir(p)

    with monkeypatch.context() as m:
        m.setattr(os, "scandir", scandir)
        m.setattr(os, "listdir", listdir)
        yield got


def test_append_lists_no_directory_whatever_the_file_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner lists a bucket-year directory once; appends never again, so their cost
    does not grow with the files already there (the year-file ingest of issue 9 spent
    80 % of its time listing)."""
    with ParquetStore(tmp_path, config=SMALL) as s:
        for i in range(300):  # 300 segments of day 1, one read each
            s.append_reads(reads([1], [0], [T0 + 900 * (i + 1)], [i]))
        assert len(names(tmp_path)) == 300
        with listings(monkeypatch) as got:
            for i in range(20):  # old days, new days, a bulk of several days
                assert s.append_reads(reads([5, 6], [0, 0], [T0 + 900 * (300 - 9 * i)] * 2,
                                            [1, 2])).accepted == 2
            assert s.append_reads(grid_reads(4, 5, t0=T0 + 10 * DAY)).accepted == 4 * 480
        assert [p for p in got if "y=" in p] == []
        assert len(s.scan_reads(meters=np.array([1], np.int32))) == 300 + 480
    with ParquetStore(tmp_path, config=SMALL) as s:  # a new owner lists when it takes
        with listings(monkeypatch) as got:  # the bucket (clean-up, manifest), then never
            assert s.append_reads(reads([1], [0], [T0 + 900], [5])).accepted == 0
            assert 1 <= len([p for p in got if p.endswith("y=2026")]) <= 3
            got.clear()
            assert s.append_reads(reads([1], [0], [T0 + 450], [5])).accepted == 1
        assert [p for p in got if "y=" in p] == []


def test_bulk_file_writes_one_segment_per_bucket_year(tmp_path: Path) -> None:
    """A batch of 40 days of 20 meters (2 buckets, 2 years) is 4 segment files, one
    record batch per day; everything reads them per day."""
    a = grid_reads(20, 40, rts=(0, 1), t0=T0 - 10 * DAY)  # 2025-12-22 .. 2026-01-31 00:00
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0 + 5 * DAY) as s:
        assert s.append_reads(a).accepted == len(a)
        assert names(tmp_path) == [
            "b=000000/y=2025/seg-1222-1231-000000000000.arrow",
            "b=000000/y=2026/seg-0101-0131-000000000000.arrow",
            "b=000001/y=2025/seg-1222-1231-000000000000.arrow",
            "b=000001/y=2026/seg-0101-0131-000000000000.arrow"]
        st = s.stats()
        assert (st.rows["reads"], st.segments["reads"]) == (len(a), 4)
        assert rows(s.scan_reads()) == sorted(rows(a))
        day = s.scan_reads(start=T0 + 3 * DAY, end=T0 + 4 * DAY)
        assert len(day) == 20 * 2 * 96
        got: list[int] = []
        s.plan_reads(start=T0, end=T0 + 9 * DAY).run(lambda t: got.append(len(t)))
        assert sum(got) == 20 * 2 * 96 * 9
        h = s.meter_history(3, 1, T0 - 5 * DAY, T0 + 5 * DAY)
        assert len(h) == 96 * 10
        assert s.append_reads(a).accepted == 0
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0 + 5 * DAY) as s:
        assert s.append_reads(a.slice(5000, 3000)).accepted == 0  # indexes from the files
        s.compact()  # December 2025 closed: straight to a month file; January: day files
        got_names = names(tmp_path)
        assert [n for n in got_names if n.startswith("b=000000")] == (
            ["b=000000/y=2025/mon-12-000000000001.parquet"]
            + [f"b=000000/y=2026/day-{mmdd}-{q:012d}.parquet"
               for q, mmdd in enumerate([f"01{d:02d}" for d in range(1, 32)], 1)])
        assert rows(s.scan_reads()) == sorted(rows(a))


def test_multi_day_segment_lives_until_all_its_days_are_merged(tmp_path: Path) -> None:
    """Merging one day of a multi-day segment hides that day of it; the file goes
    when its last day is merged, also across a reopen."""
    a = grid_reads(4, 3)  # meters 0-3 (bucket 0), Jan 1 .. Jan 4 00:00
    late = reads([1], [0], [T0 + DAY + 450], [7])  # off-grid, day 2
    d = tmp_path / "reads" / "b=000000" / "y=2026"
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0) as s:
        s.append_reads(a)
        s.append_reads(late)
        s._bg_compact_day("reads", d, 2026, "0102")  # what the background thread runs
        assert names(tmp_path) == ["b=000000/y=2026/day-0102-000000000002.parquet",
                                   "b=000000/y=2026/seg-0101-0104-000000000000.arrow"]
        want = sorted(rows(a) + rows(late))
        assert rows(s.scan_reads()) == want
        assert s.append_reads(a).accepted == 0
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0) as s:
        assert rows(s.scan_reads()) == want  # the new owner keeps the shared file
        assert len(names(tmp_path)) == 2
        assert s.append_reads(late).accepted == 0
        s.compact()
        assert names(tmp_path) == [f"b=000000/y=2026/day-{x}.parquet" for x in [
            "0101-000000000003", "0102-000000000002", "0103-000000000004",
            "0104-000000000005"]]
        assert rows(s.scan_reads()) == want


def test_reader_in_another_store_sees_new_files(tmp_path: Path) -> None:
    """A reader (no lock, no manifest) lists the directory again when it changed."""
    a = grid_reads(4, 6)
    with ParquetStore(tmp_path, config=SMALL) as w, ParquetStore(tmp_path, config=SMALL) as r:
        w.append_reads(a.slice(0, 1000))
        assert len(r.scan_reads()) == 1000
        w.append_reads(a.slice(1000, 1000))
        w.append_reads(a.slice(1000))
        assert rows(r.scan_reads()) == sorted(rows(a))
        assert rows(w.scan_reads()) == sorted(rows(a))


CRASH_BULK = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from _data import T0, DAY, grid_reads
from headend.store import ParquetStore, StoreConfig
from headend.store import parquet as P
cfg = StoreConfig(bucket_bits=4, auto_compact_segments=0, writer_threads=2,
                  top_level="month", day_copies=False)
root = Path(sys.argv[1])
s = ParquetStore(root, config=cfg, clock=lambda: T0)
a = grid_reads(20, 3)
s.append_reads(a.slice(0, 3000))
print("acked", flush=True)
mode = sys.argv[2]
if mode == "after_durable":
    orig = P._fs.fsync_dir
    def die(d):
        orig(d); os.kill(os.getpid(), signal.SIGKILL)
    P._fs.fsync_dir = die
elif mode == "before_rename":
    def die(a, b):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = die
elif mode == "in_day_merge":
    s.append_reads(a.slice(2000, 2000))
    orig = P._fs.fsync_dir
    def die(d):
        orig(d); os.kill(os.getpid(), signal.SIGKILL)
    import headend.store._compact as C
    real = C._fs.publish_path
    def die_after_publish(*x, **k):
        real(*x, **k); os.kill(os.getpid(), signal.SIGKILL)
    C._fs.publish_path = die_after_publish
    s._bg_compact_day("reads", root / "reads/b=000000/y=2026", 2026, "0102")
s.append_reads(a)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("mode", ["after_durable", "before_rename", "in_day_merge"])
def test_kill_9_during_bulk_append_or_day_merge(tmp_path: Path, mode: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT_SRC)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_BULK), str(tmp_path),
                        mode, str(Path(__file__).parent)], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == -9, p.stderr
    assert p.stdout == "acked\n"
    a = grid_reads(20, 3)
    with ParquetStore(tmp_path, config=SMALL, clock=lambda: T0) as s:
        got = s.scan_reads()
        n = len(got)
        assert n >= 3000 and rows(got) == sorted(rows(got))
        assert len({r[:3] for r in rows(got)}) == n  # no key twice
        assert set(rows(got)) <= set(rows(a))
        retry = s.append_reads(a)
        assert retry.accepted == len(a) - n
        s.compact()
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert not [q for q in (tmp_path / "reads").rglob(".tmp-*")]
        assert not [q for q in (tmp_path / "reads").rglob("seg-*")]


def test_inline_auto_compaction_of_multi_day_segments(tmp_path: Path) -> None:
    """auto_compact_segments without the background thread: the second bulk batch of
    the same days merges every day; the shared files go with their last day."""
    cfg = StoreConfig(bucket_bits=4, auto_compact_segments=2, background_compaction=False,
                      top_level="month", day_copies=False, writer_threads=1)
    a = grid_reads(4, 3)
    with ParquetStore(tmp_path, config=cfg, clock=lambda: T0) as s:
        s.append_reads(a.slice(0, 1000))
        s.append_reads(a.slice(1000))
        assert [n.split("/")[-1][:8] for n in names(tmp_path)] == [
            "day-0101", "day-0102", "day-0103", "day-0104"]
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert s.append_reads(a).accepted == 0


def test_failed_append_then_retry_stores_each_row_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed append may leave some of its segments durable: the owner lists the
    directories again, so the retry finds their keys (no row twice)."""
    a = grid_reads(32, 2)  # buckets 0 and 1: two segment files per append
    real = P._write_segment
    calls = [0]

    def second_fails(path: Path, table: Any, days: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError("disk full")
        real(path, table, days)

    cfg = StoreConfig(bucket_bits=4, auto_compact_segments=0, writer_threads=1,
                      day_copies=False)
    with ParquetStore(tmp_path, config=cfg) as s:
        with monkeypatch.context() as m:
            m.setattr(P, "_write_segment", second_fails)
            with pytest.raises(StorageError):
                s.append_reads(a)
        assert len(names(tmp_path)) == 1  # bucket 0's segment is durable
        assert s.append_reads(a).accepted == len(a) // 2
        got = rows(s.scan_reads())
        assert got == sorted(rows(a))
