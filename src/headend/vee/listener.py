"""VEE as an ingest listener: validate and estimate what ingest stored, meters in chunks.

:class:`VeeListener` notes what each stored batch brought (``on_stored``): its first
and last interval end and its (meter, reading type) keys, as a bit per reading type
per meter (4 bytes a meter, whatever the number of reads). It runs VEE once the
watermark is ``delay_s`` (:data:`DELAY_S`, 6 hours of event time) past the first
interval end waiting (``on_watermark``), or when the ingestor closes (``close``,
``flush``). A bulk file spans more than ``delay_s`` and gets its VEE when its ingest
call ends; on the live path (an upload every 15 minutes) the uploads of ``delay_s``
share one VEE run, whose cost is that of the 2-day context around them, not of each
upload (see docs/vee.md, "Running after ingest"). Batches waiting more than two days
apart (late data days old) get a run each.

The reads themselves are not kept: they are stored already, and a run reads them back
from the store with their context, :data:`CHUNK_METERS` meters at a time (a contiguous
range of ``meter_idx``, which the store reads by row group), so that the memory of a
run is that of one chunk, independent of the fleet and of the number of reads waiting.
A run computes exactly what :func:`~headend.vee.run.run_vee` computes for the window
``[lo - CONTEXT_S, hi + CONTEXT_S]`` around the waiting reads (``lo``, ``hi``: their
first and last interval end) for the keys of those reads; per chunk it reads

* the stored reads of the chunk's waiting keys within ``CONTEXT_S`` of the window
  (other keys of the meter range are dropped: a reading type the batches did not bring
  is left alone);
* the register reads of the chunk's meters over the same span;
* the like-day lookback of the chunk's meters with a gap longer than
  ``max_interpolation_s``;
* the current versions of the chunk's keys in the window.

Reads that wait are stored already; only their VEE waits. So that a process that stops
without flushing (killed, power loss) does not leave them without VEE, the listener
keeps a marker ``<root>/vee/pending-<uuid>`` (the first interval end waiting, under an
``flock`` while the process lives); the next listener on the data directory to flush
runs :func:`~headend.vee.run.run_vee` from a day before it for every marker whose
process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model.schema import READS, REGISTERS
from headend.store.config import DEFAULT_BUCKET_BITS
from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.run import (
    CHUNK_METERS,
    COMPACT_FILES,
    CONTEXT_S,
    RunSink,
    VeeSummary,
    window_versions,
)
from headend.vee.versions import VersionStore

if TYPE_CHECKING:
    from headend.store import DataDir, MeterRegistry

__all__ = ["DELAY_S", "VeeListener"]

log = logging.getLogger(__name__)

#: run VEE once the watermark is this far past the first read waiting [s]
DELAY_S: Final = 21_600
#: reading types a key mask holds (a bit each)
_RT_BITS: Final = 32


def _key_bits(reads: pa.Table) -> npt.NDArray[np.uint32]:
    """The (meter, reading type) keys of ``reads``: per ``meter_idx``, bit ``rt`` set
    when the meter has reads of reading type ``rt``."""
    m = reads.column("meter_idx").to_numpy()
    rt = reads.column("reading_type").to_numpy()
    bits = np.zeros(int(m.max()) + 1, np.uint32)
    for r in np.flatnonzero(np.bincount(rt, minlength=_RT_BITS)):
        bits[m[rt == r]] |= np.uint32(1 << int(r))
    return bits


def _or(a: npt.NDArray[np.uint32], b: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    if len(a) < len(b):
        a, b = b, a
    out = a.copy()
    out[:len(b)] |= b
    return out


@dataclass(slots=True)
class _Waiting:
    """Batches waiting for one VEE run: their first and last interval end [s], their
    keys (:func:`_key_bits`) and the number of reads they brought."""

    lo: int
    hi: int
    keys: npt.NDArray[np.uint32]
    rows: int

    def touches(self, other: _Waiting) -> bool:
        """Whether the windows touch (a batch more than ``2 x CONTEXT_S`` away from the
        others, late data days old, gets a VEE run of its own, not one window stretched
        over the days between)."""
        return other.lo <= self.hi + 2 * CONTEXT_S and self.lo <= other.hi + 2 * CONTEXT_S

    def merge(self, other: _Waiting) -> None:
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.keys = _or(self.keys, other.keys)
        self.rows += other.rows


def _add_waiting(groups: list[_Waiting], new: _Waiting) -> list[_Waiting]:
    """``groups`` with ``new`` merged into every group it touches (and those into one)."""
    keep = []
    for g in groups:
        if g.touches(new):
            new.merge(g)
        else:
            keep.append(g)
    return sorted([*keep, new], key=lambda g: g.lo)


def _of_keys(part: pa.Table, keys: npt.NDArray[np.uint32]) -> pa.Table:
    """Rows of ``part`` whose (meter, reading type) is one of ``keys`` (checked once per
    run of equal keys: a scan is in key order)."""
    part = part.select(READS.names).cast(READS)
    if part.num_rows == 0:
        return part
    m = part.column("meter_idx").to_numpy()
    rt = part.column("reading_type").to_numpy()
    first = np.flatnonzero(np.r_[True, (m[1:] != m[:-1]) | (rt[1:] != rt[:-1])])
    fm = m[first]
    ok = fm < len(keys)
    ok[ok] = ((keys[fm[ok]] >> rt[first][ok].astype(np.uint32)) & 1).astype(bool)
    if ok.all():
        return part
    return part.filter(pa.array(np.repeat(ok, np.diff(np.r_[first, len(m)]))))


def meter_chunks(meters: npt.NDArray[np.int32], chunk_meters: int,
                 bucket_bits: int = DEFAULT_BUCKET_BITS) -> list[npt.NDArray[np.int32]]:
    """``meters`` (sorted) in chunks of at most ``chunk_meters``, none across a store
    bucket of ``2**bucket_bits`` meters (the store reads a bucket's segments whole for
    any meter range in it: a chunk across two reads both)."""
    if len(meters) == 0:
        return []
    out: list[npt.NDArray[np.int32]] = []
    bucket = meters >> bucket_bits
    edges = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1], True])
    for a, b in itertools.pairwise(edges):
        n = -(-(b - a) // chunk_meters)  # equal chunks within the bucket
        out.extend(np.array_split(meters[a:b], n))
    return out


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
    """Ingest listener: VEE on the newly stored reads, in meter chunks (see the module).

    Parameters
    ----------
    root : Path
        The data directory.
    config : VeeConfig
    delay_s : int
        Run VEE once the watermark is this far past the first interval end waiting
        [s] (:data:`DELAY_S`); 0 runs it at the end of every ingest call.
    chunk_meters : int
        Meters per VEE chunk (:data:`~headend.vee.run.CHUNK_METERS`): bounds the memory
        of a run (reads, dense matrices) whatever the fleet.
    data : DataDir, optional
        The ingestor's open data directory (store and registry), used by the runs.
        Without it each run opens ``root`` again (a store of its own, whose caches
        go with it).
    registry : MeterRegistry, optional
        The ingestor's meter registry, whose intervals the runs use (without it, or
        ``data``, each run loads the meter registry once more: about 0.6 s and 180 MB
        per 400,000 meters).
    """

    #: ingest listener port: outbox queue name; new rows only on a redelivery
    name = "VeeListener"
    republish_on_redelivery = False

    def __init__(self, root: Path | str, config: VeeConfig = DEFAULT_CONFIG, *,
                 delay_s: int = DELAY_S, chunk_meters: int = CHUNK_METERS,
                 data: DataDir | None = None, registry: MeterRegistry | None = None
                 ) -> None:
        self.root = Path(root)
        self.config = config
        self.data = data
        self.registry = registry
        self.delay_s = delay_s
        self.chunk_meters = chunk_meters
        self._waiting: list[_Waiting] = []
        self._first: int | None = None  # first interval end waiting [Unix s]
        self._mark = _PendingMark(self.root / "vee")
        self._orphans_done = False
        self.last: VeeSummary | None = None

    def on_stored(self, batch: Any) -> None:
        reads: pa.Table = batch.reads
        if not reads.num_rows:
            return
        mm = pc.min_max(reads.column("interval_end").cast(pa.int64()))
        first, last = mm["min"].as_py(), mm["max"].as_py()
        self._waiting = _add_waiting(self._waiting,
                                     _Waiting(first, last, _key_bits(reads), reads.num_rows))
        if self._first is None or first < self._first:
            self._first = first
            self._mark.set(first)

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
        if self._waiting:
            total = VeeSummary()
            for group in self._waiting:
                total.add(self._run(group))
            self.last = total
        self._waiting, self._first = [], None
        self._mark.clear()

    def _recover(self) -> None:
        """VEE from a day before the first read each stopped listener left waiting."""
        from headend.vee.run import run_vee

        for path, first in self._mark.orphans():
            run_vee(self.root, start=first - CONTEXT_S, config=self.config)
            path.unlink(missing_ok=True)

    def _run(self, w: _Waiting) -> VeeSummary:
        """VEE over the window of the waiting batches ``w``, chunk by chunk."""
        from headend.store import DataDir, ParquetStore

        t0 = time.perf_counter()
        start, end = w.lo - CONTEXT_S, w.hi + 1 + CONTEXT_S
        c_lo, c_hi = start - CONTEXT_S, end + CONTEXT_S
        margin = self.config.like_day_lookback_days * 86_400
        total = VeeSummary()
        vs = VersionStore(self.root)
        sink = RunSink(self.root, author="vee")
        with contextlib.ExitStack() as stack:
            if self.data is not None:
                store, intervals = self.data.store, self.data.registry.intervals()
            elif self.registry is not None:  # a store of the run's own, not a registry
                store = stack.enter_context(ParquetStore(self.root))
                intervals = self.registry.intervals()
            else:
                dd = stack.enter_context(DataDir.open(self.root))
                store, intervals = dd.store, dd.registry.intervals()

            def history(ms: npt.NDArray[np.int32]) -> tuple[pa.Table, pa.Table]:
                return (store.scan_reads(meters=ms, start=c_lo - margin, end=c_hi + margin),
                        store.scan_registers(meters=ms, start=c_lo - margin,
                                             end=c_hi + margin))

            meters = np.flatnonzero(w.keys).astype(np.int32)
            chunks = meter_chunks(meters, self.chunk_meters)
            for ms in chunks:
                span = np.arange(ms[0], ms[-1] + 1, dtype=np.int32)  # a range: by row group
                reads = _of_keys(store.scan_reads(meters=span, start=c_lo, end=c_hi), w.keys)
                if reads.num_rows == 0:
                    continue
                regs = store.scan_registers(meters=ms, start=c_lo, end=c_hi)
                total.add(window_versions(self.root, reads, regs.cast(REGISTERS), intervals,
                                          start=start, end=end, config=self.config,
                                          now=None, author="vee", history=history, vs=vs,
                                          sink=sink))
        sink.flush()
        if len(vs._files()) > COMPACT_FILES:
            vs.compact()
        log.info("VEE run over [%d, %d): %d new reads, %d meters in %d chunks, "
                 "%d reads with context, %.1f s", start, end, w.rows, len(meters),
                 len(chunks), total.reads, time.perf_counter() - t0)
        return total
