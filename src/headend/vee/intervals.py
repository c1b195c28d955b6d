"""Learn each meter's interval from its reads: the grid its interval ends fall on.

Utilities' meter exports rarely say how often a meter reads. When the registry does
not declare it, the interval of each (meter, reading type) is learned from the reads
as they are stored, and kept in the registry
(:meth:`~headend.store.MeterRegistry.learn_intervals`) as a small history: an interval
holds from the time it was first seen on, so a meter reprogrammed from 15 to 5
minutes keeps its 15-minute past. A declared interval always wins.

Method (whole-array NumPy, no loop per meter)
---------------------------------------------
For the reads of one key, with ``t0`` the earliest interval end:

* the spacing ``d = gcd(t - t0)`` over the reads (duplicates add nothing, gaps only
  multiples of ``d``);
* ``d`` is accepted when it is a whole number of minutes dividing a day, the reads lie
  on the UTC-aligned grid of ``d`` (``t0 % d == 0``), there are at least
  :data:`MIN_READS` reads and they fill at least :data:`MIN_FILL` of the grid between
  the first and last one (so that the gcd is a true spacing, not a multiple of it);
* otherwise (a few off-grid rows make the gcd collapse) the longest candidate
  interval on whose grid at least :data:`MIN_ON_GRID` of the reads lie, with the same
  fill test over those reads.

Keys without enough evidence stay unknown (VEE then validates their reads but does not
estimate) and their reads are kept for the next batch. A key already learned is
checked on every batch: reads off its grid start a new interval from the first such
read on; reads on the grid but filling less than :data:`MIN_FILL` of it (a meter
reprogrammed to a longer interval) are learned again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model.schema import INTERVALS, READS, TS

__all__ = ["CANDIDATES_S", "IntervalLearner", "learn_intervals"]

#: intervals a meter may have [s]: whole minutes dividing a day, longest first
CANDIDATES_S: Final = np.array(sorted((m * 60 for m in range(1, 1441) if 1440 % m == 0),
                                      reverse=True), np.int64)
#: fewest reads of a key before its interval is declared learned
MIN_READS: Final = 4
#: smallest share of the grid between a key's first and last read its reads must fill
MIN_FILL: Final = 0.5
#: share of a key's reads that must lie on a candidate grid (robust path)
MIN_ON_GRID: Final = 0.9
#: most reads of undecided keys kept for the next batch: enough for the first
#: :data:`MIN_READS` uploads of a 4 M-meter, 2-channel fleet (one read per key per
#: upload, 8 M reads each), about 700 MB at the most while a new fleet is learned.
#: Fewer would drop most keys' reads at every upload and leave them unknown.
MAX_PENDING: Final = 32_000_000

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


def _per_group(g: I64, t: I64, n_groups: int) -> tuple[I64, I64, I64]:
    """Count, earliest and latest ``t`` of each group."""
    n = np.bincount(g, minlength=n_groups)
    lo = np.full(n_groups, np.iinfo(np.int64).max)
    hi = np.full(n_groups, np.iinfo(np.int64).min)
    np.minimum.at(lo, g, t)
    np.maximum.at(hi, g, t)
    return n, lo, hi


def _accept(d: I64, n: I64, lo: I64, hi: I64) -> B:
    """Evidence test of a spacing ``d`` per group (see the module docstring)."""
    ds = np.maximum(d, 1)
    slots = (hi - lo) // ds + 1
    ok: B = ((d >= 60) & (d % 60 == 0) & (86_400 % ds == 0) & (lo % ds == 0)
             & (n >= MIN_READS) & (n >= MIN_FILL * slots))
    return ok


def _spacing(g: I64, t: I64, n_groups: int) -> tuple[I64, B, I64]:
    """Learned spacing of each group (0: no evidence), whether it was decided, and
    each group's earliest read."""
    n, lo, hi = _per_group(g, t, n_groups)
    d = np.zeros(n_groups, np.int64)
    np.gcd.at(d, g, t - lo[g])
    ok = _accept(d, n, lo, hi)
    # robust path: groups with enough reads whose gcd collapsed (a few off-grid rows)
    retry = np.flatnonzero(~ok & (n >= MIN_READS))
    if len(retry):
        sel = np.isin(g, retry)
        gs, ts = g[sel], t[sel]
        for cand in CANDIDATES_S:  # a fixed list of 34 lengths, longest first
            on = (ts % cand) == 0
            n_on, lo_on, hi_on = _per_group(gs[on], ts[on], n_groups)
            good = (n_on[retry] >= MIN_ON_GRID * n[retry]) & _accept(
                np.full(len(retry), cand), n_on[retry], lo_on[retry], hi_on[retry])
            d[retry[good]] = cand
            ok[retry[good]] = True
            retry = retry[~good]
            if not len(retry):
                break
    d[~ok] = 0
    return d, ok, lo


def learn_intervals(reads: pa.Table, history: Any) -> tuple[pa.Table, pa.Table]:
    """New interval entries from ``reads`` and the reads still undecided.

    Parameters
    ----------
    reads : pyarrow.Table
        Interval reads (:data:`~headend.model.schema.READS`), any order.
    history : IntervalHistory
        Declared and learned intervals so far
        (:meth:`headend.store.MeterRegistry.intervals`).

    Returns
    -------
    entries : pyarrow.Table
        :data:`~headend.model.schema.INTERVALS` rows to record.
    pending : pyarrow.Table
        Reads of keys without enough evidence yet (feed them again with the next batch).
    """
    empty = INTERVALS.empty_table(), READS.empty_table()
    if reads.num_rows == 0:
        return empty
    m = reads.column("meter_idx").to_numpy()
    # a declared interval always wins: its reads teach nothing and are not kept
    dm = history.declared
    dec = np.zeros(len(m), bool)
    inside = m < len(dm)
    dec[inside] = dm[m[inside]] > 0
    if dec.all():
        return empty
    if dec.any():
        reads = reads.filter(pa.array(~dec))
        m = reads.column("meter_idx").to_numpy()
    rt = reads.column("reading_type").to_numpy()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    # dense group of each read: (meter, reading type) within this batch's meter range,
    # with a slot per reading type present (not per possible code: the group arrays
    # are as long as the batch's meter range times its reading types)
    m0 = int(m.min())
    rt_present = np.flatnonzero(np.bincount(rt, minlength=1))
    slot = np.zeros(int(rt_present[-1]) + 1, np.int64)
    slot[rt_present] = np.arange(len(rt_present))
    n_rt = len(rt_present)
    g = (m - m0).astype(np.int64) * n_rt + slot[rt]
    n_groups = int(g.max()) + 1
    key = np.flatnonzero(np.bincount(g, minlength=n_groups))
    km, krt = (key // n_rt + m0).astype(np.int32), rt_present[key % n_rt].astype(np.uint8)
    if history.changed:  # the interval in effect depends on the time
        cur = history.at(m, rt, t)
    else:  # one interval per key: a lookup per key, a gather per read
        cur_g = np.zeros(n_groups, np.int32)
        cur_g[key] = history.at(km, krt, np.zeros(len(key), np.int64))
        cur = cur_g[g]
    known = cur > 0
    # --- keys already learned: changes from the first read off the grid on
    check = known
    learn = ~known
    if check.any():
        off = check & ((t % np.maximum(cur, 1)) != 0)
        if off.any():
            first_off = np.full(n_groups, np.iinfo(np.int64).max)
            np.minimum.at(first_off, g[off], t[off])
            learn |= check & (t >= first_off[g])
        # reads on the grid but too sparse for it: the meter may read less often now
        all_ = check.all()
        n, lo, hi = _per_group(g if all_ else g[check], t if all_ else t[check], n_groups)
        step = np.zeros(n_groups, np.int64)
        step[g if all_ else g[check]] = cur if all_ else cur[check]
        sparse = (n >= MIN_READS) & (n < MIN_FILL * ((hi - lo) // np.maximum(step, 1) + 1))
        if sparse.any():
            learn |= check & sparse[g]
    if not learn.any():
        return empty
    gl, tl = g[learn], t[learn]
    d, ok, lo = _spacing(gl, tl, n_groups)
    # one entry per decided group, unless it repeats the interval in effect
    first_row = np.full(n_groups, -1, np.int64)
    rows = np.flatnonzero(learn)
    first_row[gl[::-1]] = rows[::-1]
    decided = np.flatnonzero(ok)
    r = first_row[decided]
    was = np.where(known[r], cur[r], 0)
    new = decided[d[decided] != was]
    r = first_row[new]
    entries = pa.table({
        "meter_idx": pa.array(m[r], pa.int32()),
        "reading_type": pa.array(rt[r], pa.uint8()),
        "effective_from": pa.array(lo[new], pa.int64()).cast(TS),
        "interval_s": pa.array(d[new], pa.int32()),
    }, schema=INTERVALS)
    undecided = np.zeros(n_groups, bool)
    undecided[gl] = True
    undecided[decided] = False
    keep = learn & undecided[g]
    pending = reads.filter(pa.array(keep)) if keep.any() else READS.empty_table()
    return entries, pending.select(READS.names).cast(READS)


class IntervalLearner:
    """Ingest listener: learns the intervals of undeclared meters from every batch of
    stored reads (also with ``--no-vee``) and records them in the registry.

    Runs before VEE in the listener list, so VEE sees the intervals learned from the
    same batch. Reads of keys still undecided are kept (at most :data:`MAX_PENDING`)
    and learned together with the next batch.
    """

    #: outbox queue and stage name
    name = "intervals"
    republish_on_redelivery = False

    def __init__(self, registry: Any, root: Path | str | None = None) -> None:
        self.registry = registry
        self.root = None if root is None else Path(root)
        self._pending: pa.Table = READS.empty_table()
        self.learned = 0

    def on_stored(self, batch: Any) -> None:
        reads: pa.Table = batch.reads
        if reads.num_rows == 0:
            return
        if self._pending.num_rows:
            reads = pa.concat_tables([self._pending, reads.select(READS.names).cast(READS)])
        entries, pending = learn_intervals(reads, self.registry.intervals())
        if pending.num_rows > MAX_PENDING:
            pending = pending.slice(pending.num_rows - MAX_PENDING)
        self._pending = pending
        if entries.num_rows:
            self.learned += self.registry.learn_intervals(entries)

    def on_watermark(self, event_time_s: int) -> None:
        del event_time_s

    def close(self) -> None:
        """Nothing to persist: what is learned is in the registry already."""
