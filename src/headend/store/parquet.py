"""The embedded columnar store: Arrow IPC segments compacted into sorted zstd Parquet.

On-disk layout
--------------
::

    <root>/
      reads/                               one tree per kind: reads, registers, events
        b=000012/                          meter bucket = meter_idx >> bucket_bits
          y=2026/                          UTC year of interval_end (read_time, event_time)
            seg-1126-000000000041.arrow    segment: rows of one append for day 11-26,
                                           sorted by key, Arrow IPC, uncompressed
            seg-0101-0214-000000000042.arrow
                                           multi-day segment: one append's rows of Jan 1
                                           to Feb 14, one record batch per day
            day-1125-000000000040.parquet  compacted day 11-25 (sorted by key, zstd)
            mon-10-000000000039.parquet    compacted month 10 (closed months)
            year-000000000007.parquet      compacted year (top_level="year", closed years)
            dcp-1125-000000000038.parquet  day copy of day 11-25 (day_copies=True)
      locks/reads-12.lock                  flock held by the process writing bucket 12
      layout.json                          bucket bits and partitions the store was
                                           created with (store._storelayout)
      meters.parquet  collectors.parquet   registry and HMAC keys (store.registry)
      quarantine/                          rejected rows (store.quarantine)

Every file is sorted by the dedup key (``model.schema.read_key``: meter, type, time),
so meter, type and time columns delta/RLE-encode to almost nothing, and one meter's
history or one feeder (a contiguous meter range) is a few row groups, found from the
cached row-group statistics of ``meter_idx``.

Live-file rule (see :mod:`headend.store._layout`): within a bucket-year directory a
file is obsolete when a compacted file whose scope (day MMDD, month MM, year) contains
its scope has a larger sequence number. Readers ignore obsolete files; the owner of the
bucket deletes them.

Block sums (``StoreConfig.block_meters``): a month/year file sorted by meter serves a
meter-year from one row group but a feeder-day only by decoding the feeder's rows of
the whole month/year. So beside each month/year file of reads compaction writes a
``.blocks`` sidecar of per-(day, interval end, block of 16 meters, type) sums
(:mod:`headend.store._blocks`): a feeder-day adds the sums of its whole blocks and
decodes only the rows of the partial blocks at its ends (+~0.08-0.11 B/read).
Day copies (``StoreConfig.day_copies``, off by default) are the older way: before a
closed month/year merge absorbs a day, compaction keeps the day's data as
``dcp-MMDD``, a second copy read only by ``feeder_interval_sum`` (about twice the
bytes). A copy is valid while no live segment/day file of its day is newer; scans,
dedup and meter histories never read copies (docs/store.md).

Durability protocol
-------------------
::

    append(batch)
      1 key = read_key(...); stable sort; first occurrence of each key wins
      2 split into (bucket, day) partitions; take each bucket's flock (held until close)
      3 drop keys the partition's dedup index already holds
      4 per run of consecutive days of a bucket-year: write
        .tmp-<pid>-<uuid>-seg-MMDD[-MMDD]-<seq>.arrow (a record batch a day), fsync,
        rename
      5 fsync each touched directory                        <- durable
      6 add the files to the owner's manifest, the keys to the dedup index; return
                                                            <- acknowledged

    compact(bucket-year)
      0 (day_copies) before a month/year merge: link or merge each absorbed day into
        dcp-MMDD-<seq>, fsync dir                  <- copies durable before step 2
      1 merge the live files of a day / closed month / closed year, sorted, streamed in
        meter ranges of at most merge_rows rows (bounded memory)
      2 write .tmp-..., fsync, rename to day|mon|year-...-<seq>.parquet, fsync dir  <- commit
      3 unlink the files it replaced, fsync dir

Automatic compaction: once a day partition holds ``auto_compact_segments`` segments it
is merged into a day file, in a background thread (``background_compaction``): the
thread allocates the output seq and lists its inputs under the writer mutex (so every
segment below that seq is complete), merges without it while appends go on with
larger seqs, then publishes and deletes its inputs under the mutex again.

A crash before 4's rename leaves a temp file (removed when the bucket is next taken);
a crash between 5 and 6 leaves a durable segment whose keys the rebuilt index knows,
so the client's retry is counted as duplicates; a crash in compaction leaves either the
old files or the new file plus obsolete ones that the live-file rule hides.

Dedup index
-----------
::

    (kind, bucket, day) --LRU bounded by index_cache_bytes--> partition index
      reads:              {reading_type: bitmap[bucket_size x 288 bits]} + off-grid keys
      registers, events:  sorted key array

On a miss the index is rebuilt from the key columns of the partition's live files
(segments and day file of that day, and the month/year file holding it). Only the
process holding the bucket's lock writes the bucket, so its index is authoritative.

Manifest
--------
The same holds for the bucket's files: the owner lists each bucket-year directory once
(when it takes the bucket, and after a compaction) and then keeps its manifest
(:mod:`headend.store._manifest`) as it publishes and deletes files, so an append never
lists a directory and costs the same whatever the number of files (bench_append.py).

Queries
-------
A query lists the live files of the bucket-years it touches (directory listings are
cached while the directory's mtime is unchanged), keeps the row groups whose cached
``meter_idx`` statistics overlap the meter range, decodes them (files in parallel),
filters with NumPy masks and sorts by key when several files contribute.
``meter_history`` reads one row group per file; ``feeder_interval_sum`` reads the
block sums of month/year files plus the rows of at most two partial blocks, and the
day's other live files (or the day's valid copy, with copies on), and sums with one
``bincount`` per row-group batch, skipping the meter column inside the range.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import StorageError
from headend.store import _fs, _rollup
from headend.store._blocks import BlockCache
from headend.store._compact import compact_dir, merge_files
from headend.store._keys import (
    EVENTS_KIND,
    KINDS,
    READS_KIND,
    REGISTERS_KIND,
    Keys,
    Kind,
    key_meter,
    key_time,
    sort_unique_first,
)
from headend.store._layout import (
    DirCache,
    FileEntry,
    MetaCache,
    file_name,
    list_dir,
    newest_copies,
    read_meter_range,
    read_segment,
    segment_entries,
    split_live,
)
from headend.store._manifest import DirManifest
from headend.store._query import QueryMixin, _key_of
from headend.store._storelayout import with_layout
from headend.store.base import AppendResult, StoreStats
from headend.store.config import StoreConfig
from headend.store.dedup import IndexCache, PartitionIndex, ReadsDayIndex, SortedKeyIndex

__all__ = ["ParquetStore", "StoreStats"]

_KIND_BY_NAME = {k.name: k for k in KINDS}


def _ymd(day: int) -> tuple[int, str]:
    y, m, d = time.gmtime(day * 86_400)[:3]
    return y, f"{m:02d}{d:02d}"


class ParquetStore(QueryMixin):
    """Interval reads, registers and events in Parquet under ``root`` (a ``ReadStore``).

    Parameters
    ----------
    root : Path
        Data directory (created if missing).
    config : StoreConfig
        Layout, compaction and memory settings. The bucket bits and partitions are
        those recorded in ``<root>/layout.json`` (written when the store is created;
        :mod:`headend.store._storelayout`): ``config`` may leave them None, and a
        value that differs from the recorded one raises ConfigError.
    clock : callable, optional
        Returns Unix seconds; decides which months/years are closed for compaction.
    """

    def __init__(
        self, root: Path, *, config: StoreConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = with_layout(self.root, config or StoreConfig())
        self.clock = clock
        for k in KINDS:
            (self.root / k.name).mkdir(parents=True, exist_ok=True)
        (self.root / "locks").mkdir(exist_ok=True)
        self._locks: dict[tuple[str, int], _fs.FileLock] = {}
        #: the owner's manifest of each bucket-year directory it writes
        self._manifests: dict[Path, DirManifest] = {}
        self._index = IndexCache(self.config.index_cache_bytes)
        self._dirs = DirCache(owned=self._owned_view)
        self._metas = MetaCache()
        self._blocks = BlockCache()
        self._pool = ThreadPoolExecutor(max(1, self.config.writer_threads))
        self._readers = ThreadPoolExecutor(max(1, self.config.reader_threads))
        self._mutex = threading.RLock()
        self._closed = False
        self._bg: threading.Thread | None = None
        self._bg_q: queue.Queue[tuple[str, Path, int, str] | None] = queue.Queue()
        self._bg_pending: set[tuple[str, Path, int, str]] = set()
        self._bg_busy = threading.Lock()
        #: errors of background compactions (the partition is retried later)
        self.background_errors: list[str] = []

    # ------------------------------------------------------------------ ownership

    def bucket_of(self, meter_idx: npt.NDArray[np.int32] | int) -> npt.NDArray[np.int32] | int:
        """Bucket of each meter (route a meter's rows to the process owning its bucket)."""
        return self.config.bucket_of(meter_idx)

    def _own(self, kind: Kind, bucket: int, *, timeout_s: float | None = None) -> None:
        """Take the bucket's lock (once) and clean what a crashed writer left there."""
        if (kind.name, bucket) in self._locks:
            return
        if self._closed:
            raise StorageError("store is closed")
        lock = _fs.FileLock(
            self.root / "locks" / f"{kind.name}-{bucket}.lock",
            timeout_s=self.config.lock_timeout_s if timeout_s is None else timeout_s,
            what=f"{kind.name} bucket {bucket} of {self.root}",
        )
        self._locks[(kind.name, bucket)] = lock
        bdir = self._bucket_dir(kind, bucket)
        if bdir.is_dir():
            for ydir in bdir.iterdir():
                if ydir.is_dir() and ydir.name.startswith("y="):
                    self._clean_dir(ydir, int(ydir.name[2:]))

    def _clean_dir(self, ydir: Path, year: int) -> None:
        n = _fs.remove_temp_files(ydir, only_dead=False)
        self._relist(ydir, year)
        n += _rollup.remove_orphans(ydir)
        if n:
            _fs.fsync_dir(ydir)

    def _relist(self, d: Path, year: int) -> None:
        """List an owned directory (when the bucket is taken, after a compaction):
        delete the files the live-file rule made obsolete, (re)build the manifest."""
        entries = list_dir(d, year)
        live, dead = split_live(entries)
        for f in dead:
            _rollup.unlink_data(f.path)
        if dead:
            _fs.fsync_dir(d)
        self._dirs.invalidate(d)
        keep = live + [f for f in entries if f.is_copy]
        m = self._manifests.get(d)
        if m is None:
            self._manifests[d] = DirManifest(d, year, keep)
        else:
            m.reload(keep)

    def _manifest(self, d: Path, year: int) -> DirManifest:
        """The manifest of an owned bucket-year directory (listed on first use)."""
        m = self._manifests.get(d)
        if m is None:
            m = self._manifests[d] = DirManifest(d, year)
        return m

    def _owned_view(self, d: Path) -> tuple[list[FileEntry], dict[str, FileEntry]] | None:
        m = self._manifests.get(d)
        return None if m is None else m.view()

    def _ensure_dir(self, d: Path) -> None:
        if d.is_dir():
            return
        missing = []
        p = d
        while not p.exists():
            missing.append(p)
            p = p.parent
        d.mkdir(parents=True, exist_ok=True)
        for m in reversed(missing):
            _fs.fsync_dir(m.parent)

    def _next_seq(self, d: Path, year: int) -> int:
        return self._manifest(d, year).next_seq()

    # ------------------------------------------------------------------ dedup index

    def _build_index(self, kind: Kind, bucket: int, day: int) -> PartitionIndex:
        year, mmdd = _ymd(day)
        d = self._dir(kind, bucket, year)
        t0, t1 = day * 86_400, (day + 1) * 86_400
        lo = bucket << self.config.bits
        hi = lo + self.config.bucket_size - 1
        cols = ["meter_idx", kind.time_col, kind.type_col or "event_code"]
        parts: list[Keys] = []
        for f in self._manifest(d, year).of_day(mmdd):
            t = read_meter_range(f, self._metas, lo, hi, cols)
            if t is None or len(t) == 0:
                continue
            t = t.cast(pa.schema([kind.schema.field(c) for c in cols]))
            if f.scope != mmdd:
                tt = kind.times(t)
                t = t.filter(pa.array((tt >= t0) & (tt < t1)))
            parts.append(_key_of(kind, t))
        keys = np.concatenate(parts) if parts else _empty_keys(kind)
        if kind is READS_KIND:
            return ReadsDayIndex(bucket, self.config.bits, day, keys)
        return SortedKeyIndex(keys)

    # ------------------------------------------------------------------ append

    def append_reads(self, reads: pa.Table) -> AppendResult:
        """Store new interval reads (``model.schema.READS``); see ``store.base``."""
        return self._append(READS_KIND, reads)

    def append_registers(self, registers: pa.Table) -> AppendResult:
        """Store new register reads (``model.schema.REGISTERS``)."""
        return self._append(REGISTERS_KIND, registers)

    def append_events(self, events: pa.Table) -> AppendResult:
        """Store new events (``model.schema.EVENTS``)."""
        return self._append(EVENTS_KIND, events)

    def _append(self, kind: Kind, table: pa.Table) -> AppendResult:
        table = kind.coerce(table)
        n = len(table)
        new_mask = np.zeros(n, np.bool_)
        if n == 0:
            return AppendResult(new_mask)
        kind.validate(table)
        with self._mutex:
            return self._append_locked(kind, table, new_mask)

    def _append_locked(self, kind: Kind, table: pa.Table, new_mask: npt.NDArray[np.bool_]
                       ) -> AppendResult:
        rows, ks = sort_unique_first(kind.keys(table))
        bucket = key_meter(ks) >> self.config.bits
        day = key_time(ks) // 86_400
        d0 = int(day.min())
        span = int(day.max()) - d0 + 1
        pid = bucket * span + (day - d0)
        if pid[0] == pid[-1] and (len(pid) < 3 or bool(np.all(pid == pid[0]))):
            groups = [(int(pid[0]), np.arange(len(pid)))]
        else:
            small = pid.astype(np.uint16) if int(pid.max()) < 65_536 else pid
            order = np.argsort(small, kind="stable")
            ps = pid[order]
            cuts = np.flatnonzero(ps[1:] != ps[:-1]) + 1
            groups = [(int(ps[a]), order[a:b])
                      for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(ps)], strict=True)]
        jobs: list[_Part] = []
        for p, sel in groups:
            b, dd = divmod(p, span)
            dayn = d0 + dd
            self._own(kind, b)
            ckey = (kind.name, b, dayn)
            idx = self._index.get(ckey, functools.partial(self._build_index, kind, b, dayn))
            stored, token = idx.check(ks[sel])
            fresh = ~stored
            if not fresh.any():
                continue
            year, mmdd = _ymd(dayn)
            jobs.append(_Part(self._dir(kind, b, year), year, dayn, mmdd, rows[sel][fresh],
                              fresh, idx, ckey, token))
        if not jobs:
            return AppendResult(new_mask)
        # one segment per run of consecutive days of a bucket-year (one record batch a
        # day): a bulk file of a year is one file per bucket, not one per day
        runs: list[list[_Part]] = []
        for j in jobs:
            if runs and runs[-1][-1].dir == j.dir and runs[-1][-1].day + 1 == j.day:
                runs[-1].append(j)
            else:
                runs.append([j])
        paths = []
        for run in runs:
            self._ensure_dir(run[0].dir)
            seq = self._next_seq(run[0].dir, run[0].year)
            paths.append((run[0].dir / file_name("seg", run[0].mmdd, seq, run[-1].mmdd), seq))
        try:
            futs = [self._pool.submit(_write_segment, path, table, [j.rows for j in run])
                    for (path, _), run in zip(paths, runs, strict=True)]
            written = [fu.result() for fu in futs]
            dirs = sorted({j.dir for j in jobs})
            for fu in [self._pool.submit(_fs.fsync_dir, d) for d in dirs]:
                fu.result()
        except (OSError, StorageError) as exc:
            for j in jobs:  # some segments may be durable: rebuild those indexes from disk
                self._index._d.pop(j.ckey, None)
            for d in {j.dir for j in jobs}:  # and list those directories again (in
                m = self._manifests.get(d)    # place: seqs never go down, a background
                if m is not None:             # merge in flight records into the same)
                    with contextlib.suppress(OSError):
                        m.reload()
            raise StorageError(f"append of {kind.name} failed: {exc}") from exc
        for (path, seq), run in zip(paths, runs, strict=True):
            st = os.stat(path)
            self._manifest(run[0].dir, run[0].year).add(segment_entries(
                path, run[0].year, run[0].mmdd, run[-1].mmdd, seq, st.st_size, st.st_mtime_ns))
        for j in jobs:
            j.idx.add(j.token, j.fresh)
            new_mask[j.rows] = True
        self._index.trim()
        if self.config.auto_compact_segments > 0:
            for j in jobs:
                if (self._manifest(j.dir, j.year).segments_of_day(j.mmdd)
                        < self.config.auto_compact_segments):
                    continue
                if self.config.background_compaction:
                    self._enqueue((kind.name, j.dir, j.year, j.mmdd))
                else:
                    self._compact_dir(kind, j.dir, j.year, days_only=True)
        # one partition: the segment's rows are the stored rows in key order already
        return AppendResult(new_mask, rows[new_mask[rows]],
                            written[0] if len(jobs) == 1 else None)

    # ------------------------------------------------------------------ background

    def _enqueue(self, task: tuple[str, Path, int, str]) -> None:
        if task in self._bg_pending:
            return
        if self._bg is None:
            self._bg = threading.Thread(target=self._bg_loop, name="headend-compact",
                                        daemon=True)
            self._bg.start()
        self._bg_pending.add(task)
        self._bg_q.put(task)

    def _bg_loop(self) -> None:
        while True:
            task = self._bg_q.get()
            if task is None:
                return
            with self._bg_busy:
                self._bg_pending.discard(task)
                try:
                    self._bg_compact_day(*task)
                except (StorageError, OSError, pa.ArrowException) as exc:
                    self.background_errors.append(f"{task}: {exc!r}")  # retried next time

    def _bg_compact_day(self, kind_name: str, d: Path, year: int, mmdd: str) -> None:
        """Merge a day's segments while appends go on (they get larger seqs)."""
        kind = _KIND_BY_NAME[kind_name]
        with self._mutex:  # no append in flight: every segment below seq is complete
            if self._closed:
                return
            m = self._manifest(d, year)
            inputs = [f for f in m.of_day(mmdd) if f.scope == mmdd]
            if sum(f.is_segment for f in inputs) < 2:
                return
            seq = m.next_seq()
            out = d / file_name("day", mmdd, seq)
        merge_files(kind, inputs, out, self.config, self._metas, delete_inputs=False)
        with self._mutex:
            st = os.stat(out)
            m.add([FileEntry(out, "day", mmdd, seq, year, st.st_size, st.st_mtime_ns)])
            m.discard(inputs)  # obsolete now (a multi-day segment: this day of it)
            for f in inputs:
                if not f.shared or not m.shared_left(f.path):
                    _rollup.unlink_data(f.path)
            _fs.fsync_dir(d)
            self._dirs.invalidate(d)

    def _drain_background(self) -> None:
        """Drop queued background tasks and wait for the running one."""
        try:
            while True:
                t = self._bg_q.get_nowait()
                if t is not None:
                    self._bg_pending.discard(t)
        except queue.Empty:
            pass

    # ------------------------------------------------------------------ compaction

    def compact(self, *, buckets: Iterable[int] | None = None) -> None:
        """Merge segments into day files and closed months/years into month/year files.

        ``buckets=None`` compacts every bucket this process owns, and every other bucket
        whose lock is free (buckets locked by other processes are skipped).
        """
        self._drain_background()
        with self._bg_busy, self._mutex:
            for kind in KINDS:
                wanted = self._buckets(kind, None, None) if buckets is None else list(buckets)
                for b in wanted:
                    if (kind.name, b) not in self._locks:
                        try:
                            self._own(kind, b, timeout_s=0.0)
                        except StorageError:
                            if buckets is None:
                                continue
                            raise
                    bdir = self._bucket_dir(kind, b)
                    if not bdir.is_dir():
                        continue
                    for yd in sorted(bdir.iterdir()):
                        if yd.name.startswith("y="):
                            self._compact_dir(kind, yd, int(yd.name[2:]), days_only=False)

    def _compact_dir(self, kind: Kind, d: Path, year: int, *, days_only: bool) -> None:
        compact_dir(
            kind, d, year, config=self.config, now=self.clock(), metas=self._metas,
            next_seq=lambda: self._next_seq(d, year), days_only=days_only,
        )
        self._relist(d, year)  # one listing per compaction (not per append); deletes
        # the multi-day segments whose days were all merged

    # ------------------------------------------------------------------ misc

    def stats(self) -> StoreStats:
        """Rows, bytes, partitions and files of the live data (reads the footers)."""
        rows: dict[str, int] = {}
        size: dict[str, int] = {}
        parts: dict[str, int] = {}
        segs: dict[str, int] = {}
        comp: dict[str, int] = {}
        for kind in KINDS:
            r = s = p = g = c = 0
            for b in self._buckets(kind, None, None):
                bdir = self._bucket_dir(kind, b)
                for yd in bdir.iterdir():
                    if not yd.name.startswith("y="):
                        continue
                    p += 1
                    entries = list_dir(yd, int(yd.name[2:]))
                    live, _ = split_live(entries)
                    live_ino = {f.path.stat().st_ino for f in live if not f.is_segment}
                    for cp in newest_copies(entries)[0].values():  # day copies count too,
                        if cp.path.stat().st_ino not in live_ino:  # once if hard-linked
                            s += cp.size
                    seen: set[Path] = set()
                    for f in live:
                        first = f.path not in seen  # a multi-day segment counts once
                        seen.add(f.path)
                        s += f.size if first else 0
                        for side in [] if f.is_segment else _rollup.sidecars_of(f.path):
                            if side.exists():  # daily rollups and block sums count too
                                s += side.stat().st_size
                        if f.is_segment:
                            g += first
                            r += read_segment(f).num_rows
                        else:
                            c += 1
                            r += self._metas.get(f).rows
            rows[kind.name], size[kind.name], parts[kind.name] = r, s, p
            segs[kind.name], comp[kind.name] = g, c
        return StoreStats(rows, size, parts, segs, comp)

    def close(self) -> None:
        """Release the bucket locks and writer threads (idempotent)."""
        if self._bg is not None:
            self._drain_background()
            self._bg_q.put(None)
            self._bg.join()
            self._bg = None
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._pool.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            for lock in self._locks.values():
                lock.release()
            self._locks.clear()
            self._manifests.clear()
            self._index.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- helpers


class _Part(NamedTuple):
    """The fresh rows of one (bucket, day) partition of an append."""

    dir: Path
    year: int
    day: int  # days since 1970-01-01
    mmdd: str
    rows: npt.NDArray[np.int64]  # rows of the appended table, in key order
    fresh: npt.NDArray[np.bool_]
    idx: PartitionIndex
    ckey: tuple[str, int, int]
    token: object


def _write_segment(path: Path, table: pa.Table, days: list[npt.NDArray[np.int64]]) -> pa.Table:
    """Publish the rows ``days`` of ``table`` as a segment (no directory fsync): one
    record batch per day when there are several days. Returns the rows written."""
    t = table.take(np.concatenate(days) if len(days) > 1 else days[0])

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            if len(days) == 1:
                w.write_table(t)
                return
            tc = t.combine_chunks()
            off = 0
            for r in days:
                w.write_batch(tc.slice(off, len(r)).to_batches()[0])
                off += len(r)

    _fs.publish_path(path, write, sync_dir=False)
    return t


def _empty_keys(kind: Kind) -> Keys:
    return kind.keys(kind.schema.empty_table())


def open_kind(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (reads, registers or events)."""
    return _KIND_BY_NAME[name]

