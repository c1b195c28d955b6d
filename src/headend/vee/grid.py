"""Dense (meter x interval) matrices of one reading type: the shape VEE works on.

Reads arrive as a long Arrow table (:data:`headend.model.schema.READS`). VEE turns the
reads of one reading type and one interval length into a :class:`Grid`: a row per
meter, a column per interval end on the regular grid ``t0 + j * interval_s``, with the
raw integer values (``NaN`` where missing) and quality masks. Every rule then runs as
whole-matrix NumPy operations with masks; there is no loop per read.

A cell is *expected* when it lies between the meter's first and last read of that
reading type (inclusive): the contract of ``headend vee`` is a value for every expected
interval.

Local days
----------
Storage is UTC. Rules that reason in days (like days, daily totals, low consumption)
use the utility's local days (``tz``, an IANA name, default ``"UTC"``). An interval
belongs to the local day in which it *starts* (``interval_end - interval_s``), so the
interval ending at local midnight closes the previous day. A day with a DST change has
23 or 25 hours (92 or 100 fifteen-minute intervals); :func:`local_calendar` counts
them from the calendar, never assuming 24 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend._grouping import unique_inverse
from headend.model.schema import READS, TS

__all__ = ["Grid", "LocalCalendar", "build_grids", "grid_to_table", "local_calendar",
           "local_seconds"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
B = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Grid:
    """Reads of one reading type and interval length as dense matrices.

    Attributes
    ----------
    reading_type : int
        Reading type code (:data:`headend.model.codes.READING_TYPES`).
    interval_s : int
        Interval length [s] shared by every meter of the grid.
    meter_idx : ndarray of int32, shape (M,)
        Meter of each row, ascending.
    t0 : int
        Interval end of column 0 [Unix s]; column ``j`` ends at ``t0 + j * interval_s``.
    value : ndarray of float64, shape (M, T)
        Raw value in the reading type's resolution; ``NaN`` where no read exists.
    quality : ndarray of uint32, shape (M, T)
        Quality mask as stored (0 where missing).
    expected : ndarray of bool, shape (M, T)
        Cell between the meter's first and last read (inclusive).
    """

    reading_type: int
    interval_s: int
    meter_idx: npt.NDArray[np.int32]
    t0: int
    value: F64
    quality: U32
    expected: B

    @property
    def present(self) -> B:
        """Cells with a read."""
        return ~np.isnan(self.value)

    @property
    def interval_end(self) -> I64:
        """Interval end of each column [Unix s], shape (T,)."""
        return self.t0 + np.arange(self.value.shape[1], dtype=np.int64) * self.interval_s


def _read_steps(meter: npt.NDArray[np.int32], rt: npt.NDArray[np.uint8], t: I64,
                intervals: Any) -> tuple[I64, I64 | None, B | None]:
    """Interval, row key and "interval known" of every read.

    The row key is ``meter << 20 | segment`` (a meter whose interval changed has a row
    per interval it had); None when no interval changed (the row is the meter).
    "Known" is None when every interval is known. Reads of keys whose interval is unknown get a provisional
    step, the coarsest grid holding all their reads, only to validate them.
    """
    if isinstance(intervals, np.ndarray | list | tuple):  # interval per meter, by meter_idx
        step = np.asarray(intervals, np.int64)[meter]
        return step, None, None
    local = None
    if intervals.changed:  # some key changed interval: number its segments 0, 1, ...
        ivl, seg = intervals.segments(meter, rt, t)
        learned = seg >= 0
        local = np.zeros(len(meter), np.int64)
        local[learned] = intervals.ordinal(seg[learned])
    else:
        ivl = intervals.at(meter, rt, t)
    step = ivl.astype(np.int64)
    known = step > 0
    if not known.all():
        u = np.flatnonzero(~known)
        g = meter[u].astype(np.int64) * 32 + rt[u]
        ug, inv = unique_inverse(g)
        d = np.zeros(len(ug), np.int64)
        np.gcd.at(d, inv, t[u] % 86_400)
        step[u] = np.gcd(np.where(d > 0, d, 86_400), 86_400)[inv]
    else:
        known = None
    row_key = None if local is None else (meter.astype(np.int64) << 20) | local
    return step, row_key, known


def build_grids(reads: pa.Table, intervals: Any) -> list[Grid]:
    """Split ``reads`` into one :class:`Grid` per (reading type, interval length).

    Parameters
    ----------
    reads : pyarrow.Table
        Interval reads in :data:`~headend.model.schema.READS`, one row per key.
    intervals : IntervalHistory or ndarray of int32
        The interval in effect for each read
        (:class:`~headend.store.intervals.IntervalHistory`), or the interval of each
        meter [s] indexed by ``meter_idx``.

    Returns
    -------
    list of Grid
        Sorted by (reading type, interval length). A row per meter and interval it had
        (``meter_idx`` repeats for a meter whose interval changed). Reads off a meter's
        grid (``interval_end % interval_s != 0``) are placed on the next grid point.
        Rows whose interval is unknown expect only the cells they have (nothing to
        estimate).
    """
    if reads.num_rows == 0:
        return []
    meter = reads.column("meter_idx").to_numpy()
    rt = reads.column("reading_type").to_numpy()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    value = reads.column("value").to_numpy()
    quality = reads.column("quality").to_numpy()
    step_of, row_key, known = _read_steps(meter, rt, t, intervals)
    # group key from small codes: (reading type, index of the interval length)
    # (steps divide a day: a table lookup instead of a sort)
    seen = np.bincount(step_of, minlength=1) > 0
    lengths = np.flatnonzero(seen)
    code_of = np.cumsum(seen) - 1
    gcode = rt.astype(np.int64) * len(lengths) + code_of[step_of]
    present_groups = np.flatnonzero(np.bincount(gcode))
    grids: list[Grid] = []
    for gc in present_groups:
        if len(present_groups) == 1:
            sel: slice | npt.NDArray[np.intp] = slice(None)
        else:
            sel = np.flatnonzero(gcode == gc)
        step = int(lengths[gc % len(lengths)])
        g_rt = int(gc // len(lengths))
        # ceil to the grid (a no-op for aligned reads)
        tt = -(-t[sel] // step) * step
        if row_key is not None:  # some meter changed interval: rows by (meter, segment)
            rows, row_of = unique_inverse(row_key[sel])
            row_meter = (rows >> 20).astype(np.int32)
        else:  # meter indices are small dense integers: a lookup table beats unique()
            m = meter[sel]
            seen = np.zeros(int(m.max()) + 1, dtype=np.bool_)
            seen[m] = True
            row_meter = np.flatnonzero(seen).astype(np.int32)
            row_of = (np.cumsum(seen) - 1)[m]
        t0 = int(tt.min())
        col = (tt - t0) // step
        ncol = int(col.max()) + 1
        vals = np.full((len(row_meter), ncol), np.nan)
        qual = np.zeros((len(row_meter), ncol), dtype=np.uint32)
        flat = row_of * ncol + col
        vals.ravel()[flat] = value[sel]
        qual.ravel()[flat] = quality[sel]
        present = ~np.isnan(vals)
        first = present.argmax(axis=1)
        last = ncol - 1 - present[:, ::-1].argmax(axis=1)
        cols = np.arange(ncol)
        expected = (cols[None, :] >= first[:, None]) & (cols[None, :] <= last[:, None])
        known_sel = None if known is None else known[sel]
        if known_sel is not None and not known_sel.all():  # unknown: validate, not estimate
            blind = np.zeros(len(row_meter), bool)
            blind[row_of[~known_sel]] = True
            expected[blind] = present[blind]
        grids.append(Grid(g_rt, step, row_meter, t0, vals, qual, expected))
    return grids


def grid_to_table(grid: Grid, value: F64, quality: U32, mask: B) -> pa.Table:
    """The cells of ``mask`` as a :data:`READS` table, sorted by key.

    ``value`` is rounded to the nearest integer (half away from zero is not needed:
    estimates are rounded with :func:`numpy.rint`, ties to even).
    """
    flat = np.flatnonzero(mask)  # row-major: sorted by meter, then time
    ncol = mask.shape[1]
    r = flat // ncol
    c = flat - r * ncol
    return pa.table(
        {
            "meter_idx": pa.array(grid.meter_idx[r], pa.int32()),
            "reading_type": pa.array(np.full(len(r), grid.reading_type, np.uint8)),
            "interval_end": pa.array(grid.t0 + c * grid.interval_s, pa.int64()).cast(TS),
            "value": pa.array(np.rint(value.ravel()[flat]).astype(np.int32)),
            "quality": pa.array(quality.ravel()[flat], pa.uint32()),
        },
        schema=READS,
    )


@dataclass(frozen=True, slots=True)
class LocalCalendar:
    """Local day and time-of-day slot of every grid column.

    Attributes
    ----------
    day : ndarray of int64, shape (T,)
        Local day of each column, counted from the first column's day (0, 1, ...).
    slot : ndarray of int64, shape (T,)
        Local time of day of the interval's start in intervals (``0 .. 86400/interval_s - 1``);
        the repeated hour of a 25-hour day maps onto the same slots twice.
    weekday : ndarray of int64, shape (D,)
        ISO weekday of each local day, Monday = 0.
    date : ndarray of datetime64[D], shape (D,)
        Local calendar date of each day.
    n_intervals : ndarray of int64, shape (D,)
        Intervals of each local day on the full calendar (92, 96 or 100 for
        15-minute intervals), counted even where the grid starts or ends mid-day.
    """

    day: I64
    slot: I64
    weekday: I64
    date: npt.NDArray[np.datetime64]
    n_intervals: I64


def local_seconds(t: I64, tz: str) -> I64:
    """Local wall-clock time of the instants ``t`` [Unix s] in the IANA zone ``tz``, as
    seconds since the local epoch (``local_seconds(t, tz) // 86400`` is the local day)."""
    if tz in ("UTC", "Etc/UTC", "Z"):
        return t
    arr = pa.array(t, pa.int64()).cast(pa.timestamp("s", tz=tz))
    return pc.local_timestamp(arr).cast(pa.int64()).to_numpy()  # type: ignore[no-any-return]


def local_calendar(t0: int, n: int, interval_s: int, tz: str = "UTC") -> LocalCalendar:
    """Local days and slots of the columns ``t0 + j * interval_s``, ``j < n``.

    Parameters
    ----------
    t0 : int
        Interval end of column 0 [Unix s].
    n : int
        Number of columns.
    interval_s : int
        Interval length [s].
    tz : str
        IANA time zone of the utility (``"Europe/Paris"``); default ``"UTC"``.
    """
    start = t0 - interval_s + np.arange(n, dtype=np.int64) * interval_s
    local = local_seconds(start, tz)
    abs_day = np.floor_divide(local, 86400)
    day0 = int(abs_day[0]) if n else 0
    day = abs_day - day0
    slot = (local - abs_day * 86400) // interval_s
    ndays = int(day[-1]) + 1 if n else 0
    dates = (np.arange(ndays, dtype=np.int64) + day0).astype("datetime64[D]")
    weekday = (np.arange(ndays, dtype=np.int64) + day0 + 3) % 7  # 1970-01-01 was a Thursday
    # intervals per full local day: local midnights in UTC, differenced
    edges_local = (np.arange(ndays + 1, dtype=np.int64) + day0) * 86400
    edges_utc = _utc_of_local_midnight(edges_local, tz)
    n_int = np.diff(edges_utc) // interval_s
    return LocalCalendar(day, slot, weekday, dates, n_int)


def _utc_of_local_midnight(local_s: I64, tz: str) -> I64:
    """UTC instant of each local wall-clock midnight (midnight exists in every IANA zone
    headend targets; a skipped midnight maps to the first instant after the gap)."""
    if tz in ("UTC", "Etc/UTC", "Z"):
        return local_s
    arr = pa.array(local_s, pa.int64()).cast(pa.timestamp("s"))
    utc = pc.assume_timezone(arr, timezone=tz, ambiguous="earliest", nonexistent="latest")
    return utc.cast(pa.int64()).to_numpy()  # type: ignore[no-any-return]
