"""Cutting buffered rows into the chunks the rules see (used by the engine).

Rows are gathered by tick or batch number with a stable radix sort, which keeps the
key order of the batches the ingestor hands over; only a group whose rows come from
several batches is sorted again (a merge of sorted runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model import schema
from headend.rules.base import Chunk

__all__ = ["Cols", "chunk_of", "column", "group_rows"]


@dataclass(frozen=True, slots=True)
class Cols:
    """Columns of reads (meter, type, time, value, quality) or events (meter, -, time,
    code, -) in one order."""

    meter: npt.NDArray[np.int32]
    rtype: npt.NDArray[np.uint8]
    time: npt.NDArray[np.int64]
    a: npt.NDArray[Any]
    b: npt.NDArray[np.uint32]

    def key(self) -> npt.NDArray[np.uint64]:
        """Sort key: (meter, type, time) for reads, (meter, time) for events."""
        return schema.read_key(self.meter, self.rtype, self.time)

    def take(self, order: npt.NDArray[np.int64] | None) -> Cols:
        """The rows in ``order`` (``None``: as they are, no copy)."""
        if order is None:
            return self
        return Cols(self.meter[order], self.rtype[order], self.time[order], self.a[order],
                     self.b[order])


def column(t: pa.Table, name: str, dtype: Any) -> npt.NDArray[Any]:
    return np.asarray(t.column(name).to_numpy(), dtype=dtype)


def group_rows(g: npt.NDArray[np.int64], n: int, key: npt.NDArray[np.uint64] | None
               ) -> tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.int64]]:
    """Order of the rows by group ``g`` (0..n-1), by ``key`` within a group, and the
    group boundaries (``cut[i]:cut[i + 1]``); the order is ``None`` where the rows
    already are in it (one sorted batch: nothing to gather).

    A stable radix sort by group (16 bits a pass) keeps the input order inside a group;
    where that is not already key order (rows of several sorted runs), the group is
    sorted by key: timsort merges the runs in near-linear time. With ``key=None`` the
    rows of a group stay in input order (for consumers that need no order).
    """
    identity = n <= 1 or bool(np.all(g[1:] >= g[:-1]))
    if identity:
        order = np.arange(len(g), dtype=np.int64)
    else:
        order = np.argsort((g & 0xFFFF).astype(np.uint16), kind="stable")
        if n > 0xFFFF:
            order = order[np.argsort((g[order] >> 16).astype(np.uint16), kind="stable")]
    cut = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(g, minlength=n), out=cut[1:])
    if key is not None and len(order) > 1:
        ks = key[order]
        down = np.flatnonzero(ks[1:] < ks[:-1]) + 1
        if len(down):  # positions where the key steps down inside a group
            inside = down[~np.isin(down, cut)]
            for grp in np.unique(np.searchsorted(cut, inside, side="right") - 1).tolist():
                a, z = int(cut[grp]), int(cut[grp + 1])
                order[a:z] = order[a:z][np.argsort(ks[a:z], kind="stable")]
                identity = False
    return (None if identity else order), cut


def chunk_of(wm_prev: int, wm: int, r: Cols, r0: int, r1: int, e: Cols, e0: int, e1: int
             ) -> Chunk:
    return Chunk(wm_prev=wm_prev, wm=wm, r_meter=r.meter[r0:r1], r_type=r.rtype[r0:r1],
                 r_time=r.time[r0:r1], r_value=r.a[r0:r1], r_quality=r.b[r0:r1],
                 e_meter=e.meter[e0:e1], e_time=e.time[e0:e1], e_code=e.a[e0:e1])
