"""Test kit: a small deterministic grid, faults with ground truth, and scoring.

Used by ``tests/rules`` and ``bench/bench_rules.py`` until (and alongside) the network
simulator; it writes tables in the :mod:`headend.model.schema` schemas, so the engine
sees exactly what ingest would hand it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from headend.model import codes, schema
from headend.rules.alerts import Outage
from headend.rules.base import PF_BIT

__all__ = ["Fault", "ObservableTruth", "grid_meters", "match_outages", "observable_truth",
           "score_outages", "simulate"]


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
    every meter under it, each lost with probability ``gasp_loss`` / ``restore_loss``,
    except from meters already (at the start) or still (at the end) dark through another
    fault: events follow each meter's union of faults, as in :mod:`headend.sim`.
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
    for i, f in enumerate(faults):
        cov = np.flatnonzero(_covered(meters, f))
        stop = f.end if f.end is not None else end + 1
        out[np.ix_(cov, (ends >= f.start) & (ends < stop))] = True
        dark = np.zeros(len(cov), np.bool_)  # already out through another fault
        for j, g in enumerate(faults):
            if j != i and (g.start < f.start or (g.start == f.start and j < i)) and (
                    g.end is None or g.end > f.start):
                dark |= _covered(meters, g)[cov]
        keep = cov[(rng.random(len(cov)) >= gasp_loss) & ~dark]
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


@dataclass(frozen=True, slots=True)
class ObservableTruth:
    """Injected outages as AMI can observe them (see :func:`observable_truth`)."""

    #: the observable outages, with their observable start and end [Unix s]
    faults: list[Fault]
    #: injected outages nothing observable tells apart from an enclosing outage
    unobservable: list[Fault] = field(default_factory=list)
    #: why, per unobservable outage (same order): ``covered``, ``start_unseen``,
    #: ``restore_spread`` or ``events_lost``
    reasons: list[str] = field(default_factory=list)
    #: observable outages whose start was moved to an enclosing outage's end
    shifted: int = 0


def observable_truth(ground_truth: Any, *, interval_s: int = 900, gasp_spread_s: int = 0,
                     restore_spread_s: int = 0) -> ObservableTruth:
    """Turn simulator ground-truth rows into the outages AMI can observe.

    Parameters
    ----------
    ground_truth : pyarrow.Table or iterable of mappings
        Rows of ``ground_truth.parquet`` (:data:`headend.sim.GROUND_TRUTH`); only kinds
        ``outage`` and ``momentary`` are used (columns ``level``, ``device_id``,
        ``start``, ``end``, ``meter_idx``; ``events_sent`` if present).
    interval_s : int
        Meters' read interval [s].
    gasp_spread_s, restore_spread_s : int
        Spread of the time stamps of one failure's gasps / restorations [s] (the
        simulator: 3 and 30): closer than that, two outages' events cannot be told apart.

    Returns
    -------
    ObservableTruth

    Notes
    -----
    An outage *encloses* another when its meters are a strict superset of the other's
    (its feeder or substation; a transformer for a meter). Per outage, the enclosing
    outages' spans ``[a, b)`` are merged; then, span by span:

    * a start before ``a`` looks like ``a`` when it is less than ``gasp_spread_s``
      earlier, or when every event of the outage was lost (``events_sent == 0``) and no
      read fell due between them (no interval end in ``[start, a)``): ``start_unseen``;
    * an outage wholly inside ``[a, b)`` is unobservable (``covered``): its meters were
      already dark, so they send no gasp and no restoration of their own;
    * one that starts inside and outlasts it is seen when its meters stay dark at ``b``:
      its observable start is ``b``, unless it outlasts it by less than
      ``restore_spread_s`` (``restore_spread``) or every restoration was lost and it ended
      within the same read interval as ``b`` (``events_lost``: the same flagged read);
    * one that ends inside ``[a, b)`` is seen restored at ``b``.
    """
    rows: Iterable[Mapping[str, Any]] = (
        ground_truth.to_pylist() if isinstance(ground_truth, pa.Table) else ground_truth)
    big = 2**62

    def sec(x: Any) -> int:
        return big if x is None else int(x.timestamp()) if isinstance(x, dt.datetime) else int(x)

    out = []
    for r in rows:
        if r["kind"] in ("outage", "momentary"):
            out.append((Fault(r["level"], r["device_id"], sec(r["start"]),
                              None if r["end"] is None else sec(r["end"])),
                        frozenset(r["meter_idx"]), r.get("events_sent")))
    iv = interval_s
    faults: list[Fault] = []
    hidden: list[Fault] = []
    reasons: list[str] = []
    shifted = 0
    for f, ms, sent in out:
        spans = sorted((g.start, sec(g.end)) for g, gs, _ in out if len(gs) > len(ms) and ms <= gs)
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        lost = sent == 0
        s, e = f.start, sec(f.end)
        why = ""
        for a, b in merged:
            if s < a < e and (a - s < gasp_spread_s or (lost and (s // iv + 1) * iv >= a)):
                s = a
            if a <= s < b:
                if e <= b:
                    why = "covered" if s == f.start else "start_unseen"
                elif e - b < restore_spread_s:
                    why = "restore_spread"
                elif lost and -(-e // iv) == -(-b // iv):
                    why = "events_lost"
                if why:
                    break
                s = b
            elif s < a < e <= b:
                e = b
        if why:
            hidden.append(f)
            reasons.append(why)
            continue
        shifted += s != f.start
        faults.append(Fault(f.level, f.device_id, s, None if e == big else e))
    return ObservableTruth(faults, hidden, reasons, shifted)


def match_outages(found: Sequence[Outage], truth: Sequence[Fault], tol_s: int = 120
                  ) -> tuple[list[tuple[Fault, Outage]], list[Fault], list[Outage]]:
    """Pair located outages with true ones: same level and device and a start within
    ``tol_s`` [s] (nearest start first). Returns (pairs, misses, false positives)."""
    used: set[int] = set()
    pairs: list[tuple[Fault, Outage]] = []
    misses: list[Fault] = []
    for f in truth:
        best, gap = -1, tol_s + 1
        for i, o in enumerate(found):
            if i in used or o.level != f.level or o.device_id != f.device_id:
                continue
            if abs(o.start - f.start) < gap:
                best, gap = i, abs(o.start - f.start)
        if best < 0:
            misses.append(f)
        else:
            used.add(best)
            pairs.append((f, found[best]))
    return pairs, misses, [o for i, o in enumerate(found) if i not in used]


def score_outages(found: Sequence[Outage], truth: Sequence[Fault] | ObservableTruth,
                  tol_s: int = 120) -> dict[str, float]:
    """Precision and recall of located outages: a match has the same level and device
    and a start within ``tol_s`` [s]; also the largest start and end errors [s].

    ``truth`` may be an :class:`ObservableTruth` (then ``unobservable`` counts the
    injected outages excluded from it)."""
    hidden = 0
    if isinstance(truth, ObservableTruth):
        hidden, truth = len(truth.unobservable), truth.faults
    pairs, _, _ = match_outages(found, truth, tol_s)
    tp = len(pairs)
    err_s = [0] + [abs(o.start - f.start) for f, o in pairs]
    err_e = [0] + [abs(o.end - f.end) for f, o in pairs if f.end is not None and o.end is not None]
    return {"precision": tp / len(found) if found else 1.0,
            "recall": tp / len(truth) if truth else 1.0,
            "max_start_error_s": float(max(err_s)), "max_end_error_s": float(max(err_e)),
            "unobservable": float(hidden)}
