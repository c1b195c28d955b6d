"""Day copies (``dcp-MMDD``, opt-in with ``day_copies=True`` since block sums answer
feeder-days by default): feeder-days from the copy equal a plain scan, late data,
dedup across copies, crash safety of the copy step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headend.store import ParquetStore, StoreConfig
from headend.store._keys import READS_KIND
from headend.store._query import interval_sum

from ._data import DAY, T0, grid_reads, reads, registers, rows
from .test_parquet_store import files, run_child

CFG = StoreConfig(bucket_bits=5, row_group_rows=1024, merge_rows=4096, top_level="year",
                  day_copies=True, auto_compact_segments=3, writer_threads=1)
CLOSED = T0 + 400 * DAY  # 2026 closed: year files


def feeder_by_scan(s: ParquetStore, lo: int, hi: int, rt: int, day: int) -> list[object]:
    t = s.scan_reads(meters=np.arange(lo, hi, dtype=np.int32), start=day, end=day + DAY,
                     reading_types=np.array([rt], np.uint8))
    return rows(interval_sum(t))


def check_feeders(s: ParquetStore, days: int, n_meters: int) -> None:
    for d in range(days + 1):
        for lo, hi in [(0, n_meters), (3, 29), (30, 45), (31, 32)]:
            for rt in (0, 1):
                got = rows(s.feeder_interval_sum(lo, hi, rt, T0 + d * DAY))
                assert got == feeder_by_scan(s, lo, hi, rt, T0 + d * DAY), (d, lo, hi, rt)


def check_histories(s: ParquetStore, meters: range, start: int, end: int) -> None:
    for m in meters:
        for rt in (0, 1):
            want = s.scan_reads(meters=np.array([m], np.int32), start=start, end=end,
                                reading_types=np.array([rt], np.uint8))
            assert rows(s.meter_history(m, rt, start, end)) == sorted(rows(want)), (m, rt)


def copy_names(root: Path) -> list[str]:
    return [f.split("/")[-1] for f in files(root) if "/dcp-" in f]


def test_year_files_with_day_copies_equal_plain_scan(tmp_path: Path) -> None:
    a = grid_reads(40, 3, rts=(0, 1))  # buckets 0 and 1, Jan 1 .. Jan 4 00:00
    with ParquetStore(tmp_path, config=CFG, clock=lambda: CLOSED) as s:
        for i in range(0, len(a), 2000):
            s.append_reads(a.slice(i, 2000))
        s.append_registers(registers([1, 2], [0, 0], [T0 + 60, T0 + DAY], [5, 6]))
        s.compact()
        assert not list((tmp_path / "registers").rglob("dcp-*"))  # reads only
        names = [f.split("/")[-1][:8] for f in files(tmp_path)]
        assert sorted(set(names)) == ["dcp-0101", "dcp-0102", "dcp-0103", "dcp-0104", "year-000"]
        assert s._dirs.copy(s._dir(READS_KIND, 0, 2026), 2026, "0102") is not None
        assert rows(s.scan_reads()) == sorted(rows(a))  # copies are not scanned twice
        st = s.stats()
        assert st.rows["reads"] == len(a)
        check_feeders(s, 3, 40)
        assert s.append_reads(a).accepted == 0  # dedup unchanged by copies
    with ParquetStore(tmp_path, config=CFG, clock=lambda: CLOSED) as s:
        check_feeders(s, 3, 40)


def test_late_data_invalidates_then_recopies(tmp_path: Path) -> None:
    a = grid_reads(40, 2, rts=(0, 1))
    with ParquetStore(tmp_path, config=CFG, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        before = copy_names(tmp_path)
        late = reads([5, 33, 33], [0, 0, 1], [T0 + DAY + 450, T0 + DAY + 450, T0 + DAY + 900],
                     [7, 9, 11])
        assert s.append_reads(late).new.tolist() == [True, True, False]
        d = s._dir(READS_KIND, 0, 2026)
        assert s._dirs.copy(d, 2026, "0102") is None  # a newer segment: copy not valid
        assert s._dirs.copy(d, 2026, "0101") is not None
        check_feeders(s, 2, 40)  # falls back to the year file + segment
        check_histories(s, range(3, 8), T0, T0 + 3 * DAY)  # overlapping pieces: sorted
        s.compact()
        after = copy_names(tmp_path)
        assert len(after) == len(before) and after != before  # 0102 copies replaced
        assert s._dirs.copy(d, 2026, "0102") is not None
        check_feeders(s, 2, 40)
        assert s.append_reads(late).accepted == 0
        assert s.append_reads(a).accepted == 0
        assert rows(s.scan_reads()) == sorted(rows(a) + rows(late.slice(0, 2)))


def test_meter_history_across_years_and_parts(tmp_path: Path) -> None:
    a = grid_reads(12, 4, rts=(0, 1), t0=T0 - 2 * DAY)  # Dec 30 2025 .. Jan 3 2026
    with ParquetStore(tmp_path, config=PARTS, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        check_histories(s, range(12), T0 - 3 * DAY, T0 + 5 * DAY)
        check_histories(s, range(0, 12, 5), T0 - DAY + 900, T0 + DAY)
        s.append_reads(reads([4], [1], [T0 - 450], [3]))  # late, into the closed year
        check_histories(s, range(3, 6), T0 - 3 * DAY, T0 + 5 * DAY)


def test_copies_only_when_day_files_hold_the_whole_day(tmp_path: Path) -> None:
    a = grid_reads(8, 2)
    off = StoreConfig(**{**{f: getattr(CFG, f) for f in CFG.__dataclass_fields__},
                         "day_copies": False})
    with ParquetStore(tmp_path, config=off, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
    assert copy_names(tmp_path) == []
    late = reads([1], [0], [T0 + 450], [5])
    with ParquetStore(tmp_path, config=CFG, clock=lambda: CLOSED) as s:
        s.append_reads(late)
        s.compact()  # day 0101 is also in the year file: no copy of 0101 alone
        assert copy_names(tmp_path) == []
        check_feeders(s, 2, 8)
    with ParquetStore(tmp_path, config=CFG, clock=lambda: CLOSED) as s:
        s.append_reads(grid_reads(8, 1, t0=T0 + 9 * DAY))  # the year file is unmarked:
        s.compact()  # it may hold any day, so no copies yet
        assert copy_names(tmp_path) == []
        check_feeders(s, 11, 8)
    with ParquetStore(tmp_path, config=off, clock=lambda: CLOSED) as s:
        s.compact()  # copy-less merges would let copies go stale: they are removed
        assert copy_names(tmp_path) == []


CRASH_COPY = """
import os, signal, sys
from pathlib import Path
import numpy as np, pyarrow as pa
from headend.model import schema as S
from headend.store import ParquetStore, StoreConfig
import headend.store._compact as C
cfg = StoreConfig(bucket_bits=5, row_group_rows=1024, merge_rows=4096, top_level="year",
                  day_copies=True, auto_compact_segments=0, writer_threads=1)
t0, mode = int(sys.argv[2]), sys.argv[3]
n = 10 * 96
m = np.repeat(np.arange(10, dtype=np.int32), 96)
t = np.tile(t0 + 900 * (1 + np.arange(96, dtype=np.int64)), 10)
tab = pa.table([pa.array(m), pa.array(np.zeros(n, np.uint8)), pa.array(t).cast(S.TS),
                pa.array((m * 7 + t % 13).astype(np.int32)), pa.array(np.zeros(n, np.uint32))],
               schema=S.READS)
s = ParquetStore(Path(sys.argv[1]), config=cfg, clock=lambda: t0 + 400 * 86400)
s.append_reads(tab)
if mode in ("late", "in_copy_merge"):  # a first compaction, then late data for the same day
    s.compact()
    late = tab.slice(0, 1).set_column(2, "interval_end", pa.array([t0 + 450]).cast(S.TS))
    s.append_reads(late)
print("acked", flush=True)
real_copies, real_publish = C.make_day_copies, C._fs.publish_path
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if mode in ("after_copy", "late"):
    def copies_then_die(*a, **k):
        real_copies(*a, **k); die()
    C.make_day_copies = copies_then_die
elif mode == "after_year":
    def publish_then_die(path, *a, **k):
        real_publish(path, *a, **k)
        if path.name.startswith("year-"):
            die()
    C._fs.publish_path = publish_then_die
elif mode == "in_copy_merge":
    def die_on_copy(path, *a, **k):
        if path.name.startswith("dcp-"):
            die()
        real_publish(path, *a, **k)
    C._fs.publish_path = die_on_copy
s.compact()
print("not reached", flush=True)
"""


@pytest.mark.parametrize("mode", ["after_copy", "after_year", "late", "in_copy_merge"])
def test_kill_9_in_copy_compaction(tmp_path: Path, mode: str) -> None:
    p = run_child(CRASH_COPY, str(tmp_path), str(T0), mode)
    assert p.returncode == -9, p.stderr
    assert p.stdout == "acked\n"
    a = child_reads()
    late = [(0, 0, T0 + 450, (T0 + 900) % 13, 0)] if mode in ("late", "in_copy_merge") else []
    expect = sorted(rows(a) + late)
    cfg = StoreConfig(**{**{f: getattr(CFG, f) for f in CFG.__dataclass_fields__},
                         "auto_compact_segments": 0})
    for _ in range(2):  # as the crash left it, then after a completed compaction
        with ParquetStore(tmp_path, config=cfg, clock=lambda: CLOSED) as s:
            assert rows(s.scan_reads()) == expect
            assert s.append_reads(a).accepted == 0
            for lo, hi in [(0, 10), (2, 5)]:
                assert rows(s.feeder_interval_sum(lo, hi, 0, T0)) == feeder_by_scan(
                    s, lo, hi, 0, T0)
            s.compact()
    assert not [q for q in (tmp_path / "reads").rglob(".tmp-*")]
    assert [n[:8] for n in copy_names(tmp_path)] == ["dcp-0101", "dcp-0102"]


PARTS = StoreConfig(**{**{f: getattr(CFG, f) for f in CFG.__dataclass_fields__},
                       "part_rows": 5000, "auto_compact_segments": 0})


def test_year_split_into_meter_parts(tmp_path: Path) -> None:
    a = grid_reads(40, 3, rts=(0, 1))  # bucket 0: 32 meters x 2 x 289 = 18,496 rows
    with ParquetStore(tmp_path, config=PARTS, clock=lambda: CLOSED) as s:
        s.append_reads(a)
        s.compact()
        names = [f.split("/")[-1] for f in files(tmp_path) if "/year-" in f]
        assert [n[18:] for n in names] == [  # bucket 1: 4,624 rows, not split
            "000of004-0-7.parquet", "001of004-8-15.parquet", "002of004-16-23.parquet",
            "003of004-24-31.parquet", "parquet"]
        sidecars = sorted(p.name for p in (tmp_path / "reads").rglob("year-*.daily"))
        assert sidecars == sorted(f"{n}.daily" for n in names)  # each part its rollup
        before = files(tmp_path)
        s.compact()
        assert files(tmp_path) == before  # a split year is one year file
        assert rows(s.scan_reads()) == sorted(rows(a))
        for m in (0, 7, 8, 31, 32, 39):
            got = s.meter_history(m, 1, T0, T0 + 4 * DAY)
            assert rows(got) == [r for r in sorted(rows(a)) if r[0] == m and r[1] == 1]
        check_feeders(s, 3, 40)
        assert s.append_reads(a).accepted == 0


def child_reads() -> pa.Table:
    """The reads :func:`child_appending` acknowledges (day ``T0``)."""
    m = np.repeat(np.arange(10), 96)
    t = np.tile(T0 + 900 * (1 + np.arange(96)), 10)
    return reads(m, np.zeros_like(m), t, m * 7 + t % 13)


def child_appending(config: str) -> str:
    """Head of a child process: a store of ``StoreConfig(<config>)`` at argv[1], clock
    in the next year, with 10 meters x 96 reads of the day at argv[2] acknowledged."""
    return """
import os, signal, sys
from pathlib import Path
import numpy as np, pyarrow as pa
from headend.model import schema as S
from headend.store import ParquetStore, StoreConfig
import headend.store._compact as C
cfg = StoreConfig(CONFIG)
t0 = int(sys.argv[2])
n = 10 * 96
m = np.repeat(np.arange(10, dtype=np.int32), 96)
t = np.tile(t0 + 900 * (1 + np.arange(96, dtype=np.int64)), 10)
tab = pa.table([pa.array(m), pa.array(np.zeros(n, np.uint8)), pa.array(t).cast(S.TS),
                pa.array((m * 7 + t % 13).astype(np.int32)), pa.array(np.zeros(n, np.uint32))],
               schema=S.READS)
s = ParquetStore(Path(sys.argv[1]), config=cfg, clock=lambda: t0 + 400 * 86400)
s.append_reads(tab)
print("acked", flush=True)
""".replace("CONFIG", config)


def killed_in_compaction(tmp_path: Path, config: str, patch: str) -> pa.Table:
    """Run :func:`child_appending` with ``config``, then ``patch`` (code that makes the
    child SIGKILL itself) and ``compact()``; returns the reads it acknowledged."""
    code = child_appending(config) + patch + '\ns.compact()\nprint("not reached")\n'
    p = run_child(code, str(tmp_path), str(T0))
    assert p.returncode == -9, p.stderr
    assert p.stdout == "acked\n"
    return child_reads()


DIE_ON_SECOND_PART = """
real, calls = C._fs.publish_path, []
def die_on_second_part(path, *a, **k):
    real(path, *a, **k)
    if "of" in path.name and path.suffix == ".parquet":  # data parts, not rollups
        calls.append(path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
C._fs.publish_path = die_on_second_part
"""


def test_kill_9_between_parts(tmp_path: Path) -> None:
    a = killed_in_compaction(
        tmp_path, 'bucket_bits=5, row_group_rows=1024, merge_rows=4096, top_level="year", '
        "part_rows=300, auto_compact_segments=0, writer_threads=1", DIE_ON_SECOND_PART)
    assert sum("of" in f for f in files(tmp_path)) == 2  # an incomplete set on disk
    cfg = StoreConfig(bucket_bits=5, row_group_rows=1024, merge_rows=4096, top_level="year",
                      part_rows=300, auto_compact_segments=0)
    with ParquetStore(tmp_path, config=cfg, clock=lambda: CLOSED) as s:
        assert rows(s.scan_reads()) == sorted(rows(a))  # the incomplete set is not read
        assert s.append_reads(a).accepted == 0
        assert not [f for f in files(tmp_path) if "of" in f]  # deleted when bucket taken
        s.compact()
        assert [f.split("-")[2][3:] for f in files(tmp_path) if "of" in f] == ["of004"] * 4
        assert rows(s.scan_reads()) == sorted(rows(a))
        assert s.append_reads(a).accepted == 0
