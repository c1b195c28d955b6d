"""Helpers shared by the rule tests: tiny hand-made tables at fixed times."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from headend.model import codes, schema

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
TS = pa.timestamp("s", tz="UTC")


def reads(rows: Sequence[tuple[int, str, int, int, int]]) -> pa.Table:
    """(meter_idx, reading type name, interval_end, raw value, quality mask)."""
    m, rt, t, v, q = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    return pa.table({
        "meter_idx": pa.array(m, pa.int32()),
        "reading_type": pa.array([codes.READING_TYPE_BY_NAME[x].code for x in rt], pa.uint8()),
        "interval_end": pa.array(t, pa.int64()).cast(TS),
        "value": pa.array(v, pa.int32()),
        "quality": pa.array(q, pa.uint32()),
    }, schema=schema.READS)


def events(rows: Sequence[tuple[int, int, str]]) -> pa.Table:
    """(meter_idx, event_time, event type name)."""
    m, t, c = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table({
        "meter_idx": pa.array(m, pa.int32()),
        "event_time": pa.array(t, pa.int64()).cast(TS),
        "event_code": pa.array([getattr(codes.EVENT, x) for x in c], pa.uint32()),
    }, schema=schema.EVENTS)


def grid_reads(n_meters: int, start: int, end: int, rt: str = "kwh_del", value: int = 250,
               iv: int = 900, skip: Sequence[tuple[int, int, int]] = ()) -> pa.Table:
    """Reads of every meter at every interval end in (start, end]; ``skip`` holds
    (meter, from, to) spans without reads (from <= interval_end < to)."""
    ends = np.arange((start // iv + 1) * iv, end + 1, iv)
    mm, tt = np.meshgrid(np.arange(n_meters), ends, indexing="ij")
    mm, tt = mm.ravel(), tt.ravel()
    keep = np.ones(len(mm), bool)
    for m, a, b in skip:
        keep &= ~((mm == m) & (tt >= a) & (tt < b))
    return reads([(int(a), rt, int(b), value, 0) for a, b in zip(mm[keep], tt[keep], strict=True)])
