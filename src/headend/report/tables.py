"""The tables of the operations report (pure: Arrow and NumPy in, Arrow out).

Every table is also written as CSV by :mod:`headend.report.render`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics import shapes
from headend.analytics.matrix import HourlyMatrix
from headend.model import codes

__all__ = ["completeness", "feeder_load", "outage_table", "vee_statistics"]


def feeder_load(m: HourlyMatrix, feeder: npt.NDArray[np.object_]) -> pa.Table:
    """Hourly load per feeder: ``feeder_id, hour_end, kw`` (kW = kWh per hour)."""
    names, load = shapes.group_load(m, feeder)
    t = m.t0 + 3600 * np.arange(load.shape[1], dtype=np.int64)
    return pa.table({
        "feeder_id": pa.array(np.repeat(names.astype(str), load.shape[1])),
        "hour_end": pa.array(np.tile(t, len(names))).cast(pa.timestamp("s", tz="UTC")),
        "kw": load.ravel()})


def vee_statistics(current: pa.Table) -> pa.Table:
    """Reads carrying each quality code: ``code, name, category, reads, share_pct``."""
    q = current.column("quality").to_numpy() if current.num_rows else np.empty(0, np.uint32)
    n = max(len(q), 1)
    rows = []
    for qc in codes.QUALITY_CODES:
        k = int(((q >> np.uint32(qc.bit)) & 1).sum())
        if k:
            rows.append((qc.code, qc.name, qc.category, k, 100.0 * k / n))
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 5
    return pa.table({"code": pa.array(cols[0], pa.string()), "name": pa.array(cols[1], pa.string()),
                     "category": pa.array(cols[2], pa.int32()),
                     "reads": pa.array(cols[3], pa.int64()),
                     "share_pct": pa.array(cols[4], pa.float64())})


def completeness(raw: pa.Table, meters: pa.Table, start: int, end: int) -> pa.Table:
    """Received vs expected interval reads per collector and technology.

    Expected: every grid point of each meter's interval in ``[start, end)`` for each
    reading type the meter reported in the window; received: stored (original) reads.
    Columns ``collector_id, technology, meters, expected, received, completeness_pct``.
    """
    m = raw.column("meter_idx").to_numpy()
    rt = raw.column("reading_type").to_numpy()
    midx = meters.column("meter_idx").to_numpy()
    ivl = np.zeros(int(midx.max()) + 1 if len(midx) else 0, np.int64)
    ivl[midx] = meters.column("interval_s").to_numpy()
    pair = np.unique(m.astype(np.int64) * 256 + rt)
    pm = (pair // 256).astype(np.int64)
    exp_pair = (end - 1) // ivl[pm] - (start - 1) // ivl[pm]  # grid points in [start, end)
    expected = np.bincount(pm, weights=exp_pair, minlength=len(ivl))
    received = np.bincount(m, minlength=len(ivl)).astype(np.float64)
    coll = np.asarray(meters.column("collector_id").to_pylist(), dtype=object)
    coll = np.where(coll == None, "", coll).astype(str)
    tech = np.array(codes.Technology.NAMES)[meters.column("technology").to_numpy()]
    reported = np.zeros(len(ivl), bool)
    reported[pm] = True
    sel = reported[midx]
    key = np.char.add(np.char.add(coll[sel], "\x1f"), tech[sel])
    uk, inv = np.unique(key, return_inverse=True)
    e = np.bincount(inv, weights=expected[midx[sel]], minlength=len(uk))
    r = np.bincount(inv, weights=received[midx[sel]], minlength=len(uk))
    parts = [k.split("\x1f") for k in uk.tolist()]
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * r / e
    return pa.table({"collector_id": [p[0] for p in parts], "technology": [p[1] for p in parts],
                     "meters": pa.array(np.bincount(inv, minlength=len(uk)), pa.int64()),
                     "expected": pa.array(e.astype(np.int64)),
                     "received": pa.array(r.astype(np.int64)), "completeness_pct": pct})


def outage_table(outages: Iterable[Any], start: int, end: int) -> pa.Table:
    """Sustained and momentary outages overlapping ``[start, end)``, clipped to it.

    Customer-minutes lost (IEEE 1366) = meters affected x minutes out; an ongoing
    outage counts until ``end``.
    """
    rows = []
    for o in outages:
        o_end = o.end if o.end is not None else end
        if o.start >= end or o_end <= start:
            continue
        minutes = (min(o_end, end) - max(o.start, start)) / 60.0
        rows.append({"outage_id": o.outage_id, "level": o.level, "device_id": o.device_id,
                     "start": o.start, "end": o.end, "sustained": o.sustained,
                     "meters_affected": o.meters_affected, "minutes": minutes,
                     "customer_minutes": minutes * o.meters_affected})
    ts = pa.timestamp("s", tz="UTC")
    schema = pa.schema([("outage_id", pa.string()), ("level", pa.string()),
                        ("device_id", pa.string()), ("start", ts), ("end", ts),
                        ("sustained", pa.bool_()), ("meters_affected", pa.int64()),
                        ("minutes", pa.float64()), ("customer_minutes", pa.float64())])
    if not rows:
        return schema.empty_table()
    cols = {k: [r[k] for r in rows] for k in schema.names}
    return pa.table({k: pa.array(v, pa.int64()).cast(ts) if k in ("start", "end")
                     else pa.array(v, schema.field(k).type) for k, v in cols.items()},
                    schema=schema)
