"""Planned scans: every piece of a query's rows, streamed to a callback in parallel.

``scan_reads`` returns one table sorted by key: right for exports and small queries,
but a whole-store analytic pass pays for the concatenation and the sort and holds every
row at once. A :class:`ScanPlan` instead

* lists the live files once and **pins** them (Parquet files are memory-mapped, Arrow
  segments opened) before anything is read, so a compaction that replaces files while
  the scan runs cannot make it miss or repeat rows (an unlinked file stays readable);
* tells the **extent** of the rows (meter and time bounds) from the Parquet row-group
  statistics without reading data;
* cuts each file into **chunks of row groups** (``chunk_rows``) decoded in parallel on
  the store's reader threads, each with its own reader, and hands each chunk, filtered
  exactly as ``scan_reads`` filters, to the caller's function. Chunks are sorted by key
  within; their order and the thread calling the function are unspecified.

A :class:`TablePlan` is the same port over one table already read, for stores without
files (``InMemoryStore``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from headend.store._keys import Kind
from headend.store._layout import FileEntry, MetaCache, read_segment
from headend.store.base import Extent

__all__ = ["ScanPlan", "TablePlan"]


@dataclass(slots=True)
class _Chunk:
    file: FileEntry
    source: Any  # pq.ParquetFile (own reader) or pa.Table (an opened segment)
    row_groups: list[int]
    qlo: int
    qhi: int
    meter_lo: int
    meter_hi: int
    t_lo: int
    t_hi: int
    rows: int


class ScanPlan:
    """The pinned files and chunks of one query (see the module docstring): the
    :class:`~headend.store.base.ReadPlan` of ``ParquetStore.plan_reads``.

    Read :attr:`extent`, then call :meth:`run` (or another ``run_*``) once.
    """

    def __init__(self, kind: Kind, chunks: list[_Chunk], readers: ThreadPoolExecutor, *,
                 meters: npt.NDArray[np.int32] | None, start: int | None, end: int | None,
                 types: npt.NDArray[np.uint8] | None) -> None:
        self.kind = kind
        self._chunks = chunks
        self._readers = readers
        self._meters, self._start, self._end, self._types = meters, start, end, types

    @property
    def files(self) -> int:
        return len({c.file.path for c in self._chunks})

    @property
    def extent(self) -> Extent | None:
        """Meter and time bounds of the rows, None when there are no chunks."""
        if not self._chunks:
            return None
        lo = max(min(c.meter_lo for c in self._chunks), min(c.qlo for c in self._chunks))
        hi = min(max(c.meter_hi for c in self._chunks), max(c.qhi for c in self._chunks))
        t_lo = min(c.t_lo for c in self._chunks)
        t_hi = max(c.t_hi for c in self._chunks)
        if self._start is not None:
            t_lo = max(t_lo, self._start)
        if self._end is not None:
            t_hi = min(t_hi, self._end - 1)
        if lo > hi or t_lo > t_hi:  # the files' bounds miss the query's: no row
            return None
        return Extent(lo, hi, t_lo, t_hi, sum(c.rows for c in self._chunks))

    def paths(self) -> list[Path]:
        """The pinned live Parquet files of the plan (not the segments), in order."""
        return list(dict.fromkeys(c.file.path for c in self._chunks
                                  if not isinstance(c.source, pa.Table)))

    def segments(self) -> list[pa.Table]:
        """The rows of the plan's segments (recent, uncompacted appends), each filtered
        as ``scan_reads`` filters; empty ones left out."""
        got = (self._read(c, None) for c in self._chunks if isinstance(c.source, pa.Table))
        return [t for t in got if t is not None]

    def _read(self, c: _Chunk, columns: list[str] | None) -> pa.Table | None:
        """One chunk's rows filtered as ``scan_reads`` filters (``columns`` only)."""
        from headend.store._query import _refine

        kind = self.kind
        read_cols, schema = None, kind.schema
        if columns is not None:
            schema = pa.schema([kind.schema.field(x) for x in columns])
            need = set(columns) | {"meter_idx", kind.time_col}
            if self._types is not None and kind.type_col:
                need.add(kind.type_col)
            read_cols = [x for x in kind.schema.names if x in need]
        if isinstance(c.source, pa.Table):
            t = c.source if read_cols is None else c.source.select(read_cols)
        else:
            t = c.source.read_row_groups(c.row_groups, columns=read_cols, use_threads=False)
        return _refine(kind, t, c.file, c.qlo, c.qhi, self._meters, self._start, self._end,
                       self._types, columns, schema)

    def _by_file(self) -> dict[Any, list[_Chunk]]:
        files: dict[Any, list[_Chunk]] = {}
        for c in self._chunks:
            files.setdefault((c.file.path, c.file.batch), []).append(c)
        return files

    def run(self, fn: Callable[[pa.Table], None], columns: list[str] | None = None) -> int:
        """Call ``fn`` on every non-empty filtered chunk (``columns`` only); returns
        the number of rows handed over. The first exception of any call is raised
        after the running calls finished."""

        def one(c: _Chunk) -> int:
            t = self._read(c, columns)
            if t is None:
                return 0
            fn(t)
            return int(t.num_rows)

        if len(self._chunks) <= 1:
            return sum(one(c) for c in self._chunks)
        return sum(int(n) for n in self._readers.map(one, self._chunks))

    @property
    def meters_in_one_file(self) -> bool:
        """Whether every meter's rows are in one file of the plan (the files' meter
        ranges, from their statistics, do not overlap): then a meter's rows reach
        :meth:`run_files` in one file's calls, in key order."""
        ranges = sorted((min(c.meter_lo for c in cs), max(c.meter_hi for c in cs))
                        for cs in self._by_file().values())
        return all(a[1] < b[0] for a, b in itertools.pairwise(ranges))

    def run_files(self, fn: Callable[[int, pa.Table | None], None],
                  columns: list[str] | None = None) -> None:
        """Like :meth:`run`, but each file's chunks go to ``fn(file_no, table)`` in file
        order (sorted by key) from one thread, then ``fn(file_no, None)`` once the file
        is done; files run in parallel."""

        def one(item: tuple[int, list[_Chunk]]) -> None:
            no, chunks = item
            for c in chunks:
                t = self._read(c, columns)
                if t is not None:
                    fn(no, t)
            fn(no, None)

        list(self._readers.map(one, enumerate(self._by_file().values())))

    def run_days(self, fn: Callable[[pa.Table], None]) -> int:
        """Call ``fn`` with the daily rollup (:data:`~headend.store._rollup.DAILY`) of
        every chunk, read from the file's rollup sidecar where it has one and the
        query's window covers the file (else rolled up from the chunk's rows); returns
        the rollup rows handed over. Rows of one (meter, type, day) may come in several
        calls (a day split between files): the caller sums ``value`` and ``reads`` and
        ORs ``hours``."""
        from headend.store import _rollup

        by_file = self._by_file()
        work: list[tuple[_Chunk, bool]] = []
        for chunks in by_file.values():
            f = chunks[0].file
            t0, t1 = f.time_range()
            whole = ((self._start is None or self._start <= t0)
                     and (self._end is None or self._end >= t1))
            if whole and not f.is_segment and _rollup.sidecar_of(f.path).exists():
                work.append((chunks[0], True))
            else:
                work.extend((c, False) for c in chunks)

        def one(item: tuple[_Chunk, bool]) -> int:
            c, side = item
            if side:
                d = _rollup.read_sidecar(c.file.path)
                if d is not None:
                    d = _filter_days(d, c, self._meters, self._types)
                    if d.num_rows:
                        fn(d)
                    return int(d.num_rows)
                chunks = by_file[(c.file.path, c.file.batch)]  # sidecar gone: roll up
                return sum(one((x, False)) for x in chunks)
            t = self._read(c, _DAY_COLUMNS)
            if t is None:
                return 0
            d = _days(t)
            fn(d)
            return int(d.num_rows)

        return sum(int(n) for n in self._readers.map(one, work))


class TablePlan:
    """The :class:`~headend.store.base.ReadPlan` of rows already read: one table sorted
    by key, as ``scan_reads`` returns it (``InMemoryStore.plan_reads``).

    The table is one "file": :attr:`meters_in_one_file` is true, :meth:`paths` is
    empty and :meth:`segments` is the table. Chunks are slices of ``chunk_rows`` rows,
    handed over in order from the calling thread.
    """

    def __init__(self, reads: pa.Table, chunk_rows: int = 2_000_000) -> None:
        self._reads = reads
        self._chunk_rows = max(1, chunk_rows)

    @property
    def extent(self) -> Extent | None:
        t = self._reads
        if t.num_rows == 0:
            return None
        m = pc.min_max(t.column("meter_idx"))
        tt = pc.min_max(t.column("interval_end").cast(pa.int64()))
        return Extent(m["min"].as_py(), m["max"].as_py(), tt["min"].as_py(),
                      tt["max"].as_py(), t.num_rows)

    @property
    def meters_in_one_file(self) -> bool:
        return True

    def _chunks(self, columns: list[str] | None) -> list[pa.Table]:
        t = self._reads if columns is None else self._reads.select(columns)
        return [t.slice(i, self._chunk_rows) for i in range(0, t.num_rows, self._chunk_rows)]

    def run(self, fn: Callable[[pa.Table], None], columns: list[str] | None = None) -> int:
        for t in self._chunks(columns):
            fn(t)
        return int(self._reads.num_rows)

    def run_files(self, fn: Callable[[int, pa.Table | None], None],
                  columns: list[str] | None = None) -> None:
        for t in self._chunks(columns):
            fn(0, t)
        fn(0, None)

    def run_days(self, fn: Callable[[pa.Table], None]) -> int:
        n = 0
        for t in self._chunks(_DAY_COLUMNS):
            d = _days(t)
            fn(d)
            n += d.num_rows
        return n

    def paths(self) -> list[Path]:
        return []

    def segments(self) -> list[pa.Table]:
        return [self._reads] if self._reads.num_rows else []


_DAY_COLUMNS = ["meter_idx", "reading_type", "interval_end", "value"]


def _days(t: pa.Table) -> pa.Table:
    """The daily rollup (:data:`~headend.store._rollup.DAILY`) of reads sorted by key."""
    from headend.store import _rollup
    from headend.store._query import _np

    return _rollup.rollup(_np(t.column("meter_idx")), _np(t.column("reading_type")),
                          _np(t.column("interval_end").cast(pa.int64())),
                          _np(t.column("value")))


def _filter_days(d: pa.Table, c: _Chunk, meters: npt.NDArray[np.int32] | None,
                 types: npt.NDArray[np.uint8] | None) -> pa.Table:
    m = d.column("meter_idx").to_numpy()
    if len(m) == 0:
        return d
    mask = None
    if int(m[0]) < c.qlo or int(m[-1]) > c.qhi:
        mask = (m >= c.qlo) & (m <= c.qhi)
    if meters is not None:
        mk = np.isin(m, meters)
        mask = mk if mask is None else mask & mk
    if types is not None:
        tk = np.isin(d.column("reading_type").to_numpy(), types)
        mask = tk if mask is None else mask & tk
    if mask is None or mask.all():
        return d
    return d.filter(pa.array(mask))


def plan_chunks(kind: Kind, files: list[tuple[FileEntry, int, int]], metas: MetaCache,
                chunk_rows: int) -> list[_Chunk]:
    """Open (pin) ``files`` and cut them into chunks of about ``chunk_rows`` rows."""
    out: list[_Chunk] = []
    tcol = kind.time_col
    for f, qlo, qhi in files:
        if f.is_segment:
            t = read_segment(f)
            if t.num_rows == 0:
                continue
            m = t.column("meter_idx")
            tt = t.column(tcol).cast(pa.int64())
            mult = _unit(t.schema.field(tcol).type)
            mm, tm = pc.min_max(m), pc.min_max(tt)
            out.append(_Chunk(f, t, [], qlo, qhi, mm["min"].as_py(), mm["max"].as_py(),
                              tm["min"].as_py() // mult, tm["max"].as_py() // mult, t.num_rows))
            continue
        meta = metas.get(f)
        rgs = meta.row_groups(qlo, qhi)
        if not rgs:
            continue
        md = meta.file.metadata
        ti = meta.file.schema_arrow.get_field_index(tcol)
        mult = _unit(meta.file.schema_arrow.field(tcol).type)
        ft0, ft1 = f.time_range()
        reader = pq.ParquetFile(f.path, memory_map=True, metadata=md)
        group: list[int] = []
        rows = 0
        for i in [*rgs, None]:
            n = md.row_group(i).num_rows if i is not None else 0
            if group and (i is None or rows + n > chunk_rows):
                t_lo, t_hi = ft0, ft1 - 1
                st = [md.row_group(g).column(ti).statistics for g in group]
                if all(s is not None and s.has_min_max for s in st):
                    t_lo = min(int(s.min_raw) for s in st) // mult
                    t_hi = max(int(s.max_raw) for s in st) // mult
                out.append(_Chunk(f, reader, group, qlo, qhi,
                                  int(meta.rg_lo[group].min()), int(meta.rg_hi[group].max()),
                                  t_lo, t_hi, rows))
                reader = pq.ParquetFile(f.path, memory_map=True, metadata=md)
                group, rows = [], 0
            if i is not None:
                group.append(i)
                rows += n
    return out


def _unit(t: pa.DataType) -> int:
    return {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
