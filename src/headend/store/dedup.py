"""The dedup index: which keys a (bucket, day) partition already stores (pure, in memory).

Interval reads on the 5-minute grid (the common case) are one bit each::

    (bucket, day) -> { reading_type -> bitmap of bucket_size x 288 bits }
                     bit = (meter_idx - bucket_lo) * 288 + (interval_end - day_start) // 300
                     + a small sorted uint64 array of the keys off the grid

so 4M meters x 2 reading types cost 288 MB per day. Registers and events keep a
sorted array of their keys per partition. Indexes live in an LRU bounded by bytes and
are rebuilt from the partition's stored key columns on a miss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from headend.model.schema import KEY_EPOCH_S
from headend.store._keys import DAY_S, Keys, merge_sorted, sorted_contains

GRID_S = 300
SLOTS = DAY_S // GRID_S  # 288
_U37 = np.uint64(37)
_U32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)


class PartitionIndex(Protocol):
    """Which keys one partition stores. ``check`` then ``add`` (of the fresh ones)."""

    nbytes: int

    def check(self, keys: Keys) -> tuple[npt.NDArray[np.bool_], object]:
        """(already stored mask, token for :meth:`add`) of sorted unique ``keys``."""
        ...

    def add(self, token: object, fresh: npt.NDArray[np.bool_]) -> None:
        """Record the ``fresh`` keys of a checked batch as stored."""
        ...


class SortedKeyIndex:
    """Sorted array of the stored keys of one partition."""

    def __init__(self, keys: Keys) -> None:
        self.keys = np.sort(keys)
        self.nbytes = int(self.keys.nbytes) + 64

    def check(self, keys: Keys) -> tuple[npt.NDArray[np.bool_], object]:
        return sorted_contains(self.keys, keys), keys

    def add(self, token: object, fresh: npt.NDArray[np.bool_]) -> None:
        keys: Keys = token  # type: ignore[assignment]
        self.keys = merge_sorted(self.keys, keys[fresh])
        self.nbytes = int(self.keys.nbytes) + 64


class _Loc:
    """Where keys fall in a :class:`ReadsDayIndex`."""

    __slots__ = ("g", "keys", "on", "rt", "types")

    def __init__(self, keys: Keys, rt: npt.NDArray[np.uint8], g: npt.NDArray[np.int64],
                 on: npt.NDArray[np.bool_], types: list[int]) -> None:
        self.keys, self.rt, self.g, self.on, self.types = keys, rt, g, on, types


class ReadsDayIndex:
    """Bitmaps (one per reading type) plus off-grid keys of one (bucket, day) of reads.

    Parameters
    ----------
    bucket : int
        Meter bucket; its meters are ``bucket << bucket_bits`` onwards.
    bucket_bits : int
        ``log2`` of the bucket size.
    day : int
        UTC day number (days since 1970-01-01) of the partition.
    keys : ndarray of uint64
        Keys already stored (any order), all of this bucket and day.
    """

    def __init__(self, bucket: int, bucket_bits: int, day: int, keys: Keys) -> None:
        self.lo = bucket << bucket_bits
        self.nbits = (1 << bucket_bits) * SLOTS
        self._gtype = np.uint32 if self.nbits < (1 << 32) else np.int64
        self.day_rel = day * DAY_S - KEY_EPOCH_S  # day start in key seconds
        self.bits: dict[int, npt.NDArray[np.uint8]] = {}
        self.off = np.empty(0, np.uint64)
        self.nbytes = 64
        if len(keys):
            loc = self._locate(keys)
            for r in loc.types:
                b = np.zeros(self.nbits, np.bool_)
                b[loc.g[loc.on & (loc.rt == r)] if len(loc.types) > 1 else loc.g[loc.on]] = True
                self.bits[r] = np.packbits(b, bitorder="little")
            self.off = np.sort(keys[~loc.on])
            self._size()

    def _size(self) -> None:
        self.nbytes = 64 + sum(int(b.nbytes) for b in self.bits.values()) + int(self.off.nbytes)

    def _locate(self, keys: Keys) -> _Loc:
        """Reading type, bit index and on-grid mask of keys of this bucket-day."""
        rt = ((keys >> _U32) & np.uint64(31)).astype(np.uint8)
        # every key lies within the day: 32-bit arithmetic is exact and fast
        off = keys.astype(np.uint32) - np.uint32(self.day_rel)
        slot = off // np.uint32(GRID_S)
        on = slot * np.uint32(GRID_S) == off
        local = (keys >> _U37).astype(self._gtype) - self._gtype(self.lo)  # type: ignore[operator]
        g = local * self._gtype(SLOTS) + slot
        counts = np.bincount(rt, minlength=32)
        return _Loc(keys, rt, g, on, np.flatnonzero(counts).tolist())

    def check(self, keys: Keys) -> tuple[npt.NDArray[np.bool_], object]:
        loc = self._locate(keys)
        out = np.zeros(len(keys), np.bool_)
        for r in loc.types:
            bm = self.bits.get(r)
            if bm is None:
                continue
            sel = loc.on & (loc.rt == r) if len(loc.types) > 1 else loc.on
            gs = loc.g[sel]
            out[sel] = (bm[gs >> 3] >> (gs & 7).astype(np.uint8)) & np.uint8(1)
        if len(self.off) and not loc.on.all():
            out[~loc.on] = sorted_contains(self.off, keys[~loc.on])
        return out, loc

    def add(self, token: object, fresh: npt.NDArray[np.bool_]) -> None:
        loc: _Loc = token  # type: ignore[assignment]
        onf = loc.on & fresh
        for r in loc.types:
            gs = loc.g[onf & (loc.rt == r)] if len(loc.types) > 1 else loc.g[onf]
            if not len(gs):
                continue
            # increasing: keys sort by (meter, type, time)
            bm = self.bits.get(r)
            if bm is None:
                bm = self.bits[r] = np.zeros((self.nbits + 7) // 8, np.uint8)
            byte = gs >> 3
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            vals = np.bitwise_or.reduceat(
                np.left_shift(np.uint8(1), (gs & 7).astype(np.uint8)), starts)
            bm[byte[starts]] |= vals
        offf = ~loc.on & fresh
        if offf.any():
            self.off = merge_sorted(self.off, loc.keys[offf])
        self._size()


class IndexCache:
    """LRU of partition indexes bounded by ``max_bytes`` (the newest one always stays)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple[str, int, int], PartitionIndex] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(
        self, key: tuple[str, int, int], build: Callable[[], PartitionIndex]
    ) -> PartitionIndex:
        idx = self._d.get(key)
        if idx is not None:
            self._d.move_to_end(key)
            self.hits += 1
            return idx
        self.misses += 1
        idx = build()
        self._d[key] = idx
        self.trim()
        return idx

    def trim(self) -> None:
        total = sum(i.nbytes for i in self._d.values())
        while total > self.max_bytes and len(self._d) > 1:
            _, old = self._d.popitem(last=False)
            total -= old.nbytes

    def drop_bucket(self, kind: str, bucket: int) -> None:
        for k in [k for k in self._d if k[0] == kind and k[1] == bucket]:
            del self._d[k]

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self._d.values())

    def clear(self) -> None:
        self._d.clear()
