"""Run VEE: pure core (:func:`vee_tables`) and its driver over a data directory.

:func:`vee_tables` takes reads and register reads (Arrow) and returns the value and
quality every expected interval should have, with the method that produced it. The
driver :func:`run_vee` scans the store, calls the core per chunk of meters, and
appends a version only for keys whose current value or quality differs; keys whose
current version is a manual edit are left alone. Running it twice changes nothing
the second time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model.schema import READS, read_key
from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.estimate import EST_INTERP, EST_LIKE, EST_PRORATE, estimate
from headend.vee.grid import build_grids, local_calendar
from headend.vee.validate import register_spans, validate
from headend.vee.versions import VersionStore

__all__ = ["METHODS", "VeeListener", "VeeSummary", "run_vee", "vee_tables"]

#: method names as stored in the version store
METHODS = ("validate", "interpolation", "like_day", "prorated", "edit")
#: meters per VEE chunk (bounds memory of the dense matrices)
CHUNK_METERS = 5_000
#: merge the version store's part files once a run leaves more than this many
COMPACT_FILES = 32


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
    summary = VeeSummary(reads=reads.num_rows)
    tables: list[pa.Table] = []
    methods: list[npt.NDArray[np.int8]] = []
    for grid in build_grids(reads, intervals):
        cal = local_calendar(grid.t0, grid.value.shape[1], grid.interval_s, config.tz)
        spans = register_spans(grid, registers)
        val = validate(grid, cal, config, spans=spans, now=now)
        est = estimate(grid, cal, config, suspect=val.suspect, spans=spans)
        present = grid.present
        value = np.where(present, grid.value, est.value)
        quality = np.where(present, grid.quality | val.flags, est.quality).astype(np.uint32)
        keep = present | est.mask
        tables.append(_grid_rows(grid, value, quality, keep))
        q = quality[keep]
        code = np.zeros(len(q), np.int8)  # index into METHODS
        code[q == EST_INTERP] = 1
        code[q == EST_LIKE] = 2
        code[q == EST_PRORATE] = 3
        methods.append(code)
        summary.expected += int(grid.expected.sum())
        summary.suspect += int(val.suspect.sum())
        summary.validated += int((present & ~val.suspect).sum())
        summary.estimated += int(est.mask.sum())
        summary.rules.update({k: v for k, v in val.counts.items() if v})
        summary.methods.update({k: v for k, v in est.counts.items() if v})
    if not tables:
        return READS.empty_table(), pa.array([], pa.string()), summary
    table = pa.concat_tables(tables)
    method = pa.DictionaryArray.from_arrays(pa.array(np.concatenate(methods)),
                                            pa.array(METHODS, pa.string()))
    if len(tables) == 1:  # one grid: already in key order (meter, then time)
        return table, method, summary
    order = np.argsort(read_key(table.column("meter_idx").to_numpy(),
                                table.column("reading_type").to_numpy(),
                                table.column("interval_end").cast(pa.int64()).to_numpy()),
                       kind="stable")
    idx = pa.array(order)
    return table.take(idx), method.take(idx), summary


def _grid_rows(grid: Any, value: Any, quality: Any, keep: Any) -> pa.Table:
    from headend.vee.grid import grid_to_table

    return grid_to_table(grid, np.where(keep, value, 0.0), quality, keep)


def changed_rows(vs: VersionStore, desired: pa.Table, method: pa.Array,
                 raw: pa.Table) -> tuple[pa.Table, pa.Array]:
    """Rows of ``desired`` whose value or quality differ from the current version (or
    from ``raw`` when the key has none); keys currently edited by hand are skipped."""
    if desired.num_rows == 0:
        return desired, method
    dk = read_key(desired.column("meter_idx").to_numpy(), desired.column("reading_type").to_numpy(),
                  desired.column("interval_end").cast(pa.int64()).to_numpy())
    t = desired.column("interval_end").cast(pa.int64()).to_numpy()
    cur_v = np.full(len(dk), np.iinfo(np.int64).min)
    cur_q = np.zeros(len(dk), np.int64)
    edited = np.zeros(len(dk), bool)
    for src, is_version in ((raw, False), (vs.latest(
            meters=np.unique(desired.column("meter_idx").to_numpy()),
            start=int(t.min()), end=int(t.max()) + 1), True)):
        if src.num_rows == 0:
            continue
        sk = read_key(src.column("meter_idx").to_numpy(), src.column("reading_type").to_numpy(),
                      src.column("interval_end").cast(pa.int64()).to_numpy())
        o = np.argsort(sk)
        sk = sk[o]
        pos = np.clip(np.searchsorted(sk, dk), 0, len(sk) - 1)
        hit = sk[pos] == dk
        cur_v[hit] = src.column("value").to_numpy()[o][pos[hit]]
        cur_q[hit] = src.column("quality").to_numpy()[o][pos[hit]]
        if is_version:
            edited[hit] = (np.asarray(src.column("method").to_numpy(zero_copy_only=False),
                                      dtype=object)[o][pos[hit]] == "edit")
    diff = ((desired.column("value").to_numpy() != cur_v)
            | (desired.column("quality").to_numpy() != cur_q)) & ~edited
    mask = pa.array(diff)
    return desired.filter(mask), method.filter(mask)


def run_vee(root: Path | str, *, start: int | None = None, end: int | None = None,
            meters: npt.NDArray[np.int32] | None = None, config: VeeConfig = DEFAULT_CONFIG,
            now: int | None = None, author: str = "vee") -> VeeSummary:
    """Run VEE over the data directory ``root`` and record the changed versions.

    Parameters
    ----------
    root : Path
        The data directory.
    start, end : int, optional
        Only intervals ending in ``[start, end)`` [Unix s] get versions; reads up to
        ``like_day_lookback_days`` around the window are used as history.
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
    margin = config.like_day_lookback_days * 86_400 + 86_400
    lo = None if start is None else start - margin
    hi = None if end is None else end + margin
    with DataDir.open(Path(root)) as dd:
        reg = dd.registry.table()
        idx = reg.column("meter_idx").to_numpy()
        intervals = dd.registry.intervals()
        todo = np.sort(idx if meters is None else np.asarray(meters, np.int32))
        for i in range(0, len(todo), CHUNK_METERS):
            chunk = todo[i:i + CHUNK_METERS].astype(np.int32)
            raw = dd.store.scan_reads(meters=chunk, start=lo, end=hi)
            if raw.num_rows == 0:
                continue
            regs = dd.store.scan_registers(meters=chunk, start=lo, end=hi)
            desired, method, summary = vee_tables(raw, intervals, registers=regs,
                                                  config=config, now=now)
            if start is not None or end is not None:
                t = desired.column("interval_end").cast(pa.int64()).to_numpy()
                win = np.ones(len(t), bool)
                if start is not None:
                    win &= t >= start
                if end is not None:
                    win &= t < end
                desired, method = desired.filter(pa.array(win)), method.filter(pa.array(win))
            rows, meth = changed_rows(vs, desired, method, raw)
            written = vs.append(rows, method=meth, author=author, reason="VEE run")
            summary.versions_written = written.num_rows
            total.add(summary)
    if len(vs._files()) > COMPACT_FILES:
        vs.compact()
    return total


class VeeListener:
    """Ingest listener: runs VEE on the meters and time span of newly stored reads
    when an ingest call ends (``on_watermark``)."""

    def __init__(self, root: Path | str, config: VeeConfig = DEFAULT_CONFIG) -> None:
        self.root = Path(root)
        self.config = config
        self._meters: list[npt.NDArray[np.int32]] = []
        self._lo: int | None = None
        self._hi: int | None = None
        self.last: VeeSummary | None = None

    def on_stored(self, batch: Any) -> None:
        reads: pa.Table = batch.reads
        if reads.num_rows == 0:
            return
        self._meters.append(np.unique(reads.column("meter_idx").to_numpy()))
        t = reads.column("interval_end").cast(pa.int64()).to_numpy()
        self._lo = int(t.min()) if self._lo is None else min(self._lo, int(t.min()))
        self._hi = int(t.max()) if self._hi is None else max(self._hi, int(t.max()))

    def on_watermark(self, event_time_s: int) -> None:
        if not self._meters or self._lo is None or self._hi is None:
            return
        meters = np.unique(np.concatenate(self._meters)).astype(np.int32)
        # gaps next to new reads may have closed: re-run a day either side
        lo, hi = self._lo - 86_400, self._hi + 86_400 + 1
        self._meters, self._lo, self._hi = [], None, None
        self.last = run_vee(self.root, start=lo, end=hi, meters=meters, config=self.config)
