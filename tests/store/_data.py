"""Table builders shared by the store tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from headend.model import schema as S

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400


def ts(values: Sequence[int] | np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, np.int64)).cast(S.TS)


def reads(meter: Sequence[int], rt: Sequence[int], t: Sequence[int], value: Sequence[int],
          quality: Sequence[int] | None = None) -> pa.Table:
    n = len(meter)
    return pa.table([
        pa.array(np.asarray(meter, np.int32)), pa.array(np.asarray(rt, np.uint8)), ts(t),
        pa.array(np.asarray(value, np.int32)),
        pa.array(np.asarray(quality if quality is not None else np.zeros(n), np.uint32)),
    ], schema=S.READS)


def registers(meter: Sequence[int], reg: Sequence[int], t: Sequence[int],
              value: Sequence[int]) -> pa.Table:
    return pa.table([pa.array(np.asarray(meter, np.int32)), pa.array(np.asarray(reg, np.uint8)),
                     ts(t), pa.array(np.asarray(value, np.int64))], schema=S.REGISTERS)


def events(meter: Sequence[int], t: Sequence[int], code: Sequence[int]) -> pa.Table:
    return pa.table([pa.array(np.asarray(meter, np.int32)), ts(t),
                     pa.array(np.asarray(code, np.uint32))], schema=S.EVENTS)


def grid_reads(n_meters: int, n_days: int, *, meter0: int = 0, rts: Sequence[int] = (0,),
               interval_s: int = 900, t0: int = T0, seed: int = 0) -> pa.Table:
    """Every meter x type x interval of ``n_days`` days, values from a seeded RNG."""
    per_day = 86_400 // interval_s
    t = t0 + interval_s * (1 + np.arange(per_day * n_days, dtype=np.int64))
    m, r, tt = np.meshgrid(np.arange(meter0, meter0 + n_meters), np.asarray(rts), t,
                           indexing="ij")
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2000, m.size)
    return reads(m.ravel(), r.ravel(), tt.ravel(), v)


def rows(t: pa.Table) -> list[tuple[object, ...]]:
    """Rows as tuples with integer times, for exact comparisons."""
    cols = []
    for c in t.columns:
        if pa.types.is_timestamp(c.type):
            cols.append(c.cast(pa.int64()).to_pylist())
        else:
            cols.append(c.to_pylist())
    return list(zip(*cols, strict=True))
