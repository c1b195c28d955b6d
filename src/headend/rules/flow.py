"""Water and gas rules, and the two generic declarative kinds (``threshold``, ``event_count``).

* water leak: flow of at least ``min_m3`` in every interval for ``duration_s`` (24 h);
* gas abnormal flow: volume over a sliding ``window_s`` above ``max_m3``;
* threshold: an aggregate (sum, mean, max, min) of one reading type per meter or device
  and tumbling window, compared with a limit, for ``for_windows`` windows in a row;
* event_count: at least ``count`` events with given codes per meter or device within
  ``window_s`` (session window).

Windows spanning a chunk boundary are completed with a small carried buffer (only rows
of the reading type concerned, at most one window long).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from headend._grouping import unique_inverse
from headend.model import codes
from headend.rules.alerts import Alarm, record_id
from headend.rules.base import Chunk, Context, Output, alarms_from_runs
from headend.rules.config import EventCountConfig, GasFlowConfig, LeakConfig, ThresholdConfig
from headend.rules.topology import LEVEL_NAMES, METER
from headend.rules.windows import RunState, session_ids, sliding_sum, sort_by_key_time

__all__ = ["EventCountRule", "GasFlowRule", "LeakRule", "ThresholdRule"]

WATER = codes.READING_TYPE_BY_NAME["water_m3"]
GAS = codes.READING_TYPE_BY_NAME["gas_m3"]
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
Arr = npt.NDArray[Any]


class _Carry:
    """Rows (key, time, value) kept between chunks for windows still open."""

    def __init__(self) -> None:
        self.k = np.zeros(0, np.int64)
        self.t = np.zeros(0, np.int64)
        self.v = np.zeros(0, np.float64)

    def merge(self, k: Arr, t: Arr, v: Arr) -> tuple[Arr, Arr, Arr, int]:
        """Carried rows first, then new ones, sorted by (key, time); returns the count of
        carried rows so callers can tell new rows apart (``is_new``)."""
        kk = np.concatenate([self.k, k.astype(np.int64)])
        tt = np.concatenate([self.t, t.astype(np.int64)])
        vv = np.concatenate([self.v, v.astype(np.float64)])
        return kk, tt, vv, len(self.k)

    def keep(self, k: Arr, t: Arr, v: Arr, mask: Arr) -> None:
        self.k, self.t, self.v = k[mask], t[mask], v[mask]

    def snapshot(self) -> dict[str, Arr]:
        return {"k": self.k, "t": self.t, "v": self.v}

    def restore(self, s: dict[str, Arr]) -> None:
        self.k, self.t, self.v = np.array(s["k"]), np.array(s["t"]), np.array(s["v"])


class LeakRule:
    kind = "water_leak"

    def __init__(self, name: str, cfg: LeakConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        m, t, v, _ = c.reads_of(WATER.code)
        flag = v.astype(np.float64) * WATER.resolution >= self.cfg.min_m3
        iv = topo.interval_s[m].astype(np.int64)
        runs = self.runs.update(m, t, flag, iv)
        return Output(alarms=alarms_from_runs(
            self.name, METER, topo, runs, topo.interval_s[runs.key].astype(np.int64),
            self.cfg.duration_s, "continuous water flow (leak suspected)", ("reads:water_m3",)))

    def snapshot(self) -> dict[str, Arr]:
        return self.runs.snapshot()

    def restore(self, s: dict[str, Arr]) -> None:
        self.runs.restore(s)


class GasFlowRule:
    kind = "gas_flow"

    def __init__(self, name: str, cfg: GasFlowConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()
        self.carry = _Carry()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        m, t, v, _ = c.reads_of(GAS.code)
        k, tt, vv, n_old = self.carry.merge(m, t, v.astype(np.float64) * GAS.resolution)
        o = sort_by_key_time(k, tt)
        is_new = o >= n_old
        k, tt, vv = k[o], tt[o], vv[o]
        flow = sliding_sum(k, tt, vv, self.cfg.window_s)
        self.carry.keep(k, tt, vv, tt > c.wm - self.cfg.window_s)
        kn, tn = k[is_new], tt[is_new]
        runs = self.runs.update(kn, tn, flow[is_new] > self.cfg.max_m3,
                                topo.interval_s[kn].astype(np.int64))
        return Output(alarms=alarms_from_runs(
            self.name, METER, topo, runs, topo.interval_s[runs.key].astype(np.int64), 0,
            f"gas flow above {self.cfg.max_m3:g} m3 per {self.cfg.window_s // 60} min",
            ("reads:gas_m3",)))

    def snapshot(self) -> dict[str, Arr]:
        return {**self.runs.snapshot(), **{f"c_{a}": b for a, b in self.carry.snapshot().items()}}

    def restore(self, s: dict[str, Arr]) -> None:
        self.runs.restore(s)
        self.carry.restore({"k": s["c_k"], "t": s["c_t"], "v": s["c_v"]})


class ThresholdRule:
    """Generic tumbling-window threshold (see :class:`~headend.rules.config.ThresholdConfig`)."""

    kind = "threshold"

    def __init__(self, name: str, cfg: ThresholdConfig) -> None:
        self.name, self.cfg = name, cfg
        self.rt = codes.READING_TYPE_BY_NAME[cfg.reading_type]
        self.level = LEVEL_NAMES.index(cfg.by)
        self.runs = RunState()
        self.carry = _Carry()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo, w = ctx.topology, self.cfg.window_s
        m, t, v, _ = c.reads_of(self.rt.code)
        key = topo.device[self.level][m]
        ok = key >= 0
        k, tt, vv, _n = self.carry.merge(key[ok], t[ok], v[ok] * self.rt.resolution)
        wend = -(-tt // w) * w
        done = wend <= c.wm  # windows that can no longer grow
        self.carry.keep(k, tt, vv, ~done)
        k, wend, vv = k[done], wend[done], vv[done]
        packed = (k << 32) | wend
        uniq, inv = unique_inverse(packed)
        agg = self.cfg.agg
        val: npt.NDArray[np.float64]
        if agg in ("sum", "mean"):
            val = np.bincount(inv, weights=vv, minlength=len(uniq)).astype(np.float64).astype(np.float64)
            if agg == "mean":
                val = val / np.bincount(inv, minlength=len(uniq))
        else:
            fill = -np.inf if agg == "max" else np.inf
            val = np.full(len(uniq), fill)
            (np.maximum if agg == "max" else np.minimum).at(val, inv, vv)
        flag = _OPS[self.cfg.op](val, self.cfg.value)
        runs = self.runs.update(uniq >> 32, uniq & 0xFFFFFFFF, flag, w)
        return Output(alarms=alarms_from_runs(
            self.name, self.level, topo, runs, w, self.cfg.for_windows * w,
            f"{agg} of {self.rt.name} per {w // 60} min {self.cfg.op} {self.cfg.value:g} "
            f"{self.rt.unit}", (f"reads:{self.rt.name}",)))

    def snapshot(self) -> dict[str, Arr]:
        return {**self.runs.snapshot(), **{f"c_{a}": b for a, b in self.carry.snapshot().items()}}

    def restore(self, s: dict[str, Arr]) -> None:
        self.runs.restore(s)
        self.carry.restore({"k": s["c_k"], "t": s["c_t"], "v": s["c_v"]})


class EventCountRule:
    """Generic: ``count`` events within a session window per key."""

    kind = "event_count"

    def __init__(self, name: str, cfg: EventCountConfig) -> None:
        self.name, self.cfg = name, cfg
        self.codes = np.array([codes.pack_event_code(x) for x in cfg.event_codes], np.uint32)
        self.level = LEVEL_NAMES.index(cfg.by)
        self.carry = _Carry()

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        m, t, _ = c.events_of(self.codes)
        key = topo.device[self.level][m]
        ok = key >= 0
        k, tt, vv, _n = self.carry.merge(key[ok], t[ok], np.ones(int(ok.sum())))
        o = sort_by_key_time(k, tt)
        k, tt, vv = k[o], tt[o], vv[o]
        sid = session_ids(k, tt, self.cfg.window_s)
        alarms: list[Alarm] = []
        if len(sid) == 0:
            return Output()
        cnt = np.bincount(sid)
        lo = np.searchsorted(sid, np.arange(len(cnt)))
        hi = np.r_[lo[1:], len(sid)] - 1
        # keep every event of a session that may still grow
        self.carry.keep(k, tt, vv, (tt[hi] > c.wm - self.cfg.window_s)[sid])
        names = topo.names[self.level]
        codes_s = ",".join(self.cfg.event_codes)
        for s in np.flatnonzero(cnt >= self.cfg.count).tolist():
            dev, st = names[int(k[lo[s]])], int(tt[lo[s]])
            open_ = tt[hi[s]] > c.wm - self.cfg.window_s
            alarms.append(Alarm(record_id(self.name, self.cfg.by, dev, st), self.name,
                                self.cfg.by, dev, st, None if open_ else int(tt[hi[s]]),
                                f"{int(cnt[s])} events {codes_s}",
                                tuple(f"events:{x}" for x in self.cfg.event_codes)))
        return Output(alarms=alarms)

    def snapshot(self) -> dict[str, Arr]:
        return self.carry.snapshot()

    def restore(self, s: dict[str, Arr]) -> None:
        self.carry.restore(s)
