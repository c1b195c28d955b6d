"""Hourly matrices straight from the store: streamed, parallel, no sort, no SQL.

:func:`matrix_from_store` is how the embedded engine reads a store. It plans the scan
(:meth:`~headend.store.ReadStore.plan_reads`), allocates the household x hour matrix
from the plan's extent (Parquet row-group statistics), and lets every chunk of rows add
itself in place on the store's reader threads: ``np.bincount`` over the chunk's block of
the matrix, then one locked ``+=`` of that block. The reads are never concatenated,
sorted or held at once, so memory is the matrix plus one chunk per thread.

The hourly values are those of :func:`~headend.analytics.matrix.hourly_sql` and
:func:`~headend.analytics.matrix.matrix_from_hourly`, bit for bit: an interval belongs
to the hour in which it ends, values are summed as integers in the reading type's
resolution (exact in float64 below 2**53) and multiplied by the resolution once, missing
hours are NaN, rows are the meters with at least one read, columns the whole UTC days
from the first to the last hour with a read.

**VEE versions.** With ``overlay`` (the current version of the keys VEE touched, from
:meth:`headend.vee.VersionStore.latest`), each chunk looks up the overlay's keys among
its rows (only for chunks whose meters the overlay holds) and records the raw value it
replaces; afterwards the matrix gets ``current - raw`` for replaced keys and the value of
estimated keys (no stored read) inside the meter's span of reads, as
:func:`headend.vee.current_reads` defines the current reads.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics.matrix import HourlyMatrix, hour_span
from headend.model import codes
from headend.model.schema import read_key
from headend.store.base import ReadStore

__all__ = ["HourlyAccumulator", "matrix_from_reads", "matrix_from_store"]

#: blocks denser than this (rows per cell) use bincount; sparser ones ``np.add.at``
_DENSE = 0.25


def _hour_col(t: npt.NDArray[np.int64], t0: int) -> npt.NDArray[np.int64]:
    """Column of each interval end: the hour ending at ``ceil(t / 3600) * 3600``."""
    out: npt.NDArray[np.int64] = (t + (3599 - t0)) // 3600  # t0 is a whole hour
    return out


class HourlyAccumulator:
    """Sums interval values into a (meter x hour) block, thread-safely.

    Parameters
    ----------
    meter_lo, meter_hi : int
        Meter indices the rows may hold (inclusive).
    t_lo, t_hi : int
        Interval ends the rows may hold [Unix s] (inclusive).
    track_span : bool
        Keep each meter's first and last interval end (for VEE overlays).
    meters : ndarray, optional
        The only meters the rows may hold (sorted, unique): one matrix row each, for
        sparse meter sets (else one row per index in ``meter_lo..meter_hi``).
    """

    def __init__(self, meter_lo: int, meter_hi: int, t_lo: int, t_hi: int, *,
                 track_span: bool = False, meters: npt.NDArray[Any] | None = None) -> None:
        self.lo = int(meter_lo)
        self.meters = None if meters is None else np.asarray(meters, np.int64)
        nrows = (len(self.meters) if self.meters is not None
                 else max(int(meter_hi) - self.lo + 1, 0))
        self.t0, self.ncol = hour_span(-(-int(t_lo) // 3600) * 3600,
                                       -(-int(t_hi) // 3600) * 3600)
        self.sums = np.zeros((nrows, self.ncol))
        self.seen = np.zeros((nrows, self.ncol), bool)
        self.first = np.full(nrows, np.iinfo(np.int64).max) if track_span else None
        self.last = np.full(nrows, np.iinfo(np.int64).min) if track_span else None
        self._lock = threading.Lock()

    def add(self, meter: npt.NDArray[Any], t: npt.NDArray[np.int64],
            value: npt.NDArray[Any]) -> None:
        """Add interval ``value``\\ s (integers in the resolution) ending at ``t``."""
        if len(meter) == 0:
            return
        r = self.row_of(meter)
        if self.first is None and bool((t % 3600 == 0).all()):
            self._add_hourly(r, t, value)
            return
        c = _hour_col(t, self.t0)
        r0, r1 = int(r.min()), int(r.max()) + 1
        c0, c1 = int(c.min()), int(c.max()) + 1
        if r0 < 0 or r1 > self.sums.shape[0] or c0 < 0 or c1 > self.ncol:
            raise ValueError("reads outside the accumulator's extent")
        w = c1 - c0
        size = (r1 - r0) * w
        span = None
        if self.first is not None:
            span = _runs_min_max(r, t)
        if len(r) >= _DENSE * size:
            flat = (r - r0) * w + (c - c0)
            s = np.bincount(flat, weights=value, minlength=size).reshape(r1 - r0, w)
            n = np.bincount(flat, minlength=size).reshape(r1 - r0, w) > 0
            with self._lock:
                self.sums[r0:r1, c0:c1] += s
                self.seen[r0:r1, c0:c1] |= n
                self._span(span)
        else:  # a few scattered rows: no dense block
            flat = r * self.ncol + c
            with self._lock:
                np.add.at(self.sums.reshape(-1), flat, value.astype(np.float64))
                self.seen.reshape(-1)[flat] = True
                self._span(span)

    def row_of(self, meter: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """Matrix row of each meter index (-1 for a meter outside ``meters``)."""
        if self.meters is None:
            out: npt.NDArray[np.int64] = meter.astype(np.int64) - self.lo
            return out
        m = meter.astype(np.int64)
        pos = np.clip(np.searchsorted(self.meters, m), 0, max(len(self.meters) - 1, 0))
        return np.where(self.meters[pos] == m, pos, -1) if len(self.meters) else \
            np.full(len(m), -1, np.int64)

    def meter_of(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = (rows + self.lo if self.meters is None
                                      else self.meters[rows])
        return out

    def _add_hourly(self, r: npt.NDArray[np.int64], t: npt.NDArray[np.int64],
                    value: npt.NDArray[Any]) -> None:
        """Interval ends on whole hours: one read per cell, so a chunk sorted by key
        (as store chunks are) maps to strictly increasing cells, which are added by a
        slice (consecutive cells: whole meter-years without gaps) or one fancy ``+=``,
        without ``bincount``."""
        flat = r * self.ncol
        flat += (t - self.t0) // 3600
        if int(flat.min()) < 0 or int(flat.max()) >= self.sums.size:
            raise ValueError("reads outside the accumulator's extent")
        s, seen = self.sums.reshape(-1), self.seen.reshape(-1)
        lo, hi, n = int(flat[0]), int(flat[-1]), len(flat)
        increasing = bool((flat[1:] > flat[:-1]).all())
        with self._lock:
            if increasing and hi - lo == n - 1:
                s[lo:hi + 1] += value
                seen[lo:hi + 1] = True
            elif increasing:  # distinct cells
                s[flat] += value
                seen[flat] = True
            else:  # unsorted rows: cells may repeat
                np.add.at(s, flat, value.astype(np.float64))
                seen[flat] = True

    def _span(self, span: tuple[Any, Any, Any] | None) -> None:
        if span is None or self.first is None or self.last is None:
            return
        rows, lo, hi = span
        np.minimum.at(self.first, rows, lo)
        np.maximum.at(self.last, rows, hi)

    def finish(self, resolution: float) -> HourlyMatrix:
        """The matrix: rows with a read, whole days with a read, kWh, NaN if none.

        Consumes the accumulator (the sums become the matrix in place when no row or
        day is trimmed)."""
        seen, x = self.seen, self.sums
        rows = np.flatnonzero(seen.any(axis=1))
        if len(rows) == 0:
            return HourlyMatrix(np.empty(0, np.int32), self.t0, np.empty((0, self.ncol)))
        days = np.asarray(seen.reshape(len(seen), -1, 24).any(axis=(0, 2)))
        d = np.flatnonzero(days)
        d0, d1 = int(d[0]), int(d[-1]) + 1
        if len(rows) < len(seen) or d0 > 0 or d1 < len(days):
            x = x[rows, d0 * 24:d1 * 24]  # a copy
            seen = seen[rows, d0 * 24:d1 * 24]
        _scale(x, seen, resolution)
        self.sums = self.seen = np.empty((0, 0))
        return HourlyMatrix(self.meter_of(rows).astype(np.int32), self.t0 + d0 * 86_400, x)


def _scale(x: npt.NDArray[np.float64], seen: npt.NDArray[np.bool_], resolution: float) -> None:
    """``x *= resolution`` and NaN where not ``seen``, in place, on two threads."""
    def part(rows: slice) -> None:
        xs = x[rows]
        xs *= resolution
        ss = seen[rows]
        if not ss.all():
            xs[~ss] = np.nan

    half = len(x) // 2
    if half < 1024:
        part(slice(None))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(part, [slice(0, half), slice(half, None)]))


def _runs_min_max(r: npt.NDArray[np.int64], t: npt.NDArray[np.int64]
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                             npt.NDArray[np.int64]]:
    """(row, min t, max t) per run of equal rows (per row when ``r`` is sorted)."""
    cut = np.flatnonzero(r[1:] != r[:-1]) + 1
    starts = np.r_[0, cut]
    return r[starts], np.minimum.reduceat(t, starts), np.maximum.reduceat(t, starts)


class _Overlay:
    """The current VEE versions of one reading type, matched against streamed chunks."""

    def __init__(self, cur: pa.Table) -> None:
        self.meter = cur.column("meter_idx").to_numpy()
        self.t = cur.column("interval_end").cast(pa.int64()).to_numpy()
        self.keys = read_key(self.meter, cur.column("reading_type").to_numpy(), self.t)
        order = np.argsort(self.keys, kind="stable")
        self.keys, self.meter, self.t = self.keys[order], self.meter[order], self.t[order]
        self.value = cur.column("value").to_numpy()[order].astype(np.float64)
        self.raw = np.zeros(len(self.keys))
        self.hit = np.zeros(len(self.keys), bool)

    def match(self, meter: npt.NDArray[Any], rt: npt.NDArray[Any], t: npt.NDArray[np.int64],
              value: npt.NDArray[Any]) -> None:
        """Record the raw value of each overlay key among these rows (sorted by key)."""
        a = int(np.searchsorted(self.meter, meter.min(), side="left"))
        b = int(np.searchsorted(self.meter, meter.max(), side="right"))
        if a == b:
            return
        k = read_key(meter, rt, t)
        if bool((k[1:] < k[:-1]).any()):
            order = np.argsort(k, kind="stable")
            k, value = k[order], value[order]
        ok = self.keys[a:b]
        pos = np.clip(np.searchsorted(k, ok), 0, len(k) - 1)
        hit = k[pos] == ok
        idx = np.flatnonzero(hit) + a  # keys are in one file only: no two chunks share one
        self.raw[idx] = value[pos[hit]]
        self.hit[idx] = True

    def apply(self, acc: HourlyAccumulator, windowed: bool) -> None:
        """Replace the matched raw values and add the estimated keys (see module doc)."""
        h = self.hit
        rows = acc.row_of(self.meter)
        keep = ~h & (rows >= 0) & (rows < len(acc.seen))
        if keep.any():
            r = rows[keep]
            if windowed:  # estimated keys of meters with reads in the window
                ok = acc.seen[r].any(axis=1)
            else:  # inside the meter's first..last read
                assert acc.first is not None and acc.last is not None
                ok = (self.t[keep] >= acc.first[r]) & (self.t[keep] <= acc.last[r])
            keep[np.flatnonzero(keep)[~ok]] = False
        sel = h | keep
        if not sel.any():
            return
        r = rows[sel]
        c = _hour_col(self.t[sel], acc.t0)
        inside = (c >= 0) & (c < acc.ncol)
        flat = r[inside] * acc.ncol + c[inside]
        delta = np.where(h[sel], self.value[sel] - self.raw[sel], self.value[sel])[inside]
        np.add.at(acc.sums.reshape(-1), flat, delta)
        acc.seen.reshape(-1)[flat] = True


def matrix_from_store(store: ReadStore, *, reading_type: int = 0,
                      meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                      end: int | None = None, overlay: pa.Table | None = None,
                      chunk_rows: int = 2_000_000) -> HourlyMatrix:
    """The hourly matrix of one reading type of a store (see the module docstring).

    Parameters
    ----------
    store : ReadStore
        Any store adapter (its ``plan_reads``).
    reading_type : int
        ``codes.READING_TYPES`` code (default ``kwh_del``).
    meters, start, end
        As ``scan_reads``: meter indices, ``start <= interval_end < end`` [Unix s].
    overlay : pyarrow.Table, optional
        Current VEE versions (READS columns) of this reading type and window.
    """
    res = codes.READING_TYPES[reading_type].resolution
    rts = np.array([reading_type], np.uint8)
    plan = store.plan_reads(meters=meters, start=start, end=end, reading_types=rts,
                            chunk_rows=chunk_rows)
    ext = plan.extent
    if ext is None:
        return HourlyMatrix(np.empty(0, np.int32), 3600, np.empty((0, 0)))
    ov = _Overlay(overlay) if overlay is not None and overlay.num_rows else None
    windowed = start is not None or end is not None
    wanted = None
    if meters is not None:  # one row per wanted meter when they are sparse
        u = np.unique(np.asarray(meters, np.int64))
        u = u[(u >= ext.meter_lo) & (u <= ext.meter_hi)]
        if len(u) * 2 < ext.meter_hi - ext.meter_lo + 1:
            wanted = u
    acc = HourlyAccumulator(ext.meter_lo, ext.meter_hi, ext.t_lo, ext.t_hi,
                            track_span=ov is not None and not windowed, meters=wanted)

    def add(t: pa.Table) -> None:
        m = _np(t.column("meter_idx"))
        tt = _seconds(t.column("interval_end"))
        v = _np(t.column("value"))
        if ov is not None:
            ov.match(m, _np(t.column("reading_type")), tt, v)
        acc.add(m, tt, v)

    plan.run(add, columns=["meter_idx", "reading_type", "interval_end", "value"])
    if ov is not None:
        ov.apply(acc, windowed)
    return acc.finish(res)


def matrix_from_reads(reads: pa.Table, *, reading_type: int = 0,
                      chunk_rows: int = 8_000_000) -> HourlyMatrix:
    """The hourly matrix of one reading type of a table of reads (any order)."""
    res = codes.READING_TYPES[reading_type].resolution
    rt = _np(reads.column("reading_type"))
    sel = rt == reading_type
    if not sel.any():
        return HourlyMatrix(np.empty(0, np.int32), 3600, np.empty((0, 0)))
    m = _np(reads.column("meter_idx"))
    t = _np(reads.column("interval_end").cast(pa.int64()))
    v = _np(reads.column("value"))
    if not sel.all():
        m, t, v = m[sel], t[sel], v[sel]
    lo, hi = int(m.min()), int(m.max())
    wanted = None
    if hi - lo + 1 > 4 * len(m) + 1024:  # sparse ids: one row per meter present
        wanted = np.unique(m)
    acc = HourlyAccumulator(lo, hi, int(t.min()), int(t.max()), meters=wanted)
    if len(m) > chunk_rows and not bool((m[1:] < m[:-1]).any()):
        # sorted by meter (store scans): blocks of rows, cut at meter boundaries
        cuts = np.unique(np.searchsorted(m, m[::chunk_rows], side="left"))
        for a, b in zip(cuts, [*cuts[1:], len(m)], strict=True):
            acc.add(m[a:b], t[a:b], v[a:b])
    else:
        acc.add(m, t, v)
    return acc.finish(res)


def _seconds(col: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """A timestamp column as Unix seconds (zero-copy for ``timestamp[s]`` in one chunk)."""
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if arr.type.unit == "s" and arr.null_count == 0:
        return arr.view(pa.int64()).to_numpy()  # type: ignore[no-any-return]
    return _np(arr.cast(pa.timestamp("s", tz=arr.type.tz)).cast(pa.int64()))


def _np(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
