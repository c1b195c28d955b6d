"""Small hand-made read tables for the VEE tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from headend.model.schema import READS, REGISTERS, TS

#: 2024-01-01T00:00:00Z, a Monday
T0 = 1_704_067_200


def reads(meter: Sequence[int] | int, t: Sequence[int], value: Sequence[float],
          quality: Sequence[int] | int = 0, rt: int = 0) -> pa.Table:
    n = len(t)
    m = np.full(n, meter) if np.isscalar(meter) else np.asarray(meter)
    q = np.full(n, quality) if np.isscalar(quality) else np.asarray(quality)
    return pa.table({"meter_idx": pa.array(m, pa.int32()),
                     "reading_type": pa.array(np.full(n, rt), pa.uint8()),
                     "interval_end": pa.array(np.asarray(t, np.int64)).cast(TS),
                     "value": pa.array(np.asarray(value), pa.int32()),
                     "quality": pa.array(q, pa.uint32())}, schema=READS)


def series(meter: int, t_first: int, step: int, values: Sequence[float],
           missing: Sequence[int] = (), quality: dict[int, int] | None = None, rt: int = 0
           ) -> pa.Table:
    """Consecutive intervals from ``t_first`` (interval end), dropping ``missing`` positions."""
    v = np.asarray(values)
    keep = np.ones(len(v), bool)
    keep[list(missing)] = False
    q = np.zeros(len(v), np.int64)
    for i, b in (quality or {}).items():
        q[i] = b
    t = t_first + step * np.arange(len(v), dtype=np.int64)
    return reads(meter, t[keep], v[keep], q[keep], rt)


def registers(meter: int, times: Sequence[int], values: Sequence[int], register: int = 0
              ) -> pa.Table:
    n = len(times)
    return pa.table({"meter_idx": pa.array(np.full(n, meter), pa.int32()),
                     "register": pa.array(np.full(n, register), pa.uint8()),
                     "read_time": pa.array(np.asarray(times, np.int64)).cast(TS),
                     "value": pa.array(np.asarray(values), pa.int64())}, schema=REGISTERS)


def ivl(*pairs: int) -> np.ndarray:
    """interval_s_of for meters 0.. from the given lengths."""
    return np.asarray(pairs, np.int32)
