"""Event-time windows over columnar batches: sessions, runs, tumbling and sliding.

Every function here works on whole NumPy columns (a key such as ``meter_idx`` or a
transformer index, an event time in Unix seconds and a value), with sorting and
group-bys instead of a Python call per item. Window *configuration* lives in the rule
configs (:mod:`headend.rules.config`); the only window *state* carried between batches
is :class:`RunState` (dense arrays indexed by key), which snapshots to arrays.

* **session** windows: items of one key closer than ``gap_s`` belong together
  (:func:`session_ids`); used to cluster last gasps into incidents.
* **runs** (a count-based session over a condition): consecutive flagged samples of one
  key on its interval grid (:class:`RunState`); used for "outside Range A for N
  minutes", "flow for 24 h", "overload for N intervals".
* **tumbling** windows: :func:`tumbling` aggregates per ``(key, window)``.
* **sliding** windows: :func:`sliding_sum` sums each item's trailing ``width_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from headend._grouping import unique_inverse

__all__ = ["RunState", "Runs", "densest_window", "isolated", "session_ids", "sliding_sum", "sort_by_key_time",
           "tumbling"]

I64 = npt.NDArray[np.int64]


def sort_by_key_time(key: npt.NDArray[Any], t: I64) -> npt.NDArray[np.intp]:
    """Stable order by ``(key, t)``; ``key`` >= 0 and < 2**31, ``0 <= t < 2**32``."""
    packed = (key.astype(np.int64) << np.int64(32)) | t.astype(np.int64)
    return np.argsort(packed, kind="stable")


def isolated(key: npt.NDArray[Any], t: I64, width_s: int) -> npt.NDArray[np.bool_]:
    """Items with no other item of the same key within ``width_s`` [s] (input order;
    ``key`` >= 0, as for :func:`sort_by_key_time`)."""
    o = sort_by_key_time(key, t)
    k, tt = key[o], t[o]
    near = (k[1:] == k[:-1]) & (tt[1:] - tt[:-1] <= width_s)
    iso = np.ones(len(t), np.bool_)
    iso[1:] &= ~near
    iso[:-1] &= ~near
    out = np.empty(len(t), np.bool_)
    out[o] = iso
    return out


def session_ids(key: npt.NDArray[Any], t: I64, gap_s: int) -> npt.NDArray[np.int64]:
    """Session number of each item; input sorted by ``(key, t)``.

    A new session starts at a new key or when ``t`` exceeds the previous item's time by
    more than ``gap_s`` [s]. Sessions are numbered 0, 1, ... in input order.
    """
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    brk = np.ones(len(t), dtype=np.bool_)
    brk[1:] = (key[1:] != key[:-1]) | (np.diff(t) > gap_s)
    return np.cumsum(brk) - 1


@dataclass(slots=True)
class Runs:
    """Runs of consecutive flagged samples found in one batch.

    ``start``/``last`` are the first and last sample times [Unix s] of the run (a run
    continued from an earlier batch keeps its original ``start``); ``closed`` tells
    whether the run has ended (an unflagged or non-consecutive sample followed).
    """

    key: npt.NDArray[np.int64]
    start: I64
    last: I64
    closed: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.key)


class RunState:
    """Open runs per key, carried across batches (dense arrays; bounded by ``n`` keys).

    Parameters
    ----------
    n : int
        Number of keys (grown on demand).
    """

    def __init__(self, n: int = 0) -> None:
        self.start = np.zeros(n, dtype=np.int64)  # 0: no open run
        self.last = np.zeros(n, dtype=np.int64)

    def grow(self, n: int) -> None:
        if n > len(self.start):
            pad = n - len(self.start)
            self.start = np.concatenate([self.start, np.zeros(pad, np.int64)])
            self.last = np.concatenate([self.last, np.zeros(pad, np.int64)])

    def update(
        self, key: npt.NDArray[Any], t: I64, flag: npt.NDArray[np.bool_], max_gap: I64 | int
    ) -> Runs:
        """Consume samples sorted by ``(key, t)`` and return the runs they touch.

        Two flagged samples of one key are consecutive when their times differ by at
        most ``max_gap`` [s] (scalar or per sample). A key's open run from earlier
        batches continues if its first sample here is flagged and consecutive; it is
        closed (and reported) if that sample is unflagged or too far.
        """
        key = key.astype(np.int64)
        n = len(t)
        gap = np.broadcast_to(np.asarray(max_gap, dtype=np.int64), (n,))
        if n == 0:
            e = np.zeros(0, dtype=np.int64)
            return Runs(e, e, e, np.zeros(0, dtype=np.bool_))
        self.grow(int(key.max()) + 1)
        first = np.ones(n, dtype=np.bool_)
        first[1:] = key[1:] != key[:-1]
        last_of_key = np.ones(n, dtype=np.bool_)
        last_of_key[:-1] = first[1:]
        contiguous = np.zeros(n, dtype=np.bool_)
        contiguous[1:] = ~first[1:] & (np.diff(t) <= gap[1:])
        prev_flag = np.zeros(n, dtype=np.bool_)
        prev_flag[1:] = flag[:-1]
        begin = flag & ~(contiguous & prev_flag)
        # carried runs: continue, or close at the key's first sample
        carried = first & (self.start[key] > 0)
        cont = carried & flag & (t - self.last[key] <= gap)
        closes_carried = carried & ~cont
        fr = np.flatnonzero(flag)
        rid = (np.cumsum(begin) - 1)[fr]
        n_runs = int(begin.sum())
        r_key = key[begin]
        r_start = np.where(cont[begin], self.start[r_key], t[begin])
        r_end_row = fr[np.r_[np.flatnonzero(np.diff(rid)), len(fr) - 1]] if n_runs else fr
        r_last = t[r_end_row]
        # a run is closed unless its last sample is the key's last sample
        r_closed = ~last_of_key[r_end_row]
        # carried runs that were closed here
        cc = np.flatnonzero(closes_carried)
        c_key = key[cc]
        out = Runs(
            key=np.concatenate([key[cc], r_key]),
            start=np.concatenate([self.start[c_key], r_start]),
            last=np.concatenate([self.last[c_key], r_last]),
            closed=np.concatenate([np.ones(len(cc), np.bool_), r_closed]),
        )
        # state: clear every key seen, then set keys whose last run is open
        seen = key[first]
        self.start[seen] = 0
        self.last[seen] = 0
        op = ~r_closed
        self.start[r_key[op]] = r_start[op]
        self.last[r_key[op]] = r_last[op]
        return out

    def close_stale(self, now: int, max_gap: npt.NDArray[np.int64] | int) -> Runs:
        """Close open runs whose last sample is older than ``now - max_gap``."""
        gap = np.broadcast_to(np.asarray(max_gap, dtype=np.int64), self.start.shape)
        k = np.flatnonzero((self.start > 0) & (now - self.last > gap)).astype(np.int64)
        out = Runs(k, self.start[k].copy(), self.last[k].copy(), np.ones(len(k), np.bool_))
        self.start[k] = 0
        self.last[k] = 0
        return out

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        return {"start": self.start, "last": self.last}

    def restore(self, state: dict[str, npt.NDArray[Any]]) -> None:
        self.start = np.array(state["start"], dtype=np.int64)
        self.last = np.array(state["last"], dtype=np.int64)


def tumbling(
    key: npt.NDArray[Any], t: I64, value: npt.NDArray[Any], width_s: int
) -> tuple[npt.NDArray[np.int64], I64, npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Sum ``value`` per ``(key, window)`` of ``width_s`` [s] aligned to the epoch.

    Windows are ``(end - width_s, end]`` (interval-ending convention). Returns
    ``(key, window_end, sum, count)`` sorted by key then window.
    """
    wend = -(-t.astype(np.int64) // width_s) * width_s
    packed = (key.astype(np.int64) << np.int64(32)) | wend
    uniq, inv = unique_inverse(packed)
    sums = np.bincount(inv, weights=value.astype(np.float64), minlength=len(uniq))
    cnt = np.bincount(inv, minlength=len(uniq)).astype(np.int64)
    keys: npt.NDArray[np.int64] = uniq >> np.int64(32)
    ends: I64 = uniq & np.int64(0xFFFFFFFF)
    return keys, ends, sums.astype(np.float64), cnt


def sliding_sum(
    key: npt.NDArray[Any], t: I64, value: npt.NDArray[Any], width_s: int
) -> npt.NDArray[np.float64]:
    """For each item (sorted by ``(key, t)``), the sum of its key's values with time in
    ``(t - width_s, t]``; computed with one cumulative sum and a binary search."""
    packed = (key.astype(np.int64) << np.int64(32)) | t.astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(value.astype(np.float64))])
    lo = np.searchsorted(packed, packed - width_s, side="right")
    return csum[1:] - csum[lo]  # type: ignore[no-any-return]


def densest_window(dev: npt.NDArray[Any], t: I64, width: int
                   ) -> tuple[npt.NDArray[np.int64], I64, npt.NDArray[np.float64]]:
    """Per device: the start of its densest ``width``-second window of gasps and the
    share of the device's gasps inside it (1.0 when the device failed as a whole)."""
    o = sort_by_key_time(dev, t)
    dk, tt = dev[o].astype(np.int64), t[o]
    packed = (dk << 32) | tt
    cnt = np.searchsorted(packed, packed + width, side="right") - np.arange(len(tt))
    best = np.lexsort((tt, -cnt, dk))
    first = np.r_[True, dk[best][1:] != dk[best][:-1]]
    devs, total = np.unique(dk, return_counts=True)
    return devs, tt[best][first], cnt[best][first] / total
