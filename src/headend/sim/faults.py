"""Resolved faults: the plan (incidents and the events they cause) and ground truth.

:meth:`Faults.resolve` draws every scenario's incidents from the utility's seed and the
events those incidents make meters send; :meth:`FaultPlan.ground_truth` gives one row
per incident (schema :data:`GROUND_TRUTH`, documented in :mod:`headend.sim`).
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

__all__ = ["GROUND_TRUTH", "FaultPlan", "Faults"]

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
        return FaultPlan(u, incidents, _events(u, incidents, ev_rng))


_EVENT_OF: Final = {
    "cover_removed": "cover_removed", "magnetic_tamper": "magnetic_tamper",
    "reverse_energy": "reverse_energy", "under_voltage": "under_voltage",
    "over_voltage": "over_voltage",
}


def _events(u: Utility, incidents: Sequence[Incident], rng: np.random.Generator) -> pa.Table:
    """Events the incidents make meters send, sorted by true time; columns of
    :data:`EVENTS` (``event_time`` as reported, clock skew applied) plus ``true_time``."""
    meters: list[I32] = []
    times: list[I64] = []
    codes: list[npt.NDArray[np.uint32]] = []
    two_way = u.meters.column("two_way").to_numpy(zero_copy_only=False)

    def add(inc: Incident, m: I32, t: I64 | int, code: int, loss: float = 0.0) -> None:
        keep = rng.random(len(m)) >= loss if loss > 0 else np.ones(len(m), np.bool_)
        inc.events_sent += int(keep.sum())
        inc.events_lost += int((~keep).sum())
        meters.append(m[keep])
        times.append(np.broadcast_to(np.asarray(t, np.int64), (len(m),))[keep])
        codes.append(np.full(int(keep.sum()), code, np.uint32))

    for inc in incidents:
        m, k = inc.meters, inc.kind
        if k in ("outage", "momentary"):
            add(inc, m, inc.start_s + rng.integers(0, 3, len(m)), EVENT.power_fail,
                float(inc.detail["gasp_loss"]))
            add(inc, m, inc.end_s + rng.integers(0, 30, len(m)), EVENT.power_restored,
                float(inc.detail["restore_loss"]))
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
