"""Test kit: a small deterministic grid, faults with ground truth, and scoring.

Used by ``tests/rules`` and ``bench/bench_rules.py`` until (and alongside) the network
simulator; it writes tables in the :mod:`headend.model.schema` schemas, so the engine
sees exactly what ingest would hand it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from headend.model import codes, schema
from headend.rules.alerts import Outage
from headend.rules.base import PF_BIT

__all__ = ["Fault", "grid_meters", "score_outages", "simulate"]


@dataclass(frozen=True, slots=True)
class Fault:
    """A device without power from ``start`` to ``end`` [Unix s] (``None``: still out)."""

    level: str  # meter | transformer | feeder | substation
    device_id: str
    start: int
    end: int | None


def grid_meters(n_sub: int = 1, n_feeder: int = 2, n_tx: int = 5, n_meter: int = 4,
                *, two_way: bool = True, interval_s: int = 900) -> pa.Table:
    """A regular grid: ``n_sub`` substations x ``n_feeder`` feeders x ``n_tx``
    transformers x ``n_meter`` meters; ids ``S0``, ``S0F1``, ``S0F1T2``, ``S0F1T2M3``."""
    s, f, t, m = np.meshgrid(np.arange(n_sub), np.arange(n_feeder), np.arange(n_tx),
                             np.arange(n_meter), indexing="ij")
    s, f, t, m = (x.ravel() for x in (s, f, t, m))
    sub = np.char.add("S", s.astype(str))
    fed = np.char.add(np.char.add(sub, "F"), f.astype(str))
    txf = np.char.add(np.char.add(fed, "T"), t.astype(str))
    mid = np.char.add(np.char.add(txf, "M"), m.astype(str))
    n = len(mid)
    return pa.table({
        "meter_idx": pa.array(np.arange(n, dtype=np.int32)),
        "meter_id": pa.array(mid.tolist()),
        "serial": pa.array(np.arange(1, n + 1, dtype=np.uint64)),
        "commodity": pa.array(np.zeros(n, np.uint8)),
        "technology": pa.array(np.zeros(n, np.uint8)),
        "two_way": pa.array(np.full(n, two_way)),
        "collector_id": pa.array(["C0"] * n),
        "transformer_id": pa.array(txf.tolist()),
        "feeder_id": pa.array(fed.tolist()),
        "substation_id": pa.array(sub.tolist()),
        "interval_s": pa.array(np.full(n, interval_s, np.int32)),
    }, schema=schema.METERS)


def _covered(meters: pa.Table, f: Fault) -> np.ndarray:
    col = {"meter": "meter_id", "transformer": "transformer_id", "feeder": "feeder_id",
           "substation": "substation_id"}[f.level]
    return np.asarray(meters.column(col).to_numpy(zero_copy_only=False) == f.device_id)


def simulate(meters: pa.Table, start: int, end: int, faults: Sequence[Fault] = (), *,
             gasp_loss: float = 0.0, restore_loss: float = 0.0, volts: bool = True,
             seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Interval reads (``kwh_del`` and optionally ``volts``) and power events.

    A meter without power at an interval end sends no read for it; the first read after
    a restoration carries the power-failure quality flag (1.2.32). Each fault sends a
    last gasp (3.26.0.85) at its start and a restoration (3.26.0.216) at its end from
    every meter under it, each lost with probability ``gasp_loss`` / ``restore_loss``.
    """
    rng = np.random.default_rng(seed)
    n = len(meters)
    iv = int(meters.column("interval_s")[0].as_py())
    ends = np.arange((start // iv + 1) * iv, end + 1, iv, dtype=np.int64)
    out = np.zeros((n, len(ends)), np.bool_)
    pf = np.zeros((n, len(ends)), np.bool_)
    em: list[np.ndarray] = []
    et: list[np.ndarray] = []
    ec: list[np.ndarray] = []
    for f in faults:
        cov = np.flatnonzero(_covered(meters, f))
        stop = f.end if f.end is not None else end + 1
        out[np.ix_(cov, (ends >= f.start) & (ends < stop))] = True
        keep = cov[rng.random(len(cov)) >= gasp_loss]
        em.append(keep)
        et.append(np.full(len(keep), f.start, np.int64))
        ec.append(np.full(len(keep), codes.EVENT.power_fail, np.uint32))
        if f.end is not None:
            first = np.searchsorted(ends, f.end)
            if first < len(ends):
                pf[cov, first] = True
            still = np.zeros(len(cov), np.bool_)  # out through another fault at f.end
            for g in faults:
                if g is not f and g.start <= f.end and (g.end is None or g.end > f.end):
                    still |= _covered(meters, g)[cov]
            keep = cov[(rng.random(len(cov)) >= restore_loss) & ~still]
            em.append(keep)
            et.append(np.full(len(keep), f.end, np.int64))
            ec.append(np.full(len(keep), codes.EVENT.power_restored, np.uint32))
    mi, ti = np.nonzero(~out)
    kwh = rng.integers(50, 600, len(mi)).astype(np.int32)
    q = np.where(pf[mi, ti], PF_BIT, 0).astype(np.uint32)
    parts = [(mi, np.zeros(len(mi), np.uint8), ends[ti], kwh, q)]
    if volts:
        v = rng.normal(2400, 15, len(mi)).round().astype(np.int32)
        parts.append((mi, np.full(len(mi), 2, np.uint8), ends[ti], v, q))
    reads = pa.table({
        "meter_idx": pa.array(np.concatenate([p[0] for p in parts]).astype(np.int32)),
        "reading_type": pa.array(np.concatenate([p[1] for p in parts])),
        "interval_end": pa.array(np.concatenate([p[2] for p in parts]), pa.timestamp("s", "UTC")),
        "value": pa.array(np.concatenate([p[3] for p in parts])),
        "quality": pa.array(np.concatenate([p[4] for p in parts])),
    }, schema=schema.READS)
    e_m = np.concatenate(em or [np.zeros(0, np.int64)]).astype(np.int32)
    events = pa.table({
        "meter_idx": pa.array(e_m),
        "event_time": pa.array(np.concatenate(et or [np.zeros(0, np.int64)]),
                               pa.timestamp("s", "UTC")),
        "event_code": pa.array(np.concatenate(ec or [np.zeros(0, np.uint32)]).astype(np.uint32)),
    }, schema=schema.EVENTS)
    return reads, events


def score_outages(found: Sequence[Outage], truth: Sequence[Fault], tol_s: int = 120
                  ) -> dict[str, float]:
    """Precision and recall of located outages: a match has the same level and device
    and a start within ``tol_s`` [s]; also the largest start and end errors [s]."""
    used: set[int] = set()
    tp = 0
    err_s, err_e = [0], [0]
    for f in truth:
        for i, o in enumerate(found):
            if i in used or o.level != f.level or o.device_id != f.device_id:
                continue
            if abs(o.start - f.start) <= tol_s:
                used.add(i)
                tp += 1
                err_s.append(abs(o.start - f.start))
                if f.end is not None and o.end is not None:
                    err_e.append(abs(o.end - f.end))
                break
    return {"precision": tp / len(found) if found else 1.0,
            "recall": tp / len(truth) if truth else 1.0,
            "max_start_error_s": float(max(err_s)), "max_end_error_s": float(max(err_e))}
