"""VEE as an ingest listener: validate and estimate the batches already in memory.

:class:`VeeListener` keeps the reads of every stored batch (``on_stored``) and runs VEE
on them once the watermark is ``delay_s`` (:data:`DELAY_S`, 6 hours of event time)
past the first of them (``on_watermark``), once :data:`FLUSH_ROWS` reads wait, or when
the ingestor closes (``close``, ``flush``). A bulk file spans more than ``delay_s`` and
gets its VEE when its ingest call ends; on the live path (an upload every 15 minutes)
the uploads of ``delay_s`` share one VEE run, whose cost is that of the 2-day context
around them, not of each upload (see docs/vee.md, "Running after ingest"). Batches
waiting more than two days apart (late data days old) get a run each.

A run computes exactly what :func:`~headend.vee.run.run_vee` computes for the window
``[lo - CONTEXT_S, hi + CONTEXT_S]`` around the waiting reads (``lo``, ``hi``: their
first and last interval end) for the keys of those reads, but reads from the store only

* the stored reads at the edges: ``CONTEXT_S`` to ``2 x CONTEXT_S`` before and after
  the new span, of the (meter, reading type) keys of the batch;
* inside the new span, the stored reads of the few (meter, reading type) keys whose
  new reads do not fill their grid over it (holes, or a key that starts or stops
  inside it): their holes may hold reads stored earlier;
* the like-day lookback of the meters with a gap longer than ``max_interpolation_s``;
* register reads (one a day) of the batch's meters.

Reads that wait are stored already; only their VEE waits. So that a process that stops
without flushing (killed, power loss) does not leave them without VEE, the listener
keeps a marker ``<root>/vee/pending-<uuid>`` (the first interval end waiting, under an
``flock`` while the process lives); the next listener on the data directory to flush
runs :func:`~headend.vee.run.run_vee` from a day before it for every marker whose
process is gone.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model.schema import READS, REGISTERS
from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.run import COMPACT_FILES, CONTEXT_S, VeeSummary, window_versions
from headend.vee.versions import VersionStore

__all__ = ["DELAY_S", "FLUSH_ROWS", "VeeListener"]

#: run VEE once this many new reads wait, even before the watermark says so (memory)
FLUSH_ROWS: Final = 8_000_000
#: run VEE once the watermark is this far past the first read waiting [s]
DELAY_S: Final = 21_600


def _keys_short_of_grid(reads: pa.Table, intervals: Any, lo: int, hi: int
                        ) -> npt.NDArray[np.int32]:
    """Meters with a (meter, reading type) whose new reads leave holes in ``[lo, hi]``
    on its grid (counted: the reads of a key are distinct), or whose interval is
    unknown or changes within it."""
    m = reads.column("meter_idx").to_numpy()
    rt = reads.column("reading_type").to_numpy()
    m0 = int(m.min())
    g = (m - m0).astype(np.int64) * 32 + rt
    n = np.bincount(g)
    key = np.flatnonzero(n)
    km = (key // 32 + m0).astype(np.int32)
    krt = (key % 32).astype(np.uint8)
    # one lookup per key: its interval at the span's start and end (a change: short)
    s_lo = intervals.at(km, krt, np.full(len(key), lo, np.int64)).astype(np.int64)
    s_hi = intervals.at(km, krt, np.full(len(key), hi, np.int64)).astype(np.int64)
    s = np.maximum(s_lo, 1)
    cells = (hi // s) - (-(-lo // s)) + 1  # grid points in [lo, hi]
    short = (s_lo == 0) | (s_lo != s_hi) | (n[key] < cells)
    return np.unique(km[short]).astype(np.int32)


def _key_set(reads: pa.Table) -> tuple[int, npt.NDArray[np.bool_]]:
    """The (meter, reading type) keys of ``reads`` as a dense membership table."""
    m = reads.column("meter_idx").to_numpy()
    m0 = int(m.min())
    has = np.bincount((m - m0).astype(np.int64) * 32 + reads.column("reading_type").to_numpy()) > 0
    return m0, has


def _same_keys(part: pa.Table, keys: tuple[int, npt.NDArray[np.bool_]]) -> pa.Table:
    """Rows of ``part`` whose (meter, reading type) is one of ``keys`` (checked once per
    run of equal keys: a scan is in key order)."""
    part = part.select(READS.names).cast(READS)
    if part.num_rows == 0:
        return part
    m0, has = keys
    m = part.column("meter_idx").to_numpy()
    rt = part.column("reading_type").to_numpy()
    first = np.flatnonzero(np.r_[True, (m[1:] != m[:-1]) | (rt[1:] != rt[:-1])])
    g = (m[first].astype(np.int64) - m0) * 32 + rt[first]
    ok = (g >= 0) & (g < len(has))
    ok[ok] = has[g[ok]]
    if ok.all():
        return part
    return part.filter(pa.array(np.repeat(ok, np.diff(np.r_[first, len(m)]))))


def _span_groups(spans: list[tuple[int, int]]) -> list[list[int]]:
    """Batches (indices into ``spans``, each a batch's first and last interval end [s])
    grouped so that a group's windows touch: a batch more than ``2 x CONTEXT_S`` away
    from the others (late data days old) gets a VEE run of its own, not one window
    stretched over the days between."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    groups: list[list[int]] = []
    hi = 0
    for i in order:
        lo_i, hi_i = spans[i]
        if groups and lo_i <= hi + 2 * CONTEXT_S:
            groups[-1].append(i)
            hi = max(hi, hi_i)
        else:
            groups.append([i])
            hi = hi_i
    return groups


class _PendingMark:
    """The marker of reads waiting for VEE: ``<root>/vee/pending-<uuid>`` holds the first
    interval end waiting [Unix s] and is ``flock``-ed while its listener lives."""

    def __init__(self, vee_dir: Path) -> None:
        self.dir = vee_dir
        self.path = vee_dir / f"pending-{uuid.uuid4().hex}"
        self._fd: int | None = None

    def set(self, first_s: int) -> None:
        """Record (or move back) the first interval end waiting."""
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        data = str(first_s).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def clear(self) -> None:
        """Nothing waits any more: remove the marker."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # releases the lock
            self._fd = None

    def orphans(self) -> list[tuple[Path, int]]:
        """Markers no living listener holds: (path, first interval end waiting)."""
        out = []
        for path in sorted(self.dir.glob("pending-*")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its listener lives
                os.close(fd)
                continue
            try:
                text = os.read(fd, 64).decode().strip()
            finally:
                os.close(fd)
            if text.lstrip("-").isdigit():  # an empty one is being written: leave it
                out.append((path, int(text)))
        return out


class VeeListener:
    """Ingest listener: VEE on the newly stored reads, from memory (see the module).

    Parameters
    ----------
    root : Path
        The data directory.
    config : VeeConfig
    delay_s : int
        Run VEE once the watermark is this far past the first interval end waiting
        [s] (:data:`DELAY_S`); 0 runs it at the end of every ingest call.
    flush_rows : int
        ... or once this many reads wait (:data:`FLUSH_ROWS`).
    """

    def __init__(self, root: Path | str, config: VeeConfig = DEFAULT_CONFIG, *,
                 delay_s: int = DELAY_S, flush_rows: int = FLUSH_ROWS) -> None:
        self.root = Path(root)
        self.config = config
        self.delay_s = delay_s
        self.flush_rows = flush_rows
        self._reads: list[pa.Table] = []
        self._spans: list[tuple[int, int]] = []  # first, last interval end of each [s]
        self._rows = 0
        self._first: int | None = None  # first interval end waiting [Unix s]
        self._mark = _PendingMark(self.root / "vee")
        self._orphans_done = False
        self.last: VeeSummary | None = None

    def on_stored(self, batch: Any) -> None:
        reads: pa.Table = batch.reads
        if reads.num_rows:
            mm = pc.min_max(reads.column("interval_end").cast(pa.int64()))
            first, last = mm["min"].as_py(), mm["max"].as_py()
            self._reads.append(reads.select(READS.names))
            self._spans.append((first, last))
            self._rows += reads.num_rows
            if self._first is None or first < self._first:
                self._first = first
                self._mark.set(first)
        if self._rows >= self.flush_rows:
            self.flush()

    def on_watermark(self, event_time_s: int) -> None:
        if self._first is not None and event_time_s - self._first >= self.delay_s:
            self.flush()

    def close(self) -> None:
        """Run VEE on what waits (the ingestor closes; the listener stays usable)."""
        self.flush()

    def flush(self) -> None:
        """Run VEE now on every read waiting (and on what a stopped process left)."""
        if not self._orphans_done:
            self._orphans_done = True
            self._recover()
        if self._reads:
            total = VeeSummary()
            for group in _span_groups(self._spans):
                total.add(self._flush(pa.concat_tables([self._reads[i] for i in group])))
            self.last = total
        self._reads, self._spans, self._rows, self._first = [], [], 0, None
        self._mark.clear()

    def _recover(self) -> None:
        """VEE from a day before the first read each stopped listener left waiting."""
        from headend.vee.run import run_vee

        for path, first in self._mark.orphans():
            run_vee(self.root, start=first - CONTEXT_S, config=self.config)
            path.unlink(missing_ok=True)

    def _flush(self, new: pa.Table) -> VeeSummary:
        """VEE over the window of the new reads ``new`` (see the module)."""
        from headend.store import DataDir

        new = new.cast(READS)
        t = new.column("interval_end").cast(pa.int64()).to_numpy()
        lo, hi = int(t.min()), int(t.max())
        start, end = lo - CONTEXT_S, hi + 1 + CONTEXT_S
        c_lo, c_hi = start - CONTEXT_S, end + CONTEXT_S
        margin = self.config.like_day_lookback_days * 86_400
        meters = np.unique(new.column("meter_idx").to_numpy()).astype(np.int32)
        keys = _key_set(new)
        with DataDir.open(self.root) as dd:
            store = dd.store
            intervals = dd.registry.intervals()
            parts = [store.scan_reads(meters=meters, start=c_lo, end=lo),
                     store.scan_reads(meters=meters, start=hi + 1, end=c_hi)]
            inside = _keys_short_of_grid(new, intervals, lo, hi)
            if len(inside):  # their holes may hold reads stored before: read them
                parts.append(store.scan_reads(meters=inside, start=lo, end=hi + 1))
                new = new.filter(pa.array(~np.isin(new.column("meter_idx").to_numpy(),
                                                   inside)))
            reads = pa.concat_tables([new, *(_same_keys(p, keys) for p in parts)])
            regs = store.scan_registers(meters=meters, start=c_lo, end=c_hi)

            def history(ms: npt.NDArray[np.int32]) -> tuple[pa.Table, pa.Table]:
                return (store.scan_reads(meters=ms, start=c_lo - margin, end=c_hi + margin),
                        store.scan_registers(meters=ms, start=c_lo - margin,
                                             end=c_hi + margin))

            vs = VersionStore(self.root)
            summary = window_versions(self.root, reads, regs.cast(REGISTERS), intervals,
                                      start=start, end=end, config=self.config, now=None,
                                      author="vee", history=history, vs=vs)
        if len(vs._files()) > COMPACT_FILES:
            vs.compact()
        return summary
