"""Block sums of interval reads: per (day, interval end, block of meters, reading type).

Month and year files (and each of their parts) are sorted by meter, so a feeder-day
(a contiguous meter range, one day) would decode the feeder's rows of the whole
month/year. Compaction therefore writes beside each of them a **block-sum sidecar**
``<file>.blocks`` (Parquet, :data:`BLOCKS`): for every UTC day, reading type, block of
``2**bits`` consecutive ``meter_idx`` (``block = meter_idx >> bits``) and interval end,
the sum of the values (integers in the type's resolution) and the number of reads.
A feeder ``[lo, hi]`` is then the block sums of its whole blocks plus the raw rows of
at most two partial blocks at its ends (:meth:`BlockFile.add_day`).

Layout of a sidecar: a sequence of **sections**, one per meter range the compaction
merged in memory (``StoreConfig.merge_rows``), each sorted by (day, reading type,
block, second of the day) and cut into one row group per day. A block cut by a section
boundary has rows in both sections; readers add them (sums are additive), so a sidecar
is written in one streamed pass and bounded memory. The row groups carry ``day`` and
``block`` statistics, so a feeder-day reads one row group per section it overlaps. The
block size is in the schema metadata (``headend.block_bits``): readers never assume
the configured one.

A day is ``floor(interval_end / 86400)`` and ``second`` is ``interval_end - 86400 *
day``, so any window ``[start, start + 86400)`` is exact (two days of rows when it is
not aligned to midnight).

The sidecar is published before its data file and deleted with it
(:func:`headend.store._rollup.unlink_data`); one left without its file by a crash is
deleted by the bucket's owner. A file without one (older stores, segments, day files)
is read row by row: readers never depend on a sidecar, and compaction adds the missing
ones of live month/year files (:func:`backfill`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from headend.store import _fs
from headend.store._layout import ParquetMeta

__all__ = ["BITS_KEY", "BLOCKS", "SUFFIX", "BlockCache", "BlockFile", "BlockWriter", "backfill",
           "block_sums", "sidecar_of", "sums_of"]

SUFFIX: Final = ".blocks"
BITS_KEY: Final = b"headend.block_bits"
_DAY_S: Final = 86_400

#: schema of a block-sum sidecar (sections sorted by day, type, block, second)
BLOCKS: Final = pa.schema([
    pa.field("day", pa.int32(), nullable=False),  # floor(interval_end / 86400)
    pa.field("reading_type", pa.uint8(), nullable=False),
    pa.field("block", pa.int32(), nullable=False),  # meter_idx >> bits
    pa.field("second", pa.int32(), nullable=False),  # interval_end - 86400 * day [s]
    pa.field("value", pa.int64(), nullable=False),  # sum, in the type's resolution
    pa.field("reads", pa.int32(), nullable=False),  # reads summed
])


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def block_sums(meter: npt.NDArray[np.int32], rt: npt.NDArray[np.uint8],
               t: npt.NDArray[np.int64], value: npt.NDArray[np.integer], bits: int
               ) -> pa.Table:
    """The :data:`BLOCKS` rows of reads (``t`` in Unix s), sorted by (day, reading type,
    block, second). Summed in slices of ``_SLICE`` reads, then the slices' sums (bounded
    memory: a sort of 4 M keys at a time, not of a whole merged range)."""
    if len(meter) == 0:
        return BLOCKS.empty_table()
    slices = []
    for i in range(0, len(meter), _SLICE):
        tt = t[i:i + _SLICE]
        day = tt // _DAY_S
        slices.append(_group(day, rt[i:i + _SLICE],
                             np.right_shift(meter[i:i + _SLICE].astype(np.int64), bits),
                             tt - day * _DAY_S, value[i:i + _SLICE], None))
    if len(slices) == 1:
        return slices[0]
    c = pa.concat_tables(slices)
    day, rt_, block, sec = (_np(c.column(k)).astype(np.int64)
                            for k in ("day", "reading_type", "block", "second"))
    return _group(day, rt_, block, sec, _np(c.column("value")), _np(c.column("reads")))


_SLICE: Final = 1 << 22


def _group(day: npt.NDArray[np.int64], rt: npt.NDArray[Any], block: npt.NDArray[np.int64],
           sec: npt.NDArray[np.int64], value: npt.NDArray[np.integer],
           reads: npt.NDArray[np.int32] | None) -> pa.Table:
    """Sum ``value`` and count (or sum ``reads``) per (day, type, block, second)."""
    d0, b0 = int(day.min()), int(block.min())
    if int(day.max()) - d0 < 1 << 13 and int(block.max()) - b0 < 1 << 25:
        # one int64 key: 13 bits of day, 8 of type, 25 of block, 17 of second
        key = (((day - d0) << 50) | (rt.astype(np.int64) << 42) | ((block - b0) << 17) | sec)
        order = np.argsort(key, kind="stable")  # runs of one meter's times: merges
        ks = key[order]
        new = np.empty(len(order), bool)
        new[0] = True
        np.not_equal(ks[1:], ks[:-1], out=new[1:])
    else:  # a span no key packs (never in a month/year file)
        order = np.lexsort((sec, block, rt, day))
        cols = np.stack([day[order], rt[order].astype(np.int64), block[order], sec[order]])
        new = np.r_[True, (cols[:, 1:] != cols[:, :-1]).any(axis=0)]
    starts = np.flatnonzero(new)
    first = order[starts]
    n = (np.diff(np.r_[starts, len(order)]) if reads is None
         else np.add.reduceat(reads[order].astype(np.int64), starts))
    return pa.table({
        "day": pa.array(day[first].astype(np.int32)),
        "reading_type": pa.array(rt[first].astype(np.uint8)),
        "block": pa.array(block[first].astype(np.int32)),
        "second": pa.array(sec[first].astype(np.int32)),
        "value": pa.array(np.add.reduceat(value[order].astype(np.int64), starts)),
        "reads": pa.array(n.astype(np.int32)),
    }, schema=BLOCKS)


def sums_of(t: pa.Table, bits: int) -> pa.Table:
    """Block sums of a table of reads (``headend.model.schema.READS`` columns)."""
    return block_sums(_np(t.column("meter_idx")), _np(t.column("reading_type")),
                      _np(t.column("interval_end").cast(pa.timestamp("s", "UTC"))
                          .cast(pa.int64())), _np(t.column("value")), bits)


class BlockWriter:
    """Streams the sidecar of one data file: :meth:`add` each merged meter range (in
    file order), then :meth:`commit` (before the data file is published) or
    :meth:`abort`."""

    def __init__(self, data_path: Path, bits: int, zstd_level: int) -> None:
        self.final = sidecar_of(data_path)
        self.tmp = _fs.temp_path(self.final)
        self.bits = bits
        schema = BLOCKS.with_metadata({BITS_KEY: str(bits).encode()})
        self._w = pq.ParquetWriter(
            str(self.tmp), schema, compression="zstd", compression_level=zstd_level,
            use_dictionary=["reading_type", "reads"],
            column_encoding={"day": "DELTA_BINARY_PACKED", "block": "DELTA_BINARY_PACKED",
                             "second": "DELTA_BINARY_PACKED", "value": "BYTE_STREAM_SPLIT"},
            write_statistics=["day", "block"], data_page_size=1 << 20)

    def add(self, reads: pa.Table) -> None:
        """Write the block sums of one sorted meter range of the data file (a section)."""
        s = sums_of(reads, self.bits)
        if s.num_rows == 0:
            return
        day = _np(s.column("day"))
        cut = np.flatnonzero(day[1:] != day[:-1]) + 1
        for a, b in zip(np.r_[0, cut].tolist(), np.r_[cut, len(day)].tolist(), strict=True):
            self._w.write_table(s.slice(a, b - a), row_group_size=b - a)  # a row group a day

    def commit(self) -> None:
        self._w.close()
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.final)  # the caller fsyncs the directory

    def abort(self) -> None:
        try:
            self._w.close()
        finally:
            self.tmp.unlink(missing_ok=True)


@dataclass(slots=True)
class BlockFile:
    """An open block-sum sidecar with the day and block range of each row group."""

    file: pq.ParquetFile
    bits: int
    day_lo: npt.NDArray[np.int64]
    day_hi: npt.NDArray[np.int64]
    block_lo: npt.NDArray[np.int64]
    block_hi: npt.NDArray[np.int64]
    lock: threading.Lock

    def add_day(self, qlo: int, qhi: int, rt: int, start: int,
                sums: npt.NDArray[np.float64], cnt: npt.NDArray[np.int64]
                ) -> list[tuple[int, int]]:
        """Add the sums of the whole blocks in meters ``[qlo, qhi]`` (inclusive) for
        ``start <= interval_end < start + 86400`` into ``sums``/``cnt`` (indexed by
        second since ``start``); returns the meter ranges left to read row by row (the
        partial blocks at both ends, or ``[qlo, qhi]`` when it holds no whole block)."""
        size = 1 << self.bits
        b0 = -(-qlo // size)  # first whole block
        b1 = (qhi + 1) // size  # past the last whole block
        if b1 <= b0:
            return [(qlo, qhi)]
        d0, d1 = start // _DAY_S, (start + _DAY_S - 1) // _DAY_S
        sel = ((self.day_hi >= d0) & (self.day_lo <= d1)
               & (self.block_hi >= b0) & (self.block_lo < b1))
        rgs = np.flatnonzero(sel).tolist()
        if rgs:
            with self.lock:
                t = self.file.read_row_groups(rgs, use_threads=False)
            blk = _np(t.column("block"))
            tt = _np(t.column("day")).astype(np.int64) * _DAY_S + _np(t.column("second"))
            mask = (blk >= b0) & (blk < b1) & (_np(t.column("reading_type")) == rt)
            mask &= (tt >= start) & (tt < start + _DAY_S)
            rel = tt[mask] - start
            sums += np.bincount(rel, weights=_np(t.column("value"))[mask], minlength=_DAY_S)
            cnt += np.bincount(rel, weights=_np(t.column("reads"))[mask],
                               minlength=_DAY_S).astype(np.int64)
        rest = []
        if qlo < b0 * size:
            rest.append((qlo, b0 * size - 1))
        if b1 * size <= qhi:
            rest.append((b1 * size, qhi))
        return rest


class BlockCache:
    """LRU of open :class:`BlockFile` keyed by the sidecar's (path, size, mtime); a
    sidecar is looked up (one ``stat``) on each use, so one added later is seen."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._d: OrderedDict[tuple[Path, int, int], BlockFile] = OrderedDict()
        self.max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, data_path: Path) -> BlockFile | None:
        """The sidecar of a data file, or None when it has none or it cannot be read
        (the file's rows are then read instead)."""
        p = sidecar_of(data_path)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        key = (p, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self._d.move_to_end(key)
                return hit
        try:
            bf = _open(p)
        except (OSError, pa.ArrowException, KeyError, ValueError):
            return None
        with self._lock:
            self._d[key] = bf
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)
        return bf


def _open(p: Path) -> BlockFile:
    pf = pq.ParquetFile(p, memory_map=True)
    md = pf.metadata
    n = md.num_row_groups
    stats = np.zeros((4, n), np.int64)
    stats[1::2] = np.iinfo(np.int64).max  # no statistics: the row group may hold anything
    for i in range(n):
        rg = md.row_group(i)
        for j, col in enumerate((0, 2)):  # day, block
            st = rg.column(col).statistics
            if st is not None and st.has_min_max:
                stats[2 * j, i], stats[2 * j + 1, i] = st.min, st.max
            else:
                stats[2 * j, i] = np.iinfo(np.int64).min
    bits = int((pf.schema_arrow.metadata or {})[BITS_KEY])
    return BlockFile(pf, bits, stats[0], stats[1], stats[2], stats[3], threading.Lock())


def backfill(data_path: Path, rows: ParquetMeta, read_rows: int, bits: int,
             zstd_level: int) -> None:
    """Write the missing sidecar of a sorted month/year file (``rows``, read
    ``read_rows`` rows at a time); the caller fsyncs the directory."""
    w = BlockWriter(data_path, bits, zstd_level)
    try:
        md = rows.file.metadata
        batch: list[int] = []
        n = 0
        cols = ["meter_idx", "reading_type", "interval_end", "value"]
        for i in range(md.num_row_groups):
            batch.append(i)
            n += md.row_group(i).num_rows
            if n >= read_rows or i == md.num_row_groups - 1:
                w.add(rows.read(batch, cols))
                batch, n = [], 0
        w.commit()
    except BaseException:
        w.abort()
        raise


def _np(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
