"""On-disk layout of the Parquet store: file names, live-file rule, cached metadata.

See :mod:`headend.store.parquet` for the picture. A bucket-year directory holds::

    seg-MMDD-<seq>.arrow     segment of day MMDD (Arrow IPC, sorted by key)
    seg-MMDD-MMDD-<seq>.arrow
                             multi-day segment: one append's rows of the days from
                             the first MMDD to the last, one record batch per day (in
                             day order, each sorted by key, none empty)
    day-MMDD-<seq>.parquet   compacted day MMDD
    mon-MM-<seq>.parquet     compacted month MM
    year-<seq>.parquet       compacted year
    mon-MM-<seq>-<k>of<n>-<lo>-<hi>.parquet, year-<seq>-<k>of<n>-<lo>-<hi>.parquet
                             part k of n of a month/year file split by meter range
                             (meters lo..hi; ``StoreConfig.part_rows``)
    dcp-MMDD-<seq>.parquet   day copy: every row of day MMDD sorted by key (feeder-day
                             queries; written when ``StoreConfig.day_copies``)

A multi-day segment is listed as one :class:`FileEntry` per day (``batch`` = the
day's record batch), so every rule below holds per day: a day of it is obsolete once
a compacted file covering that day is newer, and the file itself is deleted only when
all of its days are (:func:`split_live` never reports a shared file dead while one of
its days lives).

``seq`` counts up per directory. **Live-file rule**: a file is obsolete when a
compacted file (day, mon or year) whose scope contains its scope has a larger seq.
Publishing a compacted file is therefore the commit point of a compaction; the files
it replaces are deleted afterwards and ignored if a crash leaves them behind. A file
split into parts counts (is live, covers others) only once all n parts exist: the
directory fsync after the last part's rename is its commit point; an incomplete set
is never read and is deleted by the bucket's owner.

**Day copies** (``dcp``) stand outside that rule: they duplicate rows the live files
hold and are never read by scans, dedup or meter histories. The newest copy of a day
is **valid** while no live segment or day file of that day has a larger seq
(:func:`valid_copies`); compaction writes a day's copy before any month/year merge
absorbs the day's files, so a month/year file never holds a row of a day that its
valid copy lacks. An invalid copy is only ignored by queries (and is the base of the
day's next copy).
"""

from __future__ import annotations

import calendar
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from headend.store._fs import TMP_PREFIX

LEVELS: Final = ("seg", "day", "mon", "year", "dcp")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One data file of a bucket-year directory."""

    path: Path
    level: str  # seg | day | mon | year | dcp
    scope: str  # "MMDD" | "MM" | ""
    seq: int
    year: int
    size: int
    mtime_ns: int
    part_k: int = 0  # part k of part_n (0 of 0: not split)
    part_n: int = 0
    meter_lo: int = 0  # meters the part holds (by its name; whole range if not split)
    meter_hi: int = (1 << 31) - 1
    batch: int = -1  # record batch of this day in a multi-day segment (-1: whole file)

    @property
    def is_segment(self) -> bool:
        return self.level == "seg"

    @property
    def shared(self) -> bool:
        """Whether this is one day of a multi-day segment (the file holds other days)."""
        return self.batch >= 0

    @property
    def is_copy(self) -> bool:
        return self.level == "dcp"

    def time_range(self) -> tuple[int, int]:
        """``[t0, t1)`` Unix seconds the file's rows can fall in (by its scope)."""
        y = self.year
        if self.scope == "":
            return calendar.timegm((y, 1, 1, 0, 0, 0)), calendar.timegm((y + 1, 1, 1, 0, 0, 0))
        m = int(self.scope[:2])
        if len(self.scope) == 2:
            ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
            return calendar.timegm((y, m, 1, 0, 0, 0)), calendar.timegm((ny, nm, 1, 0, 0, 0))
        t0 = calendar.timegm((y, m, int(self.scope[2:]), 0, 0, 0))
        return t0, t0 + 86_400


def parse_name(directory: Path, name: str, year: int, st: os.stat_result) -> list[FileEntry]:
    """The entries of a data file name ([] for any other name; one per day of a
    multi-day segment)."""
    if name.startswith(TMP_PREFIX) or "." not in name:
        return []
    stem, ext = name.rsplit(".", 1)
    parts = stem.split("-")
    split: tuple[int, int, int, int] | None = None
    if ext == "parquet" and len(parts) >= 5 and "of" in parts[-3]:
        try:
            k, n = parts[-3].split("of")
            split = (int(k), int(n), int(parts[-2]), int(parts[-1]))
        except ValueError:
            return []
        if parts[0] not in ("mon", "year") or not 0 <= split[0] < split[1]:
            return []
        parts = parts[:-3]
    path = directory / name
    try:
        if parts[0] == "seg" and ext == "arrow" and len(parts[1]) == 4:
            if len(parts) == 3:
                return [FileEntry(path, "seg", parts[1], int(parts[2]), year,
                                  st.st_size, st.st_mtime_ns)]
            if len(parts) == 4 and len(parts[2]) == 4:
                return segment_entries(path, year, parts[1], parts[2], int(parts[3]),
                                       st.st_size, st.st_mtime_ns)
            return []
        if ext != "parquet":
            return []
        if parts[0] in ("day", "dcp") and len(parts) == 3 and len(parts[1]) == 4:
            lvl, scope, seq = parts[0], parts[1], int(parts[2])
        elif parts[0] == "mon" and len(parts) == 3 and len(parts[1]) == 2:
            lvl, scope, seq = "mon", parts[1], int(parts[2])
        elif parts[0] == "year" and len(parts) == 2:
            lvl, scope, seq = "year", "", int(parts[1])
        else:
            return []
    except ValueError:
        return []
    if split is not None:
        return [FileEntry(path, lvl, scope, seq, year, st.st_size, st.st_mtime_ns, *split)]
    return [FileEntry(path, lvl, scope, seq, year, st.st_size, st.st_mtime_ns)]


def _day_range(year: int, first: str, last: str) -> list[str]:
    """MMDD of each day from ``first`` to ``last`` of ``year`` ([] if not a range)."""
    try:
        d0 = calendar.timegm((year, int(first[:2]), int(first[2:]), 0, 0, 0)) // 86_400
        d1 = calendar.timegm((year, int(last[:2]), int(last[2:]), 0, 0, 0)) // 86_400
    except ValueError:
        return []
    out = [time.strftime("%m%d", time.gmtime(d * 86_400)) for d in range(d0, d1 + 1)]
    return out if out and out[0] == first and out[-1] == last else []


def segment_entries(path: Path, year: int, first: str, last: str, seq: int, size: int,
                    mtime_ns: int) -> list[FileEntry]:
    """The entries of a segment of the days ``first..last`` (one entry per day of a
    multi-day segment, one with ``batch=-1`` for a one-day segment)."""
    if first == last:
        return [FileEntry(path, "seg", first, seq, year, size, mtime_ns)]
    return [FileEntry(path, "seg", d, seq, year, size, mtime_ns, batch=i)
            for i, d in enumerate(_day_range(year, first, last))]


def file_name(level: str, scope: str, seq: int, last: str | None = None) -> str:
    """Name of a data file (see the module docstring); ``last``: the last day of a
    multi-day segment."""
    if level == "seg":
        if last is not None and last != scope:
            return f"seg-{scope}-{last}-{seq:012d}.arrow"
        return f"seg-{scope}-{seq:012d}.arrow"
    if level == "year":
        return f"year-{seq:012d}.parquet"
    return f"{level}-{scope}-{seq:012d}.parquet"


def part_name(whole: Path, k: int, n: int, meter_lo: int, meter_hi: int) -> Path:
    """Path of part ``k`` of ``n`` (meters ``meter_lo..meter_hi``) of the file ``whole``."""
    return whole.with_name(f"{whole.stem}-{k:03d}of{n:03d}-{meter_lo}-{meter_hi}.parquet")


def list_dir(directory: Path, year: int) -> list[FileEntry]:
    """Every data file of a bucket-year directory (live or not), by seq."""
    out: list[FileEntry] = []
    try:
        it = os.scandir(directory)
    except FileNotFoundError:
        return out
    with it:
        for e in it:
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            out.extend(parse_name(directory, e.name, year, st))
    out.sort(key=lambda f: f.seq)
    return out


def read_segment(f: FileEntry) -> pa.Table:
    """The rows of a segment entry (its day's record batch of a multi-day segment)."""
    with pa.memory_map(str(f.path)) as src:
        rd = pa.ipc.open_file(src)
        if f.batch < 0:
            return rd.read_all()
        return pa.Table.from_batches([rd.get_batch(f.batch)])


def split_live(entries: list[FileEntry]) -> tuple[list[FileEntry], list[FileEntry]]:
    """(live, obsolete) files by the live-file rule (day copies are in neither)."""
    entries = [f for f in entries if f.level != "dcp"]
    got: dict[tuple[str, str, int], set[int]] = {}
    for f in entries:
        if f.part_n:
            got.setdefault((f.level, f.scope, f.seq), set()).add(f.part_k)
    incomplete = [f for f in entries
                  if f.part_n and len(got[(f.level, f.scope, f.seq)]) != f.part_n]
    if incomplete:  # a crashed split compaction: never read, never covers
        entries = [f for f in entries if f not in incomplete]
    best: dict[str, int] = {}
    for f in entries:
        if f.level != "seg":
            best[f.scope] = max(best.get(f.scope, -1), f.seq)
    live: list[FileEntry] = []
    dead: list[FileEntry] = []
    for f in entries:
        cover = max(best.get(f.scope[:4], -1) if len(f.scope) == 4 else -1,
                    best.get(f.scope[:2], -1) if len(f.scope) >= 2 else -1,
                    best.get("", -1))
        (dead if cover > f.seq else live).append(f)
    if any(f.shared for f in dead):  # a multi-day segment is dead once all its days are
        keep = {f.path for f in live if f.shared}
        dead = [f for f in dead if f.path not in keep]
    return live, dead + incomplete


def newest_copies(entries: list[FileEntry]) -> tuple[dict[str, FileEntry], list[FileEntry]]:
    """(newest day copy per MMDD, older copies) among ``entries``."""
    best: dict[str, FileEntry] = {}
    old: list[FileEntry] = []
    for f in entries:
        if f.level != "dcp":
            continue
        cur = best.get(f.scope)
        if cur is None or f.seq > cur.seq:
            if cur is not None:
                old.append(cur)
            best[f.scope] = f
        else:
            old.append(f)
    return best, old


def valid_copies(entries: list[FileEntry]) -> dict[str, FileEntry]:
    """Day copies queries may use: the newest copy of a day, unless a live segment or
    day file of that day has a larger seq (rows the copy lacks)."""
    best, _ = newest_copies(entries)
    if not best:
        return best
    live, _ = split_live(entries)
    newest: dict[str, int] = {}
    for f in live:
        if f.level in ("seg", "day"):
            newest[f.scope] = max(newest.get(f.scope, -1), f.seq)
    return {k: c for k, c in best.items() if newest.get(k, -1) < c.seq}


class DirCache:
    """Listings of bucket-year directories, re-read when the directory changed.

    A listing is reused only while the directory's mtime is unchanged and more than a
    second old (so two changes within one mtime tick are never missed). ``owned``
    answers for the directories this process writes (their manifest,
    :mod:`headend.store._manifest`) without listing them; None for the others.
    """

    def __init__(self, max_entries: int = 4096, owned: Callable[
            [Path], tuple[list[FileEntry], dict[str, FileEntry]] | None] | None = None,
    ) -> None:
        self._d: OrderedDict[Path, tuple[int, list[FileEntry], dict[str, FileEntry]]] = (
            OrderedDict())
        self.max_entries = max_entries
        self._owned = owned

    def clear(self) -> None:
        """Forget every listing."""
        self._d.clear()

    def _get(self, directory: Path, year: int
             ) -> tuple[list[FileEntry], dict[str, FileEntry]]:
        if self._owned is not None:
            got = self._owned(directory)
            if got is not None:
                return got
        try:
            mt = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            return [], {}
        hit = self._d.get(directory)
        if hit is not None and hit[0] == mt and time.time_ns() - mt > 1_000_000_000:
            self._d.move_to_end(directory)
            return hit[1], hit[2]
        entries = list_dir(directory, year)
        live, _ = split_live(entries)
        copies = valid_copies(entries)
        self._d[directory] = (mt, live, copies)
        if len(self._d) > self.max_entries:
            self._d.popitem(last=False)
        return live, copies

    def live(self, directory: Path, year: int) -> list[FileEntry]:
        """Live files of a bucket-year directory, by seq."""
        return self._get(directory, year)[0]

    def copy(self, directory: Path, year: int, mmdd: str) -> FileEntry | None:
        """The valid day copy of day ``mmdd``, if any."""
        return self._get(directory, year)[1].get(mmdd)

    def invalidate(self, directory: Path) -> None:
        self._d.pop(directory, None)


@dataclass(slots=True)
class ParquetMeta:
    """An open Parquet file with its row-group meter ranges."""

    file: pq.ParquetFile
    rg_lo: npt.NDArray[np.int64]  # min meter_idx per row group
    rg_hi: npt.NDArray[np.int64]  # max meter_idx per row group
    rows: int
    lock: threading.Lock  # a ParquetFile reader is not shared between threads at once

    def read(self, rgs: list[int], columns: list[str] | None) -> pa.Table:
        with self.lock:
            return self.file.read_row_groups(rgs, columns=columns, use_threads=False)

    def row_groups(self, meter_lo: int, meter_hi: int) -> list[int]:
        """Row groups that may hold meters in ``[meter_lo, meter_hi]`` (inclusive)."""
        sel = (self.rg_hi >= meter_lo) & (self.rg_lo <= meter_hi)
        return np.flatnonzero(sel).tolist()


class MetaCache:
    """LRU of :class:`ParquetMeta` keyed by (path, size, mtime)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._d: OrderedDict[tuple[Path, int, int], ParquetMeta] = OrderedDict()
        self.max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, f: FileEntry) -> ParquetMeta:
        key = (f.path, f.size, f.mtime_ns)
        with self._lock:
            m = self._d.get(key)
            if m is not None:
                self._d.move_to_end(key)
                return m
        pf = pq.ParquetFile(f.path, memory_map=True)
        md = pf.metadata
        n = md.num_row_groups
        lo = np.zeros(n, np.int64)
        hi = np.full(n, np.iinfo(np.int64).max, np.int64)
        col = pf.schema_arrow.get_field_index("meter_idx")
        for i in range(n):  # once per file, cached
            st = md.row_group(i).column(col).statistics
            if st is not None and st.has_min_max:
                lo[i], hi[i] = st.min, st.max
        m = ParquetMeta(pf, lo, hi, md.num_rows, threading.Lock())
        with self._lock:
            self._d[key] = m
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)
        return m


def read_meter_range(
    f: FileEntry, metas: MetaCache, meter_lo: int, meter_hi: int,
    columns: list[str] | None = None,
) -> pa.Table | None:
    """Rows of ``f`` whose row group may hold meters in ``[meter_lo, meter_hi]``.

    Segments are read whole (memory-mapped); Parquet files only in the row groups
    whose meter statistics overlap. The caller filters rows exactly.
    """
    if f.is_segment:
        t = read_segment(f)
        return t if columns is None else t.select(columns)
    if f.meter_hi < meter_lo or f.meter_lo > meter_hi:  # a part of other meters
        return None
    m = metas.get(f)
    rgs = m.row_groups(meter_lo, meter_hi)
    if not rgs:
        return None
    return m.read(rgs, columns)
