"""Resolved faults: the plan (incidents and the events they cause) and ground truth.

:meth:`Faults.resolve` draws every scenario's incidents from the utility's seed and the
events those incidents make meters send; :meth:`FaultPlan.ground_truth` gives one row
per incident (schema :data:`GROUND_TRUTH`, documented in :mod:`headend.sim`).

Outages that overlap in the topology (a transformer out inside a feeder outage, a meter
inside its transformer's) are merged per meter into :class:`PowerOff` spans, the union
of every outage covering the meter; last gasps and restorations follow those spans.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.errors import ConfigError
from headend.model.codes import EVENT
from headend.model.schema import EVENTS, TS
from headend.sim.scenarios import _ALL, SCENARIOS, Incident, Scenario, _Ctx
from headend.sim.utility import Utility

__all__ = ["GROUND_TRUTH", "FaultPlan", "Faults", "PowerOff"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

GROUND_TRUTH: Final = pa.schema([
    pa.field("fault_id", pa.int32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("level", pa.string(), nullable=False),
    pa.field("device_id", pa.string(), nullable=False),
    pa.field("start", TS, nullable=False),
    pa.field("end", TS, nullable=False),
    pa.field("n_meters", pa.int32(), nullable=False),
    pa.field("meter_idx", pa.list_(pa.int32()), nullable=False),
    pa.field("meter_ids", pa.list_(pa.string()), nullable=False),
    pa.field("events_sent", pa.int32(), nullable=False),
    pa.field("events_lost", pa.int32(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class Faults:
    """The scenarios to inject (an ordered tuple; order matters for the seed streams)."""

    scenarios: tuple[Scenario, ...] = ()

    @classmethod
    def from_names(cls, names: str | Iterable[str]) -> Faults:
        """``"storm,tamper"`` -> default scenarios (``all`` = every kind but the storm)."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        out: list[Scenario] = []
        for n in names:
            for key in (_ALL if n == "all" else (n,)):
                if key not in SCENARIOS:
                    raise ConfigError(f"unknown fault {n!r}; known: all, {', '.join(SCENARIOS)}")
                out += SCENARIOS[key]
        return cls(tuple(out))

    def resolve(self, u: Utility) -> FaultPlan:
        """Draw the incidents and the events they cause."""
        ss = np.random.SeedSequence([u.seed, 0xFA17])
        incidents: list[Incident] = []
        for sc, s in zip(self.scenarios, ss.spawn(len(self.scenarios)), strict=True):
            incidents += sc.resolve(_Ctx(u, np.random.default_rng(s)))
        ev_rng = np.random.default_rng(ss.spawn(1)[0])
        off = PowerOff.of(incidents)
        return FaultPlan(u, incidents, _events(u, incidents, off, ev_rng), off)


#: incident kinds that cut a meter's power
OUTAGE_KINDS: Final = ("outage", "momentary")


@dataclass(frozen=True, eq=False)
class PowerOff:
    """Spans without power per meter: the union of every outage covering the meter.

    One row per maximal span ``[start, end)`` [Unix s] in which a meter has no power,
    sorted by ``meter`` then ``start``; the spans of one meter are disjoint and do not
    touch (outages that touch or overlap are merged).

    Attributes
    ----------
    meter : ndarray of int32
        ``meter_idx`` of the span.
    start, end : ndarray of int64
        The span ``[start, end)`` [Unix s].
    first : ndarray of int32
        Index (in ``FaultPlan.incidents``) of the incident whose start opens the span:
        the meter's last gasp is its event (earliest start; ties: first injected).
    last : ndarray of int32
        Index of the incident whose end closes the span: the restoration is its event
        (latest end; ties: first injected).

    Notes
    -----
    Per meter, the rows of every outage covering it are sorted by start; a running
    maximum of the ends (segmented per meter by offsetting each meter's ends above the
    previous meter's) shows where a row starts after every earlier row has ended, i.e.
    where a new span begins. Empty outages (``end <= start``) cut no power.
    """

    meter: I32
    start: I64
    end: I64
    first: I32
    last: I32

    @classmethod
    def of(cls, incidents: Sequence[Incident]) -> PowerOff:
        """Merge the outage and momentary incidents' ``[start_s, end_s)`` per meter."""
        idx = np.array([i for i, inc in enumerate(incidents) if inc.kind in OUTAGE_KINDS],
                       np.int32)
        if len(idx) == 0:
            z32, z64 = np.zeros(0, np.int32), np.zeros(0, np.int64)
            return cls(z32, z64, z64.copy(), z32.copy(), z32.copy())
        lens = np.array([len(incidents[i].meters) for i in idx], np.int64)
        m = np.concatenate([incidents[i].meters for i in idx]).astype(np.int32)
        inc = np.repeat(idx, lens)
        s = np.repeat(np.array([incidents[i].start_s for i in idx], np.int64), lens)
        e = np.repeat(np.array([incidents[i].end_s for i in idx], np.int64), lens)
        ok = e > s
        m, inc, s, e = m[ok], inc[ok], s[ok], e[ok]
        if len(m) == 0:
            return cls.of(())
        o = np.lexsort((inc, s, m))
        m, inc, s, e = m[o], inc[o], s[o], e[o]
        base = int(s.min())
        span = int(e.max()) - base + 1  # every (end - base) lies in [1, span)
        shift = m.astype(np.int64) * span
        run_end = np.maximum.accumulate(shift + (e - base)) - shift + base
        new = np.ones(len(m), np.bool_)
        new[1:] = (m[1:] != m[:-1]) | (s[1:] > run_end[:-1])
        heads = np.flatnonzero(new)
        tails = np.append(heads[1:] - 1, len(m) - 1)
        end = run_end[tails]
        group = np.cumsum(new) - 1
        closes = np.flatnonzero(e == end[group])  # rows ending their span; >= 1 per span
        last = np.full(len(heads), np.iinfo(np.int32).max, np.int32)
        np.minimum.at(last, group[closes], inc[closes])
        return cls(m[heads], s[heads], end, inc[heads], last)


_EVENT_OF: Final = {
    "cover_removed": "cover_removed", "magnetic_tamper": "magnetic_tamper",
    "reverse_energy": "reverse_energy", "under_voltage": "under_voltage",
    "over_voltage": "over_voltage",
}


def _events(u: Utility, incidents: Sequence[Incident], off: PowerOff,
            rng: np.random.Generator) -> pa.Table:
    """Events the incidents make meters send, sorted by true time; columns of
    :data:`EVENTS` (``event_time`` as reported, clock skew applied) plus ``true_time``.

    Outages send one last gasp per :class:`PowerOff` span (at its start, 0-2 s jitter)
    and one restoration (at its end, 0-29 s), drawn and counted for the incident that
    opens (``first``) or closes (``last``) the span, with that incident's loss shares.
    Random draws go incident by incident (a Python loop per incident, not per meter)."""
    meters: list[I32] = []
    times: list[I64] = []
    codes: list[npt.NDArray[np.uint32]] = []
    two_way = u.meters.column("two_way").to_numpy(zero_copy_only=False)
    # spans grouped by the incident that opens / closes them (meter order kept)
    by_first = np.argsort(off.first, kind="stable")
    by_last = np.argsort(off.last, kind="stable")
    ids = np.arange(len(incidents) + 1)
    f_cut = np.searchsorted(off.first[by_first], ids)
    l_cut = np.searchsorted(off.last[by_last], ids)

    def add(inc: Incident, m: I32, t: I64 | int, code: int, loss: float = 0.0) -> None:
        keep = rng.random(len(m)) >= loss if loss > 0 else np.ones(len(m), np.bool_)
        inc.events_sent += int(keep.sum())
        inc.events_lost += int((~keep).sum())
        meters.append(m[keep])
        times.append(np.broadcast_to(np.asarray(t, np.int64), (len(m),))[keep])
        codes.append(np.full(int(keep.sum()), code, np.uint32))

    for i, inc in enumerate(incidents):
        m, k = inc.meters, inc.kind
        if k in OUTAGE_KINDS:
            g = by_first[f_cut[i]:f_cut[i + 1]]
            add(inc, off.meter[g], off.start[g] + rng.integers(0, 3, len(g)), EVENT.power_fail,
                float(inc.detail["gasp_loss"]))
            r = by_last[l_cut[i]:l_cut[i + 1]]
            add(inc, off.meter[r], off.end[r] + rng.integers(0, 30, len(r)),
                EVENT.power_restored, float(inc.detail["restore_loss"]))
        elif k in ("under_voltage", "over_voltage"):
            add(inc, m[two_way[m]], inc.start_s + rng.integers(0, 60, int(two_way[m].sum())),
                getattr(EVENT, _EVENT_OF[k]))
        elif k in _EVENT_OF:
            add(inc, m, inc.start_s, getattr(EVENT, _EVENT_OF[k]))
        elif k == "water_leak":
            add(inc, m, inc.start_s + 86_400, EVENT.water_leak)
    if meters:
        m_all = np.concatenate(meters).astype(np.int32)
        t_all = np.concatenate(times)
        c_all = np.concatenate(codes)
    else:
        m_all, t_all, c_all = np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.uint32)
    reported = t_all.copy()
    for inc in incidents:
        if inc.kind == "clock_skew":
            hit = np.isin(m_all, inc.meters) & (t_all >= inc.start_s) & (t_all < inc.end_s)
            reported[hit] += int(inc.detail["skew_s"])
    order = np.lexsort((c_all, m_all, t_all))
    return pa.table({
        "meter_idx": pa.array(m_all[order]),
        "event_time": pa.array(reported[order], TS),
        "event_code": pa.array(c_all[order]),
        "true_time": pa.array(t_all[order], pa.int64()),
    })


@dataclass(eq=False)
class FaultPlan:
    """Resolved faults: incidents, the events they cause, and the ground truth."""

    utility: Utility
    incidents: list[Incident]
    events: pa.Table  # EVENTS columns + true_time [Unix s], sorted by true_time
    power_off: PowerOff  # per-meter spans without power (union of covering outages)

    def kinds(self) -> set[str]:
        return {i.kind for i in self.incidents}

    def event_table(self) -> pa.Table:
        """All fault events as an :data:`EVENTS` table (before any loss in delivery)."""
        return self.events.select(EVENTS.names).cast(EVENTS)

    def ground_truth(self) -> pa.Table:
        """One row per incident, schema :data:`GROUND_TRUTH`."""
        incs = self.incidents
        ids = self.utility.meters.column("meter_id").combine_chunks()
        lens = np.array([len(i.meters) for i in incs], np.int32)
        flat = np.concatenate([i.meters for i in incs]) if incs else np.zeros(0, np.int32)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        return pa.table({
            "fault_id": pa.array(np.arange(len(incs), dtype=np.int32)),
            "kind": pa.array([i.kind for i in incs], pa.string()),
            "level": pa.array([i.level for i in incs], pa.string()),
            "device_id": pa.array([i.device_id for i in incs], pa.string()),
            "start": pa.array([i.start_s for i in incs], pa.int64()).cast(TS),
            "end": pa.array([i.end_s for i in incs], pa.int64()).cast(TS),
            "n_meters": pa.array(lens),
            "meter_idx": pa.ListArray.from_arrays(offsets, pa.array(flat, pa.int32())),
            "meter_ids": pa.ListArray.from_arrays(offsets, pc.take(ids, pa.array(flat,
                                                                                pa.int32()))),
            "events_sent": pa.array([i.events_sent for i in incs], pa.int32()),
            "events_lost": pa.array([i.events_lost for i in incs], pa.int32()),
            "detail": pa.array([json.dumps(i.detail, sort_keys=True) for i in incs], pa.string()),
        }, schema=GROUND_TRUTH)
