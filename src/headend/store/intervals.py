"""The interval of every (meter, reading type) at any time: declared, else learned.

A meter's interval is known, never assumed (see :mod:`headend.store.registry`): the
meters CSV may declare it; otherwise :mod:`headend.vee.intervals` learns it from the
reads and the registry keeps the learned entries in ``intervals.parquet``
(:data:`~headend.model.schema.INTERVALS`). :class:`IntervalHistory` answers "which
interval at time t" for many reads at once.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model import schema as S

__all__ = ["DECLARED", "LEARNED", "RT_SLOTS", "SOURCE_NAMES", "UNKNOWN", "IntervalHistory"]

#: reading-type slots per meter in the dense group index of :class:`IntervalHistory`
#: (codes 0-7; a higher code has no learned interval)
RT_SLOTS: Final = 8
#: ``interval_source`` codes
UNKNOWN, DECLARED, LEARNED = 0, 1, 2
SOURCE_NAMES: Final = ("", "declared", "learned")


class IntervalHistory:
    """Interval of every (meter, reading type) at any time: declared, else learned.

    Parameters
    ----------
    declared : ndarray of int32
        Declared interval of each ``meter_idx`` [s]; 0 where not declared.
    learned : pyarrow.Table
        :data:`~headend.model.schema.INTERVALS` rows (any order).

    Notes
    -----
    Lookups gather the declared interval per meter, then, for the meters with learned
    entries, from a dense (meter, reading type) index over those meters only (a fleet
    whose intervals are all declared holds no index): one segment per key costs one
    gather per read; only keys whose interval changed are searched by time.
    """

    def __init__(self, declared: npt.NDArray[np.int32], learned: pa.Table) -> None:
        self.declared = np.asarray(declared, np.int32)
        m = learned.column("meter_idx").to_numpy().astype(np.int64)
        rt = learned.column("reading_type").to_numpy().astype(np.int64)
        eff = learned.column("effective_from").cast(pa.int64()).to_numpy()
        order = np.lexsort((eff, rt, m))
        self.meter, self.rt, self.effective_from = m[order], rt[order], eff[order]
        self.interval_s = learned.column("interval_s").to_numpy().astype(np.int32)[order]
        self._group = self.meter * RT_SLOTS + self.rt
        # dense index over the meters with learned entries (0 .. the highest such meter)
        n_groups = (int(self.meter.max()) + 1) * RT_SLOTS if len(m) else 0
        #: first entry of each group (-1: none) and its number of entries
        self._first = np.full(n_groups, -1, np.int32)
        self._count = np.zeros(n_groups, np.int32)
        self._current: tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]] | None = None
        if len(m):
            start = np.r_[True, self._group[1:] != self._group[:-1]]
            self._first[self._group[start]] = np.flatnonzero(start)
            self._count[:] = np.bincount(self._group, minlength=n_groups)
        #: any key with more than one learned interval (then rows are per segment)
        self.changed = bool((self._count > 1).any())
        # learned answer per group: the only learned interval, 0 (none) or -1 (several
        # entries: the time decides); a declared interval wins over it in lookups
        self._learned = np.where(
            self._count == 1, self.interval_s[np.maximum(self._first, 0)] if len(m) else 0,
            np.where(self._count > 1, -1, 0)).astype(np.int32)

    def __len__(self) -> int:
        return len(self.meter)

    def _dense(self, m: npt.NDArray[np.integer[Any]], rt: npt.NDArray[np.integer[Any]]
               ) -> tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.bool_] | None]:
        """Group of each read in the learned index, and which reads fall outside it (or
        None when none does)."""
        g = m * RT_SLOTS + rt
        if len(m) and (int(m.max()) * RT_SLOTS + RT_SLOTS > len(self._learned)
                       or int(rt.max()) >= RT_SLOTS or int(m.min()) < 0):
            out = (m < 0) | (rt >= RT_SLOTS) | (g >= len(self._learned))
            return np.where(out, 0, g), out
        return g, None

    def _declared_at(self, m: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int32]:
        """Declared interval of each meter [s] (0: none, or not in the registry)."""
        d = self.declared
        if len(m) and int(m.min()) >= 0 and int(m.max()) < len(d):
            got: npt.NDArray[np.int32] = d[m]
            return got
        out = np.zeros(len(m), np.int32)
        inside = (m >= 0) & (m < len(d))
        out[inside] = d[m[inside]]
        return out

    def segments(self, meter_idx: npt.NDArray[np.int32], reading_type: npt.NDArray[np.uint8],
                 interval_end: npt.NDArray[np.int64]
                 ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """Interval in effect for each read and the learned entry it comes from.

        Returns
        -------
        interval_s : ndarray of int32
            Declared interval, else the learned one in effect at ``interval_end`` (the
            first learned entry of a key also covers earlier reads), else 0 (unknown).
        segment : ndarray of int64
            Position of the learned entry (sorted by key and time); -1 for a declared
            or unknown interval.
        """
        out = self.at(meter_idx, reading_type, interval_end)
        m = np.asarray(meter_idx).astype(np.int64)
        if len(self._learned) == 0:
            return out, np.full(len(m), -1, np.int64)
        g, outside = self._dense(m, np.asarray(reading_type).astype(np.int64))
        seg = self._first[g].astype(np.int64)
        if outside is not None:
            seg[outside] = -1
        dec = self._declared_at(m) > 0
        seg[dec] = -1
        cnt = self._count[g]
        if outside is not None:
            cnt[outside] = 0
        multi = np.flatnonzero(cnt > 1)
        if len(multi):
            seg[multi] = self._search(m[multi], np.asarray(reading_type)[multi],
                                      np.asarray(interval_end, np.int64)[multi],
                                      g[multi].astype(np.int64))
            seg[dec] = -1
        return out, seg

    def _search(self, m: npt.NDArray[np.int64], rt: npt.NDArray[np.uint8],
                t: npt.NDArray[np.int64], g: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Learned entry in effect for reads of keys with several entries."""
        key = S.read_key(self.meter.astype(np.int32), self.rt.astype(np.uint8),
                         self.effective_from)
        q = S.read_key(m.astype(np.int32), np.asarray(rt, np.uint8),
                       np.maximum(t, S.KEY_EPOCH_S))
        pos = np.searchsorted(key, q, side="right") - 1
        first = self._first[g].astype(np.int64)
        out: npt.NDArray[np.int64] = np.clip(pos, first, first + self._count[g] - 1)
        return out

    def at(self, meter_idx: npt.NDArray[np.int32], reading_type: npt.NDArray[np.uint8],
           interval_end: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        """Interval in effect for each read [s]; 0 where unknown."""
        m = np.asarray(meter_idx)
        if len(m) == 0:
            return np.zeros(0, np.int32)
        out = self._declared_at(m)
        rt = np.asarray(reading_type)
        if int(rt.max()) >= RT_SLOTS:  # beyond the slots (codes 0-7): unknown
            out[rt >= RT_SLOTS] = 0
        if len(self._learned) == 0:
            return out
        # int32 arithmetic: meter_idx < 2**27, so meter * 8 + reading type < 2**31
        g, outside = self._dense(m.astype(np.int32, copy=False),
                                 rt.astype(np.int32, copy=False))
        lrn = self._learned[g]
        if outside is not None:
            lrn[outside] = 0
        out = np.where(out > 0, out, lrn)
        if self.changed:
            multi = np.flatnonzero(out < 0)
            if len(multi):
                seg = self._search(m[multi].astype(np.int64),
                                   np.asarray(reading_type)[multi],
                                   np.asarray(interval_end, np.int64)[multi],
                                   g[multi].astype(np.int64))
                out[multi] = self.interval_s[seg]
        return out

    def ordinal(self, segment: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Number of each learned entry within its key (0 for the first interval)."""
        seg = np.asarray(segment, np.int64)
        out: npt.NDArray[np.int64] = seg - self._first[self._group[seg]]
        return out

    def current(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
        """Per meter: the interval in effect now [s] (declared, else the shortest latest
        learned interval over its reading types, else 0) and its source code
        (:data:`UNKNOWN`, :data:`DECLARED`, :data:`LEARNED`)."""
        if self._current is None:
            self._current = self._compute_current()
        return self._current

    def _compute_current(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
        n = len(self.declared)
        learned = np.zeros(n, np.int32)
        if len(self.meter):
            last = np.r_[self._group[1:] != self._group[:-1], True]
            lm, li = self.meter[last], self.interval_s[last]
            keep = lm < n
            best = np.full(n, np.iinfo(np.int32).max, np.int64)
            np.minimum.at(best, lm[keep], li[keep])
            learned = np.where(best < np.iinfo(np.int32).max, best, 0).astype(np.int32)
        out = np.where(self.declared > 0, self.declared, learned).astype(np.int32)
        src = np.where(self.declared > 0, DECLARED, np.where(learned > 0, LEARNED, UNKNOWN))
        return out, src.astype(np.uint8)
