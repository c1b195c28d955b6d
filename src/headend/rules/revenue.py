"""Revenue protection rules: tamper events, reverse energy, zero consumption.

* tamper: every cover-removal (3.12.29.212) or magnetic-tamper (3.12.66.257) event
  (configurable codes) is an alarm of its meter at the event time;
* reverse energy: the meter's reverse-energy event (3.26.93.219), or reads flagged
  reverse rotation (1.3.1) for ``intervals`` intervals (or, with
  ``assume_no_generation``, received energy), on a meter not listed as having generation;
* zero consumption: a meter delivering exactly 0 kWh for ``intervals`` intervals while at
  least ``neighbour_ratio`` of the other meters on its transformer that reported in the
  same interval consume (energy theft by bypass, or a stopped register); an interval in
  which the meter exports (``kwh_rec`` > 0) does not count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from headend._grouping import unique_inverse
from headend.model import codes
from headend.rules.alerts import Alarm, record_id
from headend.rules.base import Chunk, Context, Output, alarms_from_runs
from headend.rules.config import (
    DisconnectedUseConfig,
    ReverseEnergyConfig,
    TamperConfig,
    ZeroConsumptionConfig,
)
from headend.rules.topology import METER, TRANSFORMER, Topology
from headend.rules.windows import RunState

__all__ = ["ReverseEnergyRule", "TamperRule", "ZeroConsumptionRule", "point_alarms"]

KWH = codes.READING_TYPE_BY_NAME["kwh_del"]
KWH_REC = codes.READING_TYPE_BY_NAME["kwh_rec"]
REVERSE_BIT = 1 << codes.QUALITY_BIT["1.3.1"]


def point_alarms(rule: str, topo: Topology, m: npt.NDArray[Any], t: npt.NDArray[Any],
                 code: npt.NDArray[Any]) -> list[Alarm]:
    """One alarm per event (start = end = event time); the loop is over alarms only."""
    out = []
    for mi, ti, ci in zip(m.tolist(), t.tolist(), code.tolist(), strict=True):
        cs = codes.event_code_str(ci)
        et = codes.EVENT_BY_PACKED.get(ci)
        mid = topo.meter_id[mi]
        out.append(Alarm(record_id(rule, "meter", mid, ti, cs), rule, "meter", mid, ti, ti,
                         f"{et.description if et else 'event'} ({cs})", (f"events:{cs}",)))
    return out


class TamperRule:
    kind = "tamper"

    def __init__(self, name: str, cfg: TamperConfig) -> None:
        self.name, self.cfg = name, cfg
        self.codes = np.array([codes.pack_event_code(c) for c in cfg.event_codes], np.uint32)

    def process(self, c: Chunk, ctx: Context) -> Output:
        m, t, code = c.events_of(self.codes)
        return Output(alarms=point_alarms(self.name, ctx.topology, m, t, code))

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, s: dict[str, Any]) -> None:
        pass


class ReverseEnergyRule:
    kind = "reverse_energy"

    def __init__(self, name: str, cfg: ReverseEnergyConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()
        self._gen: tuple[int, npt.NDArray[np.bool_]] = (-1, np.zeros(0, np.bool_))

    def _generation(self, topo: Topology) -> npt.NDArray[np.bool_]:
        if self._gen[0] != id(topo):
            self._gen = (id(topo), topo.meter_id.isin(self.cfg.generation_meters))
        return self._gen[1]

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        gen = self._generation(topo)
        # per (meter, interval): reverse rotation flagged on kwh_del or kwh_rec, or
        # (assume_no_generation) received energy
        dm, dt_, _dv, dq = c.reads_of(KWH.code)
        rm, rt_, rv, rq = c.reads_of(KWH_REC.code)
        m = np.concatenate([dm, rm])
        t = np.concatenate([dt_, rt_])
        hit = np.concatenate([(dq & REVERSE_BIT) != 0, (rq & REVERSE_BIT) != 0])
        if self.cfg.assume_no_generation:
            hit[len(dm):] |= rv.astype(np.float64) * KWH_REC.resolution >= self.cfg.min_kwh
        packed = (m.astype(np.int64) << 32) | t
        uniq, inv = unique_inverse(packed)
        any_hit = np.bincount(inv, weights=hit, minlength=len(uniq)) > 0
        m, t = (uniq >> 32).astype(np.int32), uniq & 0xFFFFFFFF
        flag = any_hit & ~gen[m]
        runs = self.runs.update(m, t, flag, topo.interval_s[m].astype(np.int64))
        iv = topo.interval_s[runs.key].astype(np.int64)
        alarms = alarms_from_runs(self.name, METER, topo, runs, iv, self.cfg.intervals * iv,
                                  "reverse energy flow on a meter without generation",
                                  ("reads:quality:1.3.1", "reads:kwh_rec"))
        em, et, ec = c.events_of([codes.EVENT.reverse_energy])
        keep = ~gen[em]
        alarms += point_alarms(self.name, topo, em[keep], et[keep], ec[keep])
        return Output(alarms=alarms)

    def snapshot(self) -> dict[str, Any]:
        return self.runs.snapshot()

    def restore(self, s: dict[str, Any]) -> None:
        self.runs.restore(s)


class ZeroConsumptionRule:
    kind = "zero_consumption"

    def __init__(self, name: str, cfg: ZeroConsumptionConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        m, t, v, _ = c.reads_of(KWH.code)
        on = ~topo.disconnected[m]  # a disconnected meter's zero is the switch's doing
        if not on.all():
            m, t, v = m[on], t[on], v[on]
        if len(m) == 0:
            return Output()
        tx = topo.device[TRANSFORMER][m]
        # per (transformer, interval): meters reporting and meters consuming
        packed = (np.where(tx >= 0, tx, 0).astype(np.int64) << 32) | t
        uniq, inv = unique_inverse(packed)
        n_rep = np.bincount(inv, minlength=len(uniq))[inv]
        n_use = np.bincount(inv, weights=v > 0, minlength=len(uniq))[inv]
        others = n_rep - 1
        # zero delivered while exporting (kwh_rec > 0) is generation, not theft
        rm, rt_, rv, _ = c.reads_of(KWH_REC.code)
        exporting = np.isin((m.astype(np.int64) << 32) | t,
                            (rm[rv > 0].astype(np.int64) << 32) | rt_[rv > 0])
        flag = (v == 0) & ~exporting & (tx >= 0) & (n_use >= self.cfg.min_neighbours) & (
            n_use >= self.cfg.neighbour_ratio * others)
        iv = topo.interval_s[m].astype(np.int64)
        runs = self.runs.update(m, t, flag, iv)
        riv = topo.interval_s[runs.key].astype(np.int64)
        return Output(alarms=alarms_from_runs(
            self.name, METER, topo, runs, riv, self.cfg.intervals * riv,
            "zero consumption while neighbours on the transformer consume",
            ("reads:kwh_del", "topology")))

    def snapshot(self) -> dict[str, Any]:
        return self.runs.snapshot()

    def restore(self, s: dict[str, Any]) -> None:
        self.runs.restore(s)


class DisconnectedUseRule:
    """Energy through an open service switch (see :class:`DisconnectedUseConfig`): per
    disconnected meter and interval end, delivered or received energy of at least
    ``min_kwh``; a run of ``intervals`` such intervals is an alarm."""

    kind = "disconnected_use"

    def __init__(self, name: str, cfg: DisconnectedUseConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        if not topo.disconnected.any():
            return Output()
        ms, ts, fs = [], [], []
        for rt in (KWH, KWH_REC):
            m, t, v, _ = c.reads_of(rt.code)
            off = topo.disconnected[m]
            ms.append(m[off])
            ts.append(t[off])
            fs.append(v[off].astype(np.float64) * rt.resolution >= self.cfg.min_kwh)
        m, t, f = np.concatenate(ms), np.concatenate(ts), np.concatenate(fs)
        if len(m) == 0:
            return Output()
        # one sample per (meter, interval end), flagged if either direction carried energy
        uniq, inv = unique_inverse((m.astype(np.int64) << 32) | t)
        flag = np.bincount(inv, weights=f, minlength=len(uniq)) > 0
        km, kt = (uniq >> 32).astype(np.int64), uniq & 0xFFFFFFFF
        iv = topo.interval_s[km].astype(np.int64)
        runs = self.runs.update(km, kt, flag, iv)
        riv = topo.interval_s[runs.key].astype(np.int64)
        return Output(alarms=alarms_from_runs(
            self.name, METER, topo, runs, riv, self.cfg.intervals * riv,
            "energy through an open service switch (meter disconnected)",
            ("reads:kwh_del", "reads:kwh_rec", "registry:switch_state")))

    def snapshot(self) -> dict[str, Any]:
        return self.runs.snapshot()

    def restore(self, s: dict[str, Any]) -> None:
        self.runs.restore(s)
