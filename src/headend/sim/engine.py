"""The simulation engine: one upload cycle at a time, all meters at once.

:func:`iter_uploads` yields one :class:`Upload` per interval boundary: the reads of the
interval that just ended for every meter (computed by broadcasting over meters), the
daily register payload at midnight, the events that happened in the interval, plus
whatever the fault plan delays, duplicates or retransmits. Memory is bounded by one
cycle: a 4-million-meter day peaks at about 2.6 GB (utility included) while frames are
written, about 650 bytes per meter.

Rows of an upload are ordered by collector, then meter, then reading type (the order
of :attr:`Layout`), followed by delayed/duplicated rows; each row carries a *frame
tag* ``created_cycle * 4 + kind`` (kind 0: normal, 1: retransmission, 2: duplicate)
that the frame writer uses as the frame sequence number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model.codes import QUALITY_BY_NAME, READING_TYPE_BY_NAME, REGISTER_TYPE_BY_NAME
from headend.model.schema import EVENTS, READS, REGISTERS, TS
from headend.sim import profiles
from headend.sim.faults import OUTAGE_KINDS, FaultPlan, Faults
from headend.sim.scenarios import Incident
from headend.sim.utility import Utility

__all__ = [
    "TAG_DUPLICATE",
    "TAG_NORMAL",
    "TAG_RETRANSMISSION",
    "Layout",
    "Upload",
    "iter_uploads",
]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

TAG_NORMAL = 0
TAG_RETRANSMISSION = 1
TAG_DUPLICATE = 2

_Q_POWER_FAIL = np.uint32(1 << QUALITY_BY_NAME["power_fail"].bit)
_Q_TAMPER = np.uint32(1 << QUALITY_BY_NAME["tamper"].bit)
_Q_REVERSE = np.uint32(1 << QUALITY_BY_NAME["reverse_rotation"].bit)
_RT = {k: v.code for k, v in READING_TYPE_BY_NAME.items()}
_REG = {k: v.code for k, v in REGISTER_TYPE_BY_NAME.items()}


@dataclass(frozen=True, eq=False)
class Upload:
    """What the collectors upload after one interval boundary.

    Unpacks as ``(cycle_time, reads, registers, events)``; tables have the schemas
    :data:`~headend.model.schema.READS`, :data:`~headend.model.schema.REGISTERS` and
    :data:`~headend.model.schema.EVENTS`. ``*_tag`` give each row's frame tag.
    """

    cycle: int
    cycle_time: dt.datetime
    reads: pa.Table
    registers: pa.Table
    events: pa.Table
    reads_tag: I64
    registers_tag: I64
    events_tag: I64

    def __iter__(self) -> Iterator[object]:
        return iter((self.cycle_time, self.reads, self.registers, self.events))

    @property
    def cycle_s(self) -> int:
        return int(self.cycle_time.timestamp())


@dataclass(frozen=True, eq=False)
class Layout:
    """Static row layout of one cycle: rows sorted by (collector, meter, type).

    ``row_meter``/``row_type`` describe every row; ``pos[name]`` maps the i-th meter of
    that channel (meters ascending) to its row.
    """

    row_meter: I32
    row_type: npt.NDArray[np.uint8]
    pos: dict[str, I64]

    @classmethod
    def build(cls, coll: I32, channels: dict[str, tuple[I32, int]]) -> Layout:
        ms = np.concatenate([m for m, _ in channels.values()]).astype(np.int32)
        ts = np.concatenate([np.full(len(m), t, np.uint8) for m, t in channels.values()])
        order = np.lexsort((ts, ms, coll[ms]))
        inv = np.empty(len(ms), np.int64)  # intp: fastest for fancy indexing
        inv[order] = np.arange(len(ms))
        pos, k = {}, 0
        for name, (m, _) in channels.items():
            pos[name] = inv[k:k + len(m)]
            k += len(m)
        return cls(ms[order], ts[order], pos)


_Part = tuple[pa.Table, pa.Table, pa.Table, I64, I64, I64]


def _tagged(tables: tuple[pa.Table, pa.Table, pa.Table], tag: int) -> _Part:
    r, g, e = tables
    return (r, g, e, np.full(r.num_rows, tag, np.int64), np.full(g.num_rows, tag, np.int64),
            np.full(e.num_rows, tag, np.int64))


def _overlap(inc: Incident, lo: int, hi: int) -> float:
    """Share of the interval ``(lo, hi]`` covered by the incident."""
    return max(0, min(inc.end_s, hi) - max(inc.start_s, lo)) / (hi - lo)


def _table(schema: pa.Schema, cols: list[np.ndarray]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(c, f.type) if f.type != TS else pa.array(c.astype(np.int64, copy=False), TS)
         for c, f in zip(cols, schema, strict=True)], schema=schema)


class _Engine:
    def __init__(self, u: Utility, plan: FaultPlan) -> None:
        self.u, self.plan = u, plan
        ne, nw = u.n_electric, u.n_water
        self.solar = u.solar_idx
        elec = np.arange(ne, dtype=np.int32)
        water = np.arange(ne, ne + nw, dtype=np.int32)
        gas = np.arange(ne + nw, u.n_meters, dtype=np.int32)
        self.reads_layout = Layout.build(u.meter_collector, {
            "del": (elec, _RT["kwh_del"]), "rec": (self.solar, _RT["kwh_rec"]),
            "volts": (elec, _RT["volts"]), "water": (water, _RT["water_m3"]),
            "gas": (gas, _RT["gas_m3"])})
        self.reg_layout = Layout.build(u.meter_collector, {
            "del": (elec, _REG["kwh_del_total"]), "rec": (self.solar, _REG["kwh_rec_total"]),
            "max": (elec, _REG["kw_max"]), "tou_a": (elec, _REG["kwh_del_tou_a"]),
            "tou_b": (elec, _REG["kwh_del_tou_b"]), "water": (water, _REG["water_m3_total"]),
            "gas": (gas, _REG["gas_m3_total"])})
        p = u.params
        r0 = p.register_start
        self.tot_del = r0[:ne].copy()
        self.tou_a = (r0[:ne] * 3) // 10
        self.tou_b = r0[:ne] - self.tou_a
        self.tot_rec = r0[self.solar] // 5
        self.tot_water = r0[ne:ne + nw] // 100
        self.tot_gas = r0[ne + nw:] // 100
        self.day_max = np.zeros(ne, np.int32)
        ss = np.random.SeedSequence([u.seed, 0xC7C1E])
        rs = np.random.default_rng(ss.spawn(1)[0])
        nf = u.feeders.num_rows
        self.f_amp = rs.uniform(0.5, 2.5, nf).astype(np.float32)
        self.f_phase = rs.uniform(0, 2 * np.pi, nf).astype(np.float32)
        self.f_walk = np.zeros(nf, np.float32)
        self.clear = rs.uniform(0.35, 1.0, u.days + 2)
        self.meter_feeder = u.meter_feeder[:ne]
        self.skew = np.zeros(u.n_meters, np.int64)
        for inc in plan.incidents:
            if inc.kind == "clock_skew":
                self.skew[inc.meters] += int(inc.detail["skew_s"])
        self.any_skew = bool(self.skew.any())
        self.frozen: dict[int, npt.NDArray[np.int32]] = {}
        self.held: dict[int, list[_Part]] = {}
        self.pending: list[tuple[int, int, tuple[pa.Table, pa.Table, pa.Table]]] = []
        ev = plan.events
        self.ev_true = ev.column("true_time").to_numpy()
        self.events = ev.select(EVENTS.names).cast(EVENTS)
        self.delivery = [i for i in plan.incidents
                         if i.kind in ("late_upload", "duplicate", "retransmission")]
        self.inc_start = np.array([i.start_s for i in plan.incidents], np.int64)
        self.inc_end = np.array([i.end_s for i in plan.incidents], np.int64)

    # ------------------------------------------------------------------ one cycle
    def cycle(self, c: int) -> Upload:
        u, d = self.u, self.u.interval_s
        hi = u.start_s + c * d
        lo = hi - d
        dh = d / 3600.0
        ne, nw = u.n_electric, u.n_water
        p = u.params
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([u.seed, 0xC7C1E, c])))
        day = (lo - u.start_s) // 86_400
        mo = profiles.moment(lo + d / 2, u.utc_offset_h, float(u.temperature_at(
            np.array([lo + d / 2]))[0]), float(self.clear[day]))

        load = profiles.demand_kw(mo, u.customer_class[:ne], p.base_kw[:ne], p.heat_kw[:ne],
                                  p.cool_kw[:ne], rng.standard_normal(ne, np.float32))
        pv = profiles.pv_kw(mo, p.solar_kw[self.solar],
                            rng.standard_normal(len(self.solar), np.float32))
        self.f_walk *= np.float32(0.97)
        self.f_walk += rng.normal(0, 0.25, len(self.f_walk)).astype(np.float32)
        drift = profiles.feeder_drift_v(mo, self.f_amp, self.f_phase, self.f_walk)
        v = profiles.volts(drift[self.meter_feeder], p.volt_offset[:ne], load,
                           rng.standard_normal(ne, np.float32))
        water = profiles.water_l(mo, p.base_kw[ne:ne + nw], dh, rng.random(nw, np.float32),
                                 rng.standard_exponential(nw, np.float32))
        gas = profiles.gas_l(mo, p.base_kw[ne + nw:], p.heat_kw[ne + nw:], dh,
                             rng.standard_normal(u.n_gas, np.float32))
        dl = load.copy()
        s_load = load[self.solar]
        dl[self.solar] = np.maximum(s_load - pv, 0)
        rec = np.maximum(pv - s_load, 0)

        # ---- faults acting on values (a Python loop per active incident, not per read)
        active = np.flatnonzero((self.inc_start < hi) & (self.inc_end > lo))
        qual: npt.NDArray[np.uint32] | None = None
        drop: npt.NDArray[np.bool_] | None = None
        frac: F32 | None = None
        flat: list[Incident] = []
        for i in active:
            inc = self.plan.incidents[i]
            k, m, f = inc.kind, inc.meters, _overlap(inc, lo, hi)
            if k in ("late_upload", "duplicate", "retransmission", "clock_skew", *OUTAGE_KINDS):
                continue  # delivery kinds act in _deliver; outages below, as a union
            if qual is None:
                qual = np.zeros(u.n_meters, np.uint32)
                drop = np.zeros(u.n_meters, np.bool_)
            assert drop is not None
            if k == "gap":
                drop[m] = True
            elif k == "magnetic_tamper":
                dl[m] *= np.float32(1 - f * (1 - float(inc.detail["factor"])))
                qual[m] |= _Q_TAMPER
            elif k == "cover_removed":
                qual[m] |= _Q_TAMPER
            elif k == "reverse_energy":
                # the meters that have PV get the diverted energy as received; with no
                # PV meter in the utility (small ones) none does
                sm = np.searchsorted(self.solar, m)
                is_s = np.zeros(len(m), np.bool_)
                if len(self.solar):
                    is_s = (sm < len(self.solar)) & (
                        self.solar[np.minimum(sm, len(self.solar) - 1)] == m)
                rec[sm[is_s]] += dl[m[is_s]] * np.float32(f)
                dl[m] *= np.float32(1 - f)
                qual[m] |= _Q_REVERSE
            elif k in ("under_voltage", "over_voltage"):
                v[m] += np.float32(float(inc.detail["delta_v"]) * f)
            elif k == "water_leak":
                water[m - ne] += np.float32(float(inc.detail["rate_lph"]) * dh * f)
            elif k == "spike" and inc.end_s == hi:
                dl[m] *= np.float32(inc.detail["factor"])
            elif k == "flat_line":
                flat.append(inc)
        # ---- outages: the share of (lo, hi] each meter spends without power, from the
        # disjoint per-meter spans of the union of every outage covering it
        po = self.plan.power_off
        on = np.flatnonzero((po.start < hi) & (po.end > lo))
        if len(on):
            cut = np.minimum(po.end[on], hi) - np.maximum(po.start[on], lo)
            dark = np.bincount(po.meter[on], weights=cut, minlength=ne)[:ne]
            frac = (1 - dark / d).astype(np.float32)
            if qual is None:
                qual = np.zeros(u.n_meters, np.uint32)
                drop = np.zeros(u.n_meters, np.bool_)
        if frac is not None:
            assert qual is not None and drop is not None
            dl *= frac
            rec *= frac[self.solar]
            dead = frac <= 0
            drop[:ne] |= dead
            qual[:ne][(frac < 1) & ~dead] |= _Q_POWER_FAIL

        wh = np.float32(dh * 1000.0)
        del_wh = np.rint(dl * wh).astype(np.int32)
        rec_wh = np.rint(rec * wh).astype(np.int32)
        for inc in flat:
            key = id(inc)
            if key not in self.frozen:
                self.frozen[key] = del_wh[inc.meters].copy()
            del_wh[inc.meters] = self.frozen[key]
        volts_dv = np.rint(v * np.float32(10.0)).astype(np.int32)
        water_l = np.rint(water).astype(np.int32)
        gas_l = np.rint(gas).astype(np.int32)

        # ---- registers (the meter counts what it measures, delivered or not)
        registers = self._registers(lo, c) if c == 1 else None
        self.tot_del += del_wh
        peak = (not mo.weekend) and 16.0 <= mo.hour < 21.0
        (self.tou_a if peak else self.tou_b)[:] += del_wh
        self.tot_rec += rec_wh
        self.tot_water += water_l
        self.tot_gas += gas_l
        np.maximum(self.day_max, del_wh, out=self.day_max)
        if (hi - u.start_s) % 86_400 == 0:
            snap = self._registers(hi, c, drop)
            registers = snap if registers is None else pa.concat_tables([registers, snap])
            self.day_max[:] = 0

        # ---- reads table
        L = self.reads_layout
        values = np.empty(len(L.row_meter), np.int32)
        values[L.pos["del"]] = del_wh
        values[L.pos["rec"]] = rec_wh
        values[L.pos["volts"]] = volts_dv
        values[L.pos["water"]] = water_l
        values[L.pos["gas"]] = gas_l
        rm, rt = L.row_meter, L.row_type
        quality = np.zeros(len(rm), np.uint32) if qual is None else qual[rm]
        if drop is not None and drop.any():
            keep = ~drop[rm]
            rm, rt, values, quality = rm[keep], rt[keep], values[keep], quality[keep]
        reads = _table(READS, [rm, rt, np.full(len(rm), hi, np.int64), values, quality])
        if registers is None:
            registers = REGISTERS.empty_table()
        a, b = np.searchsorted(self.ev_true, [lo, hi], side="right")
        events = self.events.slice(a, b - a)
        return self._deliver(c, hi, reads, registers, events)

    def _registers(self, t: int, c: int, drop: npt.NDArray[np.bool_] | None = None) -> pa.Table:
        """Register snapshot at ``t``; meters without power or link at ``t`` send none."""
        L = self.reg_layout
        vals = np.empty(len(L.row_meter), np.int64)
        vals[L.pos["del"]] = self.tot_del
        vals[L.pos["rec"]] = self.tot_rec
        vals[L.pos["max"]] = self.day_max.astype(np.int64) * 3600 // self.u.interval_s
        vals[L.pos["tou_a"]] = self.tou_a
        vals[L.pos["tou_b"]] = self.tou_b
        vals[L.pos["water"]] = self.tot_water
        vals[L.pos["gas"]] = self.tot_gas
        rm, rt = L.row_meter, L.row_type
        keep = None
        if t == self.u.start_s:  # no day behind the first snapshot: no maximum demand
            keep = rt != _REG["kw_max"]
        if drop is not None and drop.any():
            keep = ~drop[rm] if keep is None else keep & ~drop[rm]
        if keep is not None:
            rm, rt, vals = rm[keep], rt[keep], vals[keep]
        when = t + self.skew[rm] if self.any_skew else np.full(len(rm), t, np.int64)
        return _table(REGISTERS, [rm, rt, when, vals])

    # ------------------------------------------------------------------ delivery
    def _deliver(self, c: int, hi: int, reads: pa.Table, registers: pa.Table,
                 events: pa.Table) -> Upload:
        u = self.u
        tag0 = c * 4 + TAG_NORMAL
        parts = [_tagged((reads, registers, events), tag0)]
        final = c == u.n_cycles
        late = [i for i in self.delivery if i.kind == "late_upload" and i.start_s <= hi < i.end_s
                and not final]
        for inc in self.delivery:
            if inc.kind in ("duplicate", "retransmission") and inc.start_s == hi:
                sel = self._of_collectors(parts[0][:3], [int(inc.detail["collector"])])
                kind = TAG_DUPLICATE if inc.kind == "duplicate" else TAG_RETRANSMISSION
                self.pending.append((inc.end_s, c * 4 + kind, sel))
        if late:
            cols = [int(i.detail["collector"]) for i in late]
            held = self._of_collectors(parts[0][:3], cols)
            rest = self._of_collectors(parts[0][:3], cols, invert=True)
            for inc in late:
                one = self._of_collectors(held, [int(inc.detail["collector"])])
                self.held.setdefault(id(inc), []).append(_tagged(one, tag0))
            parts[0] = _tagged(rest, tag0)
        for inc in self.delivery:
            if inc.kind == "late_upload" and (inc.end_s <= hi or final) and id(inc) in self.held:
                parts += reversed(self.held.pop(id(inc)))  # newest first: out of order
        still = []
        for when, tag, sel in self.pending:
            if when <= hi or final:
                parts.append(_tagged(sel, tag))
            else:
                still.append((when, tag, sel))
        self.pending = still
        if len(parts) == 1:
            r, g, e, tr, tg, te = parts[0]
        else:
            r = pa.concat_tables([x[0] for x in parts])
            g = pa.concat_tables([x[1] for x in parts])
            e = pa.concat_tables([x[2] for x in parts])
            tr, tg, te = (np.concatenate([x[k] for x in parts]) for k in (3, 4, 5))
        return Upload(c, dt.datetime.fromtimestamp(hi, dt.UTC), r, g, e, tr, tg, te)

    def _of_collectors(self, tables: tuple[pa.Table, pa.Table, pa.Table], colls: list[int],
                       invert: bool = False) -> tuple[pa.Table, pa.Table, pa.Table]:
        mc = self.u.meter_collector
        out = []
        for t in tables:
            hit = np.isin(mc[t.column("meter_idx").to_numpy()], colls)
            out.append(t.filter(pa.array(~hit if invert else hit)))
        return out[0], out[1], out[2]


def iter_uploads(utility: Utility, faults: Faults | FaultPlan | None = None) -> Iterator[Upload]:
    """Yield the :class:`Upload` of every interval boundary of the simulated days.

    Parameters
    ----------
    utility : Utility
    faults : Faults or FaultPlan, optional
        Scenarios to inject; a :class:`Faults` is resolved with the utility's seed.

    Yields
    ------
    Upload
        Unpacks as ``(cycle_time, reads, registers, events)``.
    """
    plan = faults if isinstance(faults, FaultPlan) else (faults or Faults()).resolve(utility)
    eng = _Engine(utility, plan)
    for c in range(1, utility.n_cycles + 1):
        yield eng.cycle(c)
