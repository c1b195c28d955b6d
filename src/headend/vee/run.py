"""Run VEE: pure core (:func:`vee_tables`) and its driver over a data directory.

:func:`vee_tables` takes reads and register reads (Arrow) and returns the value and
quality every expected interval should have, with the method that produced it. The
driver :func:`run_vee` scans the store, calls the core per chunk of meters, and
appends a version only for keys whose current value or quality differs; keys whose
current version is a manual edit are left alone. Running it twice changes nothing
the second time.

What a window sees
------------------
VEE over the window ``[start, end)`` works on the reads and register reads within
:data:`CONTEXT_S` either side of it (neighbours, runs, a meter's own history for the
high/low checks); only keys inside the window get versions. Meters with a gap longer
than ``max_interpolation_s`` in it are run again over ``like_day_lookback_days``
either side (like days, register prorating). The ingest listener
(:class:`~headend.vee.listener.VeeListener`) reads the same input back from the store
for the keys of the batches waiting, chunk by chunk, so that it computes what
:func:`run_vee` computes for its window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model.schema import READS, TS, VEE_VERSIONS, read_key
from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.estimate import EST_INTERP, EST_LIKE, EST_PRORATE, estimate
from headend.vee.grid import Grid, build_grids, grid_to_table, local_calendar
from headend.vee.validate import FAILED, register_spans, validate
from headend.vee.versions import COVERAGE, Coverage, VersionStore

__all__ = ["CHUNK_METERS", "CONTEXT_S", "METHODS", "RunSink", "VeeSummary", "record",
           "run_vee", "vee_tables", "vee_window", "window_versions"]

#: method names as stored in the version store
METHODS = ("validate", "interpolation", "like_day", "prorated", "edit")
#: meters per VEE chunk (bounds memory of the dense matrices)
CHUNK_METERS = 5_000
#: merge the version store's part files once a run leaves more than this many
COMPACT_FILES = 32
#: reads this far either side of a VEE window are its context [s]
CONTEXT_S = 86_400
#: versions and coverage spans a run buffers before it writes them (:class:`RunSink`)
SINK_ROWS = 1_000_000

#: history loader: meters -> (reads, register reads) over the like-day lookback
History = Callable[[npt.NDArray[np.int32]], tuple[pa.Table, pa.Table]]


@dataclass(slots=True)
class VeeSummary:
    """Counts of one VEE run (cells, not meters)."""

    reads: int = 0
    expected: int = 0
    validated: int = 0
    suspect: int = 0
    estimated: int = 0
    versions_written: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)

    def add(self, other: VeeSummary) -> None:
        for name in ("reads", "expected", "validated", "suspect", "estimated",
                     "versions_written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rules.update(other.rules)
        self.methods.update(other.methods)

    def as_dict(self) -> dict[str, Any]:
        return {"reads": self.reads, "expected": self.expected, "validated": self.validated,
                "suspect": self.suspect, "estimated": self.estimated,
                "versions_written": self.versions_written, "rules": dict(self.rules),
                "methods": dict(self.methods)}




@dataclass(slots=True)
class _Out:
    """Rows of a VEE pass: a table per grid, the method code of each row, coverage."""

    tables: list[pa.Table] = field(default_factory=list)
    methods: list[npt.NDArray[np.int8]] = field(default_factory=list)
    cover: list[pa.Table] = field(default_factory=list)
    long_meters: list[npt.NDArray[np.int32]] = field(default_factory=list)

    def drop_meters(self, meters: npt.NDArray[np.int32]) -> None:
        for i, t in enumerate(self.tables):
            keep = ~np.isin(t.column("meter_idx").to_numpy(), meters)
            if not keep.all():
                self.tables[i], self.methods[i] = t.filter(pa.array(keep)), self.methods[i][keep]
        self.cover = [c.filter(pa.array(~np.isin(c.column("meter_idx").to_numpy(), meters)))
                      for c in self.cover]

    def extend(self, other: _Out) -> None:
        self.tables += other.tables
        self.methods += other.methods
        self.cover += other.cover


def _version_cells(grid: Grid, versions: pa.Table | None) -> npt.NDArray[np.bool_] | None:
    """Cells of ``grid`` whose key has a version."""
    if versions is None or versions.num_rows == 0:
        return None
    sel = versions.column("reading_type").to_numpy() == grid.reading_type
    m = versions.column("meter_idx").to_numpy()[sel]
    t = versions.column("interval_end").cast(pa.int64()).to_numpy()[sel]
    row = np.searchsorted(grid.meter_idx, m)
    ncol = grid.value.shape[1]
    ok = row < len(grid.meter_idx)
    ok[ok] = grid.meter_idx[row[ok]] == m[ok]
    col = (t - grid.t0) // grid.interval_s
    ok &= (col >= 0) & (col < ncol) & ((t - grid.t0) % grid.interval_s == 0)
    out = np.zeros(grid.value.shape, bool)
    out[row[ok], col[ok]] = True
    # a meter with several rows in the grid (its interval changed): mark them all
    return out


def _pass(reads: pa.Table, intervals: Any, registers: pa.Table | None, config: VeeConfig,
          now: int | None, start: int | None, end: int | None, versions: pa.Table | None,
          full: bool, summary: VeeSummary) -> _Out:
    """One VEE pass over ``reads``: rows in ``[start, end)``; all of them when ``full``,
    else only those that may need a version (estimates, suspects, keys with versions)."""
    out = _Out()
    for grid in build_grids(reads, intervals):
        cal = local_calendar(grid.t0, grid.value.shape[1], grid.interval_s, config.tz)
        spans = register_spans(grid, registers)
        val = validate(grid, cal, config, spans=spans, now=now)
        est = estimate(grid, cal, config, suspect=val.suspect, spans=spans)
        present = grid.present
        ends = grid.interval_end
        inwin = np.ones(len(ends), bool)
        if start is not None:
            inwin &= ends >= start
        if end is not None:
            inwin &= ends < end
        span = (present | est.mask) & inwin[None, :]
        keep = span
        if not full:
            cand = est.mask | val.suspect
            vcell = _version_cells(grid, versions)
            if vcell is not None:
                cand |= vcell
            keep = span & cand
        value = np.where(present, grid.value, est.value)
        quality = np.where(present, grid.quality | val.flags, est.quality).astype(np.uint32)
        t = grid_to_table(grid, np.where(keep, value, 0.0), quality, keep)
        q = t.column("quality").to_numpy()
        code = np.zeros(len(q), np.int8)  # index into METHODS
        code[q == EST_INTERP] = 1
        code[q == EST_LIKE] = 2
        code[q == EST_PRORATE] = 3
        out.tables.append(t)
        out.methods.append(code)
        # coverage: the window (or each row's own span) for every row with a cell in it
        r = np.flatnonzero(span.any(axis=1))
        if len(r):
            if start is not None and end is not None:
                lo, hi = np.full(len(r), start, np.int64), np.full(len(r), end, np.int64)
            else:
                lo = ends[span[r].argmax(axis=1)] if start is None else np.full(len(r), start)
                hi = (ends[span.shape[1] - 1 - span[r, ::-1].argmax(axis=1)] + 1
                      if end is None else np.full(len(r), end))
            out.cover.append(pa.table({
                "meter_idx": pa.array(grid.meter_idx[r], pa.int32()),
                "reading_type": pa.array(np.full(len(r), grid.reading_type, np.uint8)),
                "start": pa.array(lo, pa.int64()).cast(TS),
                "end": pa.array(hi, pa.int64()).cast(TS)}, schema=COVERAGE))
        if len(est.long_rows):
            out.long_meters.append(grid.meter_idx[est.long_rows])
        summary.expected += int(grid.expected.sum())
        summary.suspect += int(val.suspect.sum())
        summary.validated += int((present & ~val.suspect).sum())
        summary.rules.update({k: v for k, v in val.counts.items() if v})
    return out


def vee_window(reads: pa.Table, intervals: Any, *, registers: pa.Table | None = None,
               start: int | None = None, end: int | None = None,
               config: VeeConfig = DEFAULT_CONFIG, now: int | None = None,
               versions: pa.Table | None = None, history: History | None = None,
               full: bool = False) -> tuple[pa.Table, pa.Array, pa.Table, VeeSummary]:
    """VEE over the window ``[start, end)`` of ``reads`` (the window and its context).

    Parameters
    ----------
    reads, registers : pyarrow.Table
        Reads and register reads of the window and :data:`CONTEXT_S` either side.
    intervals
        As for :func:`vee_tables`.
    versions : pyarrow.Table, optional
        Current versions of the window's keys (:meth:`VersionStore.latest`); their keys
        are compared even where VEE finds nothing to say.
    history : callable, optional
        ``history(meters)`` -> (reads, registers) over the like-day lookback, for the
        meters with a long gap (run again over it).
    full : bool
        Every row of the window (as :func:`vee_tables`), not only the candidates.

    Returns
    -------
    rows : pyarrow.Table
        :data:`READS` rows (not sorted): every expected key of the window when ``full``,
        else estimates, suspect reads and keys with a version.
    method : pyarrow.DictionaryArray
        Method of each row (:data:`METHODS`).
    coverage : pyarrow.Table
        :data:`~headend.vee.versions.COVERAGE` spans the pass validated.
    summary : VeeSummary
    """
    summary = VeeSummary(reads=reads.num_rows)
    out = _pass(reads, intervals, registers, config, now, start, end, versions, full, summary)
    if history is not None and out.long_meters:
        long_m = np.unique(np.concatenate(out.long_meters)).astype(np.int32)
        h_reads, h_regs = history(long_m)
        out.drop_meters(long_m)
        scratch = VeeSummary()
        out.extend(_pass(h_reads, intervals, h_regs, config, now, start, end, versions, full,
                         scratch))
    if not out.tables:
        return (READS.empty_table(), pa.array([], pa.string()), COVERAGE.empty_table(),
                summary)
    rows = pa.concat_tables(out.tables)
    codes_ = np.concatenate(out.methods)
    summary.estimated = int((codes_ != 0).sum())
    for i, name in ((1, "interpolation"), (2, "like_day"), (3, "prorated")):
        n = int((codes_ == i).sum())
        if n:
            summary.methods[name] = n
    method = pa.DictionaryArray.from_arrays(pa.array(codes_), pa.array(METHODS, pa.string()))
    cover = pa.concat_tables(out.cover) if out.cover else COVERAGE.empty_table()
    return rows, method, cover, summary


def vee_tables(reads: pa.Table, intervals: Any, *,
               registers: pa.Table | None = None, config: VeeConfig = DEFAULT_CONFIG,
               now: int | None = None) -> tuple[pa.Table, pa.Array, VeeSummary]:
    """Validate and estimate ``reads`` (pure; no I/O).

    Parameters
    ----------
    reads : pyarrow.Table
        Interval reads (:data:`READS`), one row per key.
    intervals : IntervalHistory or ndarray of int32
        The registry's intervals (:meth:`~headend.store.MeterRegistry.intervals`), or
        the interval of each meter [s] indexed by ``meter_idx``. Reads whose interval
        is unknown are validated, never estimated around.
    registers : pyarrow.Table, optional
        Register reads (:data:`~headend.model.schema.REGISTERS`) of the same meters.
    config : VeeConfig
        Parameters.
    now : int, optional
        Current time [Unix s] for the clock-skew check.

    Returns
    -------
    table : pyarrow.Table
        :data:`READS` for every expected interval, sorted by key: stored reads with
        their quality ORed with the validation codes, and estimated rows.
    method : pyarrow.DictionaryArray
        Method of each row (:data:`METHODS`; ``validate`` for stored reads).
    summary : VeeSummary
    """
    table, method, _cover, summary = vee_window(reads, intervals, registers=registers,
                                                config=config, now=now, full=True)
    if table.num_rows < 2:
        return table, method, summary
    k = read_key(table.column("meter_idx").to_numpy(), table.column("reading_type").to_numpy(),
                 table.column("interval_end").cast(pa.int64()).to_numpy())
    if (np.diff(k.astype(np.int64)) > 0).all():  # one grid: already in key order
        return table, method, summary
    idx = pa.array(np.argsort(k, kind="stable"))
    return table.take(idx), method.take(idx), summary


def record(root: Path | str, rows: pa.Table, method: pa.Array, cover: pa.Table,
           versions: pa.Table, *, author: str = "vee", sink: RunSink | None = None) -> int:
    """Append the versions ``rows`` call for and the coverage; returns versions written.

    A row is written when its key's current version differs in value or quality (and
    is not a manual edit), or, for a key without a version, unless it is a read that
    merely passed validation (the coverage says so). With ``sink`` both go there
    instead, to be written once for many chunks of meters (:class:`RunSink`).
    """
    write = np.ones(rows.num_rows, bool)
    q = rows.column("quality").to_numpy()
    meth = np.asarray(method.indices) if isinstance(method, pa.DictionaryArray) else None
    plain = (q & FAILED) == 0
    if meth is not None:
        plain &= meth == 0
    write &= ~plain  # default for keys without a version
    if versions.num_rows and rows.num_rows:
        vk = read_key(versions.column("meter_idx").to_numpy(),
                      versions.column("reading_type").to_numpy(),
                      versions.column("interval_end").cast(pa.int64()).to_numpy())
        o = np.argsort(vk)
        vk = vk[o]
        rk = read_key(rows.column("meter_idx").to_numpy(), rows.column("reading_type").to_numpy(),
                      rows.column("interval_end").cast(pa.int64()).to_numpy())
        pos = np.clip(np.searchsorted(vk, rk), 0, len(vk) - 1)
        hit = vk[pos] == rk
        p = o[pos[hit]]
        edited = np.asarray(versions.column("method").to_numpy(zero_copy_only=False),
                            dtype=object)[p] == "edit"
        same = ((versions.column("value").to_numpy()[p] == rows.column("value").to_numpy()[hit])
                & (versions.column("quality").to_numpy()[p] == q[hit]))
        write[hit] = ~edited & ~same
    own = sink is None
    sink = sink or RunSink(root, author=author)
    written = int(write.sum())
    if written:
        mask = pa.array(write)
        sink.add_versions(rows.filter(mask), method.filter(mask))
    sink.add_cover(cover)
    if own:
        sink.flush()
    return written


class RunSink:
    """Versions and coverage of many VEE chunks, written together.

    Each append to the version store reads the current versions of its keys from every
    part file, and each coverage merge rewrites the coverage of the whole fleet: per
    chunk of a run over millions of meters, both would grow with the number of chunks.
    Rows wait here until :data:`SINK_ROWS` versions or spans wait, or :meth:`flush`;
    versions are written before the coverage that says their keys were run over. The
    chunks of one run have distinct keys (their meters differ).
    """

    def __init__(self, root: Path | str, *, author: str = "vee") -> None:
        self._vs = VersionStore(root)
        self._cov = Coverage(root)
        self.author = author
        self._rows: list[pa.Table] = []
        self._methods: list[pa.Array] = []
        self._cover: list[pa.Table] = []
        self._n = 0

    def add_versions(self, rows: pa.Table, method: pa.Array) -> None:
        self._rows.append(rows)
        self._methods.append(method.cast(pa.string()))
        self._n += rows.num_rows
        self._maybe_flush()

    def add_cover(self, cover: pa.Table) -> None:
        if cover.num_rows:
            self._cover.append(cover)
            self._n += cover.num_rows
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._n >= SINK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write what waits: versions first, then the coverage."""
        if self._rows:
            self._vs.append(pa.concat_tables(self._rows),
                            method=pa.concat_arrays(self._methods), author=self.author,
                            reason="VEE run")
        if self._cover:
            self._cov.add(pa.concat_tables(self._cover))
        self._rows, self._methods, self._cover, self._n = [], [], [], 0


def run_vee(root: Path | str, *, start: int | None = None, end: int | None = None,
            meters: npt.NDArray[np.int32] | None = None, config: VeeConfig = DEFAULT_CONFIG,
            now: int | None = None, author: str = "vee") -> VeeSummary:
    """Run VEE over the data directory ``root`` and record the changed versions.

    Parameters
    ----------
    root : Path
        The data directory.
    start, end : int, optional
        Only intervals ending in ``[start, end)`` [Unix s] get versions; reads
        :data:`CONTEXT_S` either side are their context, and meters with a long gap are
        run again over ``like_day_lookback_days`` either side.
    meters : ndarray of int32, optional
        Only these meters (default: every meter of the registry).
    config : VeeConfig
    now : int, optional
        Current time for the clock-skew check [Unix s].
    author : str
        Author recorded on the versions.
    """
    from headend.store import DataDir

    vs = VersionStore(root)
    total = VeeSummary()
    windowed = start is not None or end is not None
    lo = None if start is None else start - CONTEXT_S
    hi = None if end is None else end + CONTEXT_S
    margin = config.like_day_lookback_days * 86_400
    with DataDir.open(Path(root)) as dd:
        idx = dd.registry.table().column("meter_idx").to_numpy()
        intervals = dd.registry.intervals()
        todo = np.sort(idx if meters is None else np.asarray(meters, np.int32))

        def history(ms: npt.NDArray[np.int32]) -> tuple[pa.Table, pa.Table]:
            h_lo = None if lo is None else lo - margin
            h_hi = None if hi is None else hi + margin
            return (dd.store.scan_reads(meters=ms, start=h_lo, end=h_hi),
                    dd.store.scan_registers(meters=ms, start=h_lo, end=h_hi))

        sink = RunSink(root, author=author)
        for i in range(0, len(todo), CHUNK_METERS):
            chunk = todo[i:i + CHUNK_METERS].astype(np.int32)
            raw = dd.store.scan_reads(meters=chunk, start=lo, end=hi)
            if raw.num_rows == 0:
                continue
            regs = dd.store.scan_registers(meters=chunk, start=lo, end=hi)
            summary = window_versions(root, raw, regs, intervals, start=start, end=end,
                                      config=config, now=now, author=author,
                                      history=history if windowed else None, vs=vs,
                                      sink=sink)
            total.add(summary)
        sink.flush()
    if len(vs._files()) > COMPACT_FILES:
        vs.compact()
    return total


def _distinct(m: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """``np.unique(m)``, without its sort when ``m`` is sorted already (a store scan)."""
    if len(m) > 1 and bool((m[1:] >= m[:-1]).all()):
        out: npt.NDArray[np.int32] = m[np.r_[True, m[1:] != m[:-1]]]
        return out
    return np.unique(m)


def window_versions(root: Path | str, reads: pa.Table, registers: pa.Table | None,
                    intervals: Any, *, start: int | None, end: int | None,
                    config: VeeConfig, now: int | None, author: str,
                    history: History | None, vs: VersionStore | None = None,
                    sink: RunSink | None = None) -> VeeSummary:
    """:func:`vee_window` then :func:`record`: the versions of one window."""
    vs = vs or VersionStore(root)
    versions = None
    if vs._files():
        m = _distinct(reads.column("meter_idx").to_numpy())
        t = reads.column("interval_end").cast(pa.int64()).to_numpy()
        versions = vs.latest(meters=m, start=start if start is not None else int(t.min()),
                             end=end if end is not None else int(t.max()) + 1)
    rows, method, cover, summary = vee_window(reads, intervals, registers=registers,
                                              start=start, end=end, config=config, now=now,
                                              versions=versions, history=history)
    summary.versions_written = record(
        root, rows, method, cover,
        versions if versions is not None else VEE_VERSIONS.empty_table(), author=author,
        sink=sink)
    return summary
