"""Queries of the Parquet store: scans, one meter's history, a feeder-day sum.

A mixin of :class:`~headend.store.parquet.ParquetStore` (see its module docstring,
section *Queries*); kept apart so each module stays small.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model import schema as S
from headend.store._blocks import BlockCache
from headend.store._keys import EVENTS_KIND, READS_KIND, REGISTERS_KIND, Keys, Kind
from headend.store._layout import DirCache, FileEntry, MetaCache, read_meter_range
from headend.store._plan import ScanPlan, plan_chunks
from headend.store.config import StoreConfig


class QueryMixin:
    """Read paths over the live files of a store rooted at ``root``."""

    root: Path
    config: StoreConfig
    _dirs: DirCache
    _metas: MetaCache
    _blocks: BlockCache
    _readers: ThreadPoolExecutor

    def _bucket_dir(self, kind: Kind, bucket: int) -> Path:
        return self.root / kind.name / f"b={bucket:06d}"

    def _dir(self, kind: Kind, bucket: int, year: int) -> Path:
        return self._bucket_dir(kind, bucket) / f"y={year}"

    def _buckets(self, kind: Kind, lo: int | None, hi: int | None) -> list[int]:
        out: list[int] = []
        try:
            names = os.listdir(self.root / kind.name)
        except FileNotFoundError:
            return out
        for nm in names:
            if nm.startswith("b="):
                b = int(nm[2:])
                blo = b << self.config.bits
                if (lo is None or blo + self.config.bucket_size > lo) and (hi is None or blo <= hi):
                    out.append(b)
        return sorted(out)

    def _files(self, kind: Kind, bucket: int, start: int | None, end: int | None
               ) -> list[FileEntry]:
        bdir = self._bucket_dir(kind, bucket)
        y0 = time.gmtime(start).tm_year if start is not None else None
        y1 = time.gmtime(end - 1).tm_year if end is not None else None
        if y0 is not None and y1 is not None and y1 - y0 < 50:
            years = list(range(y0, y1 + 1))
        else:
            try:
                years = sorted(int(n[2:]) for n in os.listdir(bdir) if n.startswith("y="))
            except FileNotFoundError:
                return []
            years = [y for y in years if (y0 is None or y >= y0) and (y1 is None or y <= y1)]
        out = []
        for y in years:
            for f in self._dirs.live(self._dir(kind, bucket, y), y):
                t0, t1 = f.time_range()
                if (start is None or t1 > start) and (end is None or t0 < end):
                    out.append(f)
        return out

    def _collect(
        self, kind: Kind, *, lo: int | None, hi: int | None,
        meters: npt.NDArray[np.int32] | None, start: int | None, end: int | None,
        types: npt.NDArray[np.uint8] | None, columns: list[str] | None = None,
        sort: bool = True,
    ) -> pa.Table:
        """Rows in meter range [lo, hi], in ``meters`` if given, in [start, end)."""
        schema = kind.schema if columns is None else pa.schema(
            [kind.schema.field(c) for c in columns])
        for attempt in range(3):
            try:
                pieces = self._collect_once(kind, lo, hi, meters, start, end, types, columns,
                                            schema)
                break
            except (FileNotFoundError, pa.ArrowIOError):  # compacted away under us: retry
                if attempt == 2:
                    raise
                self._dirs.clear()
        if not pieces:
            return schema.empty_table()
        if (sort and len(pieces) > 1 and lo is not None and lo == hi and meters is None
                and types is not None and len(types) == 1 and columns is None):
            # one meter, one type: each piece is sorted by time; if their time ranges
            # are disjoint (files of different periods), ordering the pieces suffices
            tc = kind.time_col
            span = sorted((_edge(p, tc, 0), _edge(p, tc, len(p) - 1), i)
                          for i, p in enumerate(pieces))
            if all(a[1] < b[0] for a, b in itertools.pairwise(span)):
                pieces = [pieces[i] for _, _, i in span]
                sort = False
        out = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        if sort and len(pieces) > 1 and "meter_idx" in schema.names:
            keys = _key_of(kind, out) if columns is None else None
            if keys is not None:
                out = out.take(np.argsort(keys, kind="stable"))
        return out

    def _work(self, kind: Kind, lo: int | None, hi: int | None, start: int | None,
              end: int | None) -> list[tuple[FileEntry, int, int]]:
        """Live files that may hold meters [lo, hi] in [start, end), each with the
        meter range it is asked for (its bucket's part of [lo, hi])."""
        bits = self.config.bits
        work: list[tuple[FileEntry, int, int]] = []
        for b in self._buckets(kind, lo, hi):
            blo, bhi = b << bits, ((b + 1) << bits) - 1
            qlo = blo if lo is None else max(blo, lo)
            qhi = bhi if hi is None else min(bhi, hi)
            work.extend((f, qlo, qhi) for f in self._files(kind, b, start, end)
                        if f.meter_hi >= qlo and f.meter_lo <= qhi)  # parts by name
        return work

    def _collect_once(self, kind: Kind, lo: int | None, hi: int | None,
                      meters: npt.NDArray[np.int32] | None, start: int | None,
                      end: int | None, types: npt.NDArray[np.uint8] | None,
                      columns: list[str] | None, schema: pa.Schema) -> list[pa.Table]:
        pieces: list[pa.Table] = []
        read_cols = columns
        if columns is not None:
            need = set(columns) | {"meter_idx", kind.time_col}
            if types is not None and kind.type_col:
                need.add(kind.type_col)
            read_cols = [c for c in kind.schema.names if c in need]
        work = self._work(kind, lo, hi, start, end)

        def one(item: tuple[FileEntry, int, int]) -> pa.Table | None:
            f, qlo, qhi = item
            t = read_meter_range(f, self._metas, qlo, qhi, read_cols)
            return _refine(kind, t, f, qlo, qhi, meters, start, end, types, columns, schema)

        # files decode in parallel (pyarrow and NumPy release the GIL)
        got = (list(self._readers.map(one, work)) if len(work) > 2
               else [one(w) for w in work])
        pieces.extend(t for t in got if t is not None)
        return pieces

    def scan_reads(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None, reading_types: npt.NDArray[np.uint8] | None = None,
    ) -> pa.Table:
        """Reads with ``start <= interval_end < end`` (Unix s), sorted by key."""
        lo, hi, ms = _meter_bounds(meters)
        return self._collect(READS_KIND, lo=lo, hi=hi, meters=ms, start=start, end=end,
                             types=reading_types)

    def plan_reads(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None, reading_types: npt.NDArray[np.uint8] | None = None,
        chunk_rows: int = 2_000_000,
    ) -> ScanPlan:
        """The rows ``scan_reads`` would return, as a :class:`ScanPlan` of pinned chunks
        to stream through a function in parallel (unsorted, bounded memory)."""
        lo, hi, ms = _meter_bounds(meters)
        kind = READS_KIND
        for attempt in range(3):
            try:
                work = self._work(kind, lo, hi, start, end)
                chunks = plan_chunks(kind, work, self._metas, chunk_rows)
                break
            except (FileNotFoundError, pa.ArrowIOError):  # compacted away under us: retry
                if attempt == 2:
                    raise
                self._dirs.clear()
        return ScanPlan(kind, chunks, self._readers, meters=ms, start=start, end=end,
                        types=reading_types)

    def scan_registers(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None,
    ) -> pa.Table:
        lo, hi, ms = _meter_bounds(meters)
        return self._collect(REGISTERS_KIND, lo=lo, hi=hi, meters=ms, start=start, end=end,
                             types=None)

    def scan_events(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None,
    ) -> pa.Table:
        lo, hi, ms = _meter_bounds(meters)
        return self._collect(EVENTS_KIND, lo=lo, hi=hi, meters=ms, start=start, end=end,
                             types=None)

    def meter_history(self, meter_idx: int, reading_type: int, start: int, end: int
                      ) -> pa.Table:
        """One meter's reads of one type with ``start <= interval_end < end``, by time."""
        return self._collect(READS_KIND, lo=meter_idx, hi=meter_idx, meters=None,
                             start=start, end=end,
                             types=np.array([reading_type], np.uint8))

    def feeder_interval_sum(self, meter_lo: int, meter_hi: int, reading_type: int, day: int
                            ) -> pa.Table:
        """Sum of one reading type per interval over meters ``[meter_lo, meter_hi)``.

        Parameters
        ----------
        meter_lo, meter_hi : int
            Contiguous meter range (a feeder, in topology order), ``meter_hi`` exclusive.
        reading_type : int
            ``codes.READING_TYPES`` code.
        day : int
            Start of the UTC day [Unix s]; intervals with ``day <= interval_end < day+86400``.

        Returns
        -------
        pa.Table
            ``interval_end`` (timestamp[s, UTC]), ``value`` (int64, sum in the reading
            type's resolution), ``meters`` (int64, reads summed), sorted by time.

        Notes
        -----
        Per live file of the day: a month/year file with a block-sum sidecar
        (:mod:`headend.store._blocks`) gives the sums of the whole blocks in the range,
        and only the rows of the partial blocks at both ends are decoded; other files
        (segments, day files, month/year files without sums) are read row by row. A
        valid day copy (``StoreConfig.day_copies``) replaces them all. Every path adds
        the same integers, so the result equals ``interval_sum`` of the feeder-day's
        ``scan_reads`` exactly.
        """
        if meter_hi <= meter_lo:
            return interval_sum(S.READS.empty_table())
        sums = np.zeros(86_400, np.float64)  # exact: |sum| < 2**53 for any feeder-day
        cnt = np.zeros(86_400, np.int64)
        for attempt in range(3):
            try:
                sums[:] = 0
                cnt[:] = 0
                self._feeder_sum_once(meter_lo, meter_hi - 1, reading_type, day, sums, cnt)
                break
            except (FileNotFoundError, pa.ArrowIOError):  # compacted away under us: retry
                if attempt == 2:
                    raise
                self._dirs.clear()
        nz = np.flatnonzero(cnt)
        schema = pa.schema([pa.field("interval_end", S.TS, nullable=False),
                            pa.field("value", pa.int64(), nullable=False),
                            pa.field("meters", pa.int64(), nullable=False)])
        return pa.table([pa.array(nz + day, pa.int64()).cast(S.TS),
                         pa.array(sums[nz].astype(np.int64)), pa.array(cnt[nz])], schema=schema)

    def _feeder_sum_once(self, lo: int, hi: int, rt: int, day: int,
                         sums: npt.NDArray[np.float64], cnt: npt.NDArray[np.int64]) -> None:
        bits = self.config.bits
        kind = READS_KIND
        for b in self._buckets(kind, lo, hi):
            qlo, qhi = max(b << bits, lo), min(((b + 1) << bits) - 1, hi)
            files = self._files(kind, b, day, day + 86_400)
            if day % 86_400 == 0:  # a valid day copy holds the whole day, sorted by meter
                y, mo, dd = time.gmtime(day)[:3]
                cp = self._dirs.copy(self._dir(kind, b, y), y, f"{mo:02d}{dd:02d}")
                if cp is not None:
                    files = [cp]
            for f in files:
                if f.meter_hi < qlo or f.meter_lo > qhi:  # a part of other meters
                    continue
                ranges = [(qlo, qhi)]
                if f.level in ("mon", "year"):  # whole blocks from the block sums
                    bf = self._blocks.get(f.path)
                    if bf is not None:
                        ranges = bf.add_day(qlo, qhi, rt, day, sums, cnt)
                for a, z in ranges:
                    for t, edge in self._feeder_rows(f, a, z):
                        _add_rows(t, f, rt, day, a, z, edge, sums, cnt)

    def _feeder_rows(self, f: FileEntry, lo: int, hi: int) -> list[tuple[pa.Table, bool]]:
        """Rows of ``f`` that may hold meters ``[lo, hi]``, each with whether its meters
        must still be filtered (row groups not inside the range)."""
        if f.is_segment:
            t = read_meter_range(f, self._metas, lo, hi)
            return [] if t is None else [(t, True)]
        meta = self._metas.get(f)
        rgs = np.asarray(meta.row_groups(lo, hi), np.int64)
        inner = (meta.rg_lo[rgs] >= lo) & (meta.rg_hi[rgs] <= hi)
        parts = []
        cols = ["reading_type", "interval_end", "value"]
        if inner.any():
            parts.append((meta.read(rgs[inner].tolist(), cols), False))
        if (~inner).any():
            parts.append((meta.read(rgs[~inner].tolist(), ["meter_idx", *cols]), True))
        return parts


def _add_rows(t: pa.Table, f: FileEntry, rt: int, day: int, lo: int, hi: int, edge: bool,
              sums: npt.NDArray[np.float64], cnt: npt.NDArray[np.int64]) -> None:
    """Add the reads of ``t`` (rows of ``f``) of type ``rt``, meters ``[lo, hi]`` (checked
    only if ``edge``) and ``day <= interval_end < day + 86400`` into ``sums``/``cnt``."""
    col = t.column("interval_end")
    mult = _UNIT[col.type.unit]
    tt = _np(col.cast(pa.int64()))
    mask = _np(t.column("reading_type")) == rt
    ft0, ft1 = f.time_range()
    if not (day <= ft0 and ft1 <= day + 86_400):  # else: whole file in range
        mask &= tt >= day * mult
        mask &= tt < (day + 86_400) * mult
    if edge:
        m = _np(t.column("meter_idx"))
        mask &= (m >= lo) & (m <= hi)
    rel = tt[mask] // mult - day
    sums += np.bincount(rel, weights=_np(t.column("value"))[mask], minlength=86_400)
    cnt += np.bincount(rel, minlength=86_400)


# ---------------------------------------------------------------------- helpers

_UNIT = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _np(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    """A column as one NumPy array (zero-copy when it is one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _edge(t: pa.Table, col: str, i: int) -> int:
    """Value of row ``i`` of a timestamp column as an integer."""
    return int(_np(t.column(col).slice(i, 1).cast(pa.int64()))[0])


def _refine(kind: Kind, t: pa.Table | None, f: FileEntry, qlo: int, qhi: int,
            meters: npt.NDArray[np.int32] | None, start: int | None, end: int | None,
            types: npt.NDArray[np.uint8] | None, columns: list[str] | None,
            schema: pa.Schema) -> pa.Table | None:
    """The rows of ``t`` (read from ``f``, sorted by meter) that a query asked for."""
    if t is None or len(t) == 0:
        return None
    m = _np(t.column("meter_idx"))
    mask = None
    if int(m[0]) < qlo or int(m[-1]) > qhi:  # sorted by meter
        mask = (m >= qlo) & (m <= qhi)
    if meters is not None:
        mask = _and(mask, np.isin(m, meters))
    ft0, ft1 = f.time_range()
    if (start is not None and start > ft0) or (end is not None and end < ft1):
        col = t.column(kind.time_col)
        mult = _UNIT[col.type.unit]
        tt = _np(col.cast(pa.int64()))
        if start is not None and start > ft0:
            mask = _and(mask, tt >= start * mult)
        if end is not None and end < ft1:
            mask = _and(mask, tt < end * mult)
    if types is not None and kind.type_col:
        ty = _np(t.column(kind.type_col))
        mask = _and(mask, ty == int(types[0]) if len(types) == 1 else np.isin(ty, types))
    if mask is not None:
        if not mask.any():
            return None
        if not mask.all():
            t = t.filter(pa.array(mask))
    if columns is not None:
        t = t.select(columns)
    return t if t.schema.equals(schema) else t.cast(schema)


def _and(a: npt.NDArray[np.bool_] | None, b: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return b if a is None else a & b


def _key_of(kind: Kind, t: pa.Table) -> Keys:
    full = t
    if t.schema.field(kind.time_col).type != S.TS:
        full = t.set_column(t.schema.get_field_index(kind.time_col), kind.time_col,
                            t.column(kind.time_col).cast(S.TS))
    return kind.keys(full)


def _meter_bounds(meters: npt.NDArray[np.int32] | None
                  ) -> tuple[int | None, int | None, npt.NDArray[np.int32] | None]:
    if meters is None:
        return None, None, None
    m = np.unique(np.asarray(meters, dtype=np.int32))
    if len(m) == 0:
        return 0, -1, m
    lo, hi = int(m[0]), int(m[-1])
    if hi - lo + 1 == len(m):  # contiguous: the range says it all
        return lo, hi, None
    return lo, hi, m


def interval_sum(t: pa.Table) -> pa.Table:
    """Sum ``value`` per ``interval_end`` of a table; the ``feeder_interval_sum`` result."""
    schema = pa.schema([pa.field("interval_end", S.TS, nullable=False),
                        pa.field("value", pa.int64(), nullable=False),
                        pa.field("meters", pa.int64(), nullable=False)])
    if len(t) == 0:
        return schema.empty_table()
    tt = _np(t.column("interval_end").cast(S.TS).cast(pa.int64()))
    v = _np(t.column("value")).astype(np.int64)
    t0 = int(tt.min())
    span = int(tt.max()) - t0 + 1
    if span <= 4 * 86_400:  # dense bins: one pass, exact in int64
        rel = tt - t0
        c = np.bincount(rel, minlength=span)
        nz = np.flatnonzero(c)
        order = np.argsort(rel, kind="stable")
        sums = np.add.reduceat(v[order], np.r_[0, np.cumsum(c[nz])[:-1]])
        u, cnt = nz + t0, c[nz]
    else:
        u, inv = np.unique(tt, return_inverse=True)
        sums = np.zeros(len(u), np.int64)
        np.add.at(sums, inv, v)
        cnt = np.bincount(inv, minlength=len(u))
    return pa.table([pa.array(u, pa.int64()).cast(S.TS), pa.array(sums.astype(np.int64)),
                     pa.array(cnt.astype(np.int64))], schema=schema)
