"""Per-household tasks streamed over the store, without the hourly matrix.

The consumption histogram needs each household's hourly values once, its minimum and
maximum, and a count per bucket: no other household and no calendar alignment. When
every household's rows are in one file of the store (compacted month/year files split
by meter range: :attr:`ReadPlan.meters_in_one_file
<headend.store.base.ReadPlan.meters_in_one_file>`), :func:`histogram_from_store`
reads each file's chunks in key order (files in parallel), carries the rows of the last,
possibly unfinished household over to the next chunk, and computes the histogram of
every finished household from its hourly values: the reads' integer sums per hour in
which they end, times the resolution, then the formula of
:func:`headend.analytics.liu.histogram`, step for step, so the result is the engine's
bit for bit. Memory is one chunk per thread instead of the (households x hours) matrix.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.hourly import _seconds
from headend.analytics.liu import HIST_BUCKETS
from headend.model import codes
from headend.store.base import ReadPlan, ReadStore

__all__ = ["histogram_from_store", "streamable"]


def streamable(plan: ReadPlan) -> bool:
    """Whether :func:`histogram_from_store` can stream this plan."""
    return plan.meters_in_one_file


def _household_hist(m: npt.NDArray[np.int32], t: npt.NDArray[np.int64],
                    v: npt.NDArray[Any], res: float, buckets: int
                    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64],
                               npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Histogram of complete households' rows sorted by (meter, time)."""
    hour = (t + 3599) // 3600
    new = np.empty(len(m), bool)
    new[0] = True
    np.not_equal(m[1:], m[:-1], out=new[1:])
    new[1:] |= hour[1:] != hour[:-1]
    if new.all():  # one read per hour (hourly data)
        hm, x = m, v.astype(np.float64)
    else:
        s = np.flatnonzero(new)
        hm, x = m[s], np.add.reduceat(v.astype(np.int64), s).astype(np.float64)
    x *= res  # float(sum) * resolution: the matrix's hourly values
    first = np.flatnonzero(np.r_[True, hm[1:] != hm[:-1]])
    n = np.diff(np.r_[first, len(hm)])
    if bool((n == n[0]).all()):  # equally many hours each: liu.histogram on the block
        counts, lo, hi = liu.histogram(x.reshape(len(first), int(n[0])), buckets)
        return hm[first], counts, lo, hi
    rows = np.repeat(np.arange(len(first)), n)
    lo = np.minimum.reduceat(x, first)
    hi = np.maximum.reduceat(x, first)
    width = hi - lo
    b = x - lo[rows]  # liu.histogram's steps, element for element
    b /= np.where(width > 0, width, np.inf)[rows]
    b *= buckets
    np.floor(b, out=b)
    np.minimum(b, buckets - 1, out=b)
    counts = np.bincount(rows * buckets + b.astype(np.int64),
                         minlength=len(first) * buckets).reshape(len(first), buckets)
    return hm[first], counts, lo, hi


def histogram_from_store(store: ReadStore, *, reading_type: int = 0,
                         meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                         end: int | None = None, buckets: int = HIST_BUCKETS,
                         chunk_rows: int = 2_000_000) -> pa.Table:
    """The histogram task (:meth:`EmbeddedEngine.histogram
    <headend.analytics.engine.EmbeddedEngine.histogram>`) of the reads as stored (no VEE
    versions), streamed (see the module docstring). Raises ``ValueError`` when the
    plan's files share meters (use the engine then)."""
    res = codes.READING_TYPES[reading_type].resolution
    plan = store.plan_reads(meters=meters, start=start, end=end,
                            reading_types=np.array([reading_type], np.uint8),
                            chunk_rows=chunk_rows)
    if not streamable(plan):
        raise ValueError("meters span several files: load the hourly matrix instead")
    carry: dict[int, tuple[Any, Any, Any]] = {}
    out: list[tuple[Any, Any, Any, Any]] = []
    lock = threading.Lock()

    def take(m: Any, t: Any, v: Any) -> None:
        got = _household_hist(m, t, v, res, buckets)
        with lock:
            out.append(got)

    def fn(no: int, table: pa.Table | None) -> None:
        prev = carry.pop(no, None)
        if table is None:  # the file is done: its last household is complete
            if prev is not None:
                take(*prev)
            return
        m = table.column("meter_idx").to_numpy()
        t = _seconds(table.column("interval_end"))
        v = table.column("value").to_numpy()
        if prev is not None:  # the carried household continues at the chunk's start
            j = int(np.searchsorted(m, prev[0][0], side="right")) if m[0] == prev[0][0] else 0
            if j == len(m):  # the whole chunk is that household
                carry[no] = (np.concatenate([prev[0], m]), np.concatenate([prev[1], t]),
                             np.concatenate([prev[2], v]))
                return
            take(*(np.concatenate([a, b[:j]]) for a, b in zip(prev, (m, t, v), strict=True)))
            m, t, v = m[j:], t[j:], v[j:]
        cut = int(np.searchsorted(m, m[-1], side="left"))  # the last household may go on
        if cut > 0:
            take(m[:cut], t[:cut], v[:cut])
        carry[no] = (m[cut:], t[cut:], v[cut:])

    plan.run_files(fn, columns=["meter_idx", "interval_end", "value"])
    if not out:
        return R.histogram_table(np.empty(0, np.int32), np.zeros((0, buckets), np.int64),
                                 np.empty(0), np.empty(0))
    out.sort(key=lambda g: int(g[0][0]))
    meter = np.concatenate([g[0] for g in out])
    return R.histogram_table(meter.astype(np.int32), np.concatenate([g[1] for g in out]),
                             np.concatenate([g[2] for g in out]),
                             np.concatenate([g[3] for g in out]))
