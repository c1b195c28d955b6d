"""VEE as an ingest listener: validate and estimate the batches already in memory.

:class:`VeeListener` keeps the reads of every stored batch (``on_stored``) and runs VEE
on them when the ingest call ends (``on_watermark``, or earlier once
:data:`FLUSH_ROWS` reads wait). It computes exactly what
:func:`~headend.vee.run.run_vee` computes for the window ``[lo - CONTEXT_S, hi +
CONTEXT_S]`` around the new reads (``lo``, ``hi``: their first and last interval end)
for the keys of the new reads, but reads from the store only

* the stored reads at the edges: ``CONTEXT_S`` to ``2 x CONTEXT_S`` before and after
  the new span, of the (meter, reading type) keys of the batch;
* inside the new span, the stored reads of the few (meter, reading type) keys whose
  new reads do not fill their grid over it (holes, or a key that starts or stops
  inside it): their holes may hold reads stored earlier;
* the like-day lookback of the meters with a gap longer than ``max_interpolation_s``;
* register reads (one a day) of the batch's meters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model.schema import READS, REGISTERS
from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.run import COMPACT_FILES, CONTEXT_S, VeeSummary, window_versions
from headend.vee.versions import VersionStore

__all__ = ["FLUSH_ROWS", "VeeListener"]

#: run VEE before the ingest call ends once this many new reads wait (bounds memory)
FLUSH_ROWS: Final = 8_000_000


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
    """Rows of ``part`` whose (meter, reading type) is one of ``keys``."""
    part = part.select(READS.names).cast(READS)
    if part.num_rows == 0:
        return part
    m0, has = keys
    g = (part.column("meter_idx").to_numpy().astype(np.int64) - m0) * 32 + part.column(
        "reading_type").to_numpy()
    ok = (g >= 0) & (g < len(has))
    ok[ok] = has[g[ok]]
    return part if ok.all() else part.filter(pa.array(ok))


class VeeListener:
    """Ingest listener: VEE on the newly stored reads, from memory (see the module)."""

    def __init__(self, root: Path | str, config: VeeConfig = DEFAULT_CONFIG) -> None:
        self.root = Path(root)
        self.config = config
        self._reads: list[pa.Table] = []
        self._regs: list[pa.Table] = []
        self._rows = 0
        self.last: VeeSummary | None = None

    def on_stored(self, batch: Any) -> None:
        reads: pa.Table = batch.reads
        if reads.num_rows:
            self._reads.append(reads.select(READS.names))
            self._rows += reads.num_rows
        regs = getattr(batch, "registers", None)
        if regs is not None and regs.num_rows:
            self._regs.append(regs)
        if self._rows >= FLUSH_ROWS:
            self._flush()

    def on_watermark(self, event_time_s: int) -> None:
        del event_time_s
        self._flush()

    def _flush(self) -> None:
        from headend.store import DataDir

        if not self._reads:
            self._regs = []
            return
        new = pa.concat_tables(self._reads).cast(READS)
        self._reads, self._regs, self._rows = [], [], 0
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
            self.last = window_versions(self.root, reads, regs.cast(REGISTERS), intervals,
                                        start=start, end=end, config=self.config, now=None,
                                        author="vee", history=history, vs=vs)
        if len(vs._files()) > COMPACT_FILES:
            vs.compact()
