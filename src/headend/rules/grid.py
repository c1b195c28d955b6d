"""Grid rules: service voltage (ANSI C84.1), transformer overload, silent meters.

References
----------
ANSI C84.1-2020, Table 1: Range A 114-126 V and Range B 110-127 V at the service
point on a 120 V base (scaled to 208, 240, 277, 480 V services).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from headend._grouping import unique_inverse
from headend.errors import ConfigError
from headend.model import codes
from headend.rules.alerts import Alarm, record_id
from headend.rules.base import Chunk, Context, Output, alarms_from_runs
from headend.rules.config import OverloadConfig, SilentConfig, VoltageConfig
from headend.rules.topology import METER, TRANSFORMER, Topology
from headend.rules.windows import RunState, sort_by_key_time

__all__ = [
    "RATINGS_FILE",
    "RATINGS_HEADER",
    "OverloadRule",
    "SilentRule",
    "VoltageRule",
    "load_ratings",
]

VOLTS = codes.READING_TYPE_BY_NAME["volts"]
KWH = codes.READING_TYPE_BY_NAME["kwh_del"]
#: canonical CSV of transformer ratings, kept at ``<data>/transformer_ratings.csv``
RATINGS_FILE = "transformer_ratings.csv"
RATINGS_HEADER = ("transformer_id", "rating_kva")
_SIDES = ("below", "above")
#: full scans for silence (all meters) run at most once per this much event time [s]
SCAN_S = 300


def load_ratings(path: Path) -> dict[str, float]:
    """Read ``transformer_id,rating_kva`` [kVA]; missing file: empty mapping.

    Files with ``transformer_id`` and ``kva`` columns among others (the simulator's
    ``transformers.csv``) are read too.

    Raises
    ------
    ConfigError
        Wrong header, or a rating that is not a positive number.
    """
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    head = [h.strip() for h in rows[0]] if rows else []
    kcol = next((head.index(k) for k in ("rating_kva", "kva") if k in head), None)
    if "transformer_id" not in head or kcol is None:
        raise ConfigError(f"{path}: header must be {','.join(RATINGS_HEADER)} "
                          "(or hold transformer_id and kva columns)")
    tcol = head.index("transformer_id")
    out: dict[str, float] = {}
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            kva = float(row[kcol])
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"{path}:{i}: bad rating {row!r}") from exc
        if not kva > 0:
            raise ConfigError(f"{path}:{i}: rating must be positive")
        out[row[tcol].strip()] = kva
    return out


def _group_first(key: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    f = np.ones(len(key), np.bool_)
    f[1:] = key[1:] != key[:-1]
    return f


class VoltageRule:
    """Voltage outside Range A/B for ``duration_s``, per meter and per transformer.

    State: the service voltage of each meter (nearest configured nominal to its first
    reading) and open excursions per meter and per transformer.
    """

    kind = "voltage"

    def __init__(self, name: str, cfg: VoltageConfig) -> None:
        self.name, self.cfg = name, cfg
        self.service = np.zeros(0, np.float32)
        # open excursions per direction, per meter and per transformer
        self.runs = {(d, lv): RunState() for d in _SIDES for lv in ("m", "t")}

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        if len(self.service) < topo.n:
            self.service = np.concatenate([self.service, np.zeros(topo.n - len(self.service),
                                                                  np.float32)])
        m, t, v, _ = c.reads_of(VOLTS.code)
        if len(m) == 0:
            return Output()
        volts = v.astype(np.float64) * VOLTS.resolution
        first = _group_first(m)
        new = first & (self.service[m] == 0)
        noms = np.asarray(self.cfg.service_voltages)
        self.service[m[new]] = noms[np.argmin(np.abs(volts[new, None] - noms[None, :]), axis=1)]
        lo, hi = self.cfg.limits()
        scale = self.service[m].astype(np.float64) / 120.0
        rng = f"ANSI C84.1 Range {self.cfg.range} ({lo:g}-{hi:g} V on 120 V base)"
        iv = topo.interval_s[m].astype(np.int64)
        tx = topo.device[TRANSFORMER][m]
        ok = tx >= 0
        alarms: list[Alarm] = []
        if ok.any():  # roll-up: share of a transformer's meters outside, per interval end
            uniq, inv = unique_inverse((tx[ok].astype(np.int64) << 32) | t[ok])
            gk, gt = uniq >> 32, uniq & 0xFFFFFFFF
            size = topo.size(TRANSFORMER)[gk]
        for side, flag in (("below", volts < lo * scale), ("above", volts > hi * scale)):
            runs = self.runs[side, "m"].update(m, t, flag, iv)
            alarms += alarms_from_runs(self.name, METER, topo, runs, topo.interval_s[runs.key],
                                       self.cfg.duration_s, f"voltage {side} {rng}",
                                       ("reads:volts",), side)
            if not ok.any():
                continue
            n_flag = np.bincount(inv, weights=flag[ok], minlength=len(uniq))
            gflag = (n_flag >= self.cfg.transformer_ratio * size) & (
                n_flag >= self.cfg.transformer_min_meters)
            tiv = topo.max_interval_s
            truns = self.runs[side, "t"].update(gk, gt, gflag, tiv)
            alarms += alarms_from_runs(self.name, TRANSFORMER, topo, truns, tiv,
                                       self.cfg.duration_s, f"transformer voltage {side} {rng}",
                                       ("reads:volts", "topology"), side)
        return Output(alarms=alarms)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service}
        for (side, lv), rs in self.runs.items():
            out.update({f"{side}_{lv}_{k}": v for k, v in rs.snapshot().items()})
        return out

    def restore(self, s: dict[str, Any]) -> None:
        self.service = np.array(s["service"], np.float32)
        for (side, lv), rs in self.runs.items():
            rs.restore({k: s[f"{side}_{lv}_{k}"] for k in ("start", "last")})


class OverloadRule:
    """Sum of a transformer's meters' demand above its rating for N intervals.

    Demand [kW] of an interval = energy [kWh] * 3600 / interval [s]; the limit is
    ``rating_kva * power_factor * load_ratio``. Ratings come from
    ``<data>/transformer_ratings.csv`` (:func:`load_ratings`); a transformer without one
    is not checked unless ``default_kva_per_meter`` is configured.
    """

    kind = "transformer_overload"

    def __init__(self, name: str, cfg: OverloadConfig) -> None:
        self.name, self.cfg = name, cfg
        self.runs = RunState()
        self._rating: npt.NDArray[np.float64] | None = None
        self._key: tuple[int, int] = (-1, -1)

    def _ratings(self, topo: Topology, ratings: dict[str, float]) -> npt.NDArray[np.float64]:
        key = (id(topo), id(ratings))
        if self._rating is None or self._key != key:
            size = topo.size(TRANSFORMER).astype(np.float64)
            per = self.cfg.default_kva_per_meter
            r = size * per if per is not None else np.full(len(size), np.inf)
            for i, name in enumerate(topo.names[TRANSFORMER]):
                if name in ratings:
                    r[i] = ratings[name]
            self._rating, self._key = r, key
        return self._rating

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        m, t, v, _ = c.reads_of(KWH.code)
        tx = topo.device[TRANSFORMER][m]
        ok = tx >= 0
        if not ok.any():
            return Output()
        kw = v[ok].astype(np.float64) * KWH.resolution * 3600.0 / topo.interval_s[m[ok]]
        packed = (tx[ok].astype(np.int64) << 32) | t[ok]
        uniq, inv = unique_inverse(packed)
        load = np.bincount(inv, weights=kw, minlength=len(uniq))
        gk, gt = uniq >> 32, uniq & 0xFFFFFFFF
        rating = self._ratings(topo, ctx.ratings)
        limit = rating[gk] * self.cfg.power_factor * self.cfg.load_ratio
        iv = topo.typical_interval_s
        runs = self.runs.update(gk, gt, load > limit, iv)
        alarms = alarms_from_runs(self.name, TRANSFORMER, topo, runs, iv,
                                  self.cfg.intervals * iv, "demand above transformer rating",
                                  ("reads:kwh_del", "topology", "transformer_ratings"))
        return Output(alarms=alarms)

    def snapshot(self) -> dict[str, Any]:
        return self.runs.snapshot()

    def restore(self, s: dict[str, Any]) -> None:
        self.runs.restore(s)


class SilentRule:
    """No report (read or event) for ``intervals`` intervals, outside any outage.

    A meter in an open outage (per the engine's outage rule) is out, not silent. A
    meter that never reported counts from the engine's first watermark.
    """

    kind = "silent_meter"

    def __init__(self, name: str, cfg: SilentConfig) -> None:
        self.name, self.cfg = name, cfg
        self.last = np.zeros(0, np.int64)
        self.since = np.zeros(0, np.int64)  # start of the open silent alarm, 0 none
        self.origin = 0
        self._scanned = 0  # watermark of the last full scan
        self._lim: tuple[int, npt.NDArray[np.int64]] = (-1, np.zeros(0, np.int64))

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo = ctx.topology
        n = topo.n
        if len(self.last) < n:
            pad = n - len(self.last)
            self.last = np.concatenate([self.last, np.zeros(pad, np.int64)])
            self.since = np.concatenate([self.since, np.zeros(pad, np.int64)])
        if self.origin == 0:
            self.origin = c.wm_prev if c.wm_prev > 0 else int(
                min(c.r_time.min(initial=c.wm), c.e_time.min(initial=c.wm)))
        mm = np.concatenate([c.r_meter, c.e_meter])
        tt = np.concatenate([c.r_time, c.e_time])
        alarms: list[Alarm] = []
        back = np.flatnonzero(self.since[mm] > 0)  # silent meters heard again
        if len(back):
            o = sort_by_key_time(mm[back], tt[back])
            bm, bt = mm[back][o], tt[back][o]
            first = _group_first(bm)
            for i, t in zip(bm[first].tolist(), bt[first].tolist(), strict=True):
                alarms.append(self._alarm(topo, i, int(self.since[i]), t))
            self.since[bm] = 0
        np.maximum.at(self.last, mm, tt)
        # the O(meters) scan runs once per SCAN_S of event time, not per batch
        if c.wm // SCAN_S == self._scanned // SCAN_S:
            return Output(alarms=alarms)
        self._scanned = c.wm
        if self._lim[0] != id(topo):
            self._lim = (id(topo), self.cfg.intervals * topo.interval_s.astype(np.int64))
        base = np.where(self.last > 0, self.last, self.origin)
        out = ctx.out_meters()
        silent = topo.registered & ~topo.disconnected & (c.wm - base > self._lim[1]) & (
            self.since == 0)
        if out is not None:
            silent &= ~out[:n]
        for i in np.flatnonzero(silent).tolist():
            self.since[i] = base[i]
            alarms.append(self._alarm(topo, i, int(base[i]), None))
        return Output(alarms=alarms)

    def _alarm(self, topo: Topology, i: int, start: int, end: int | None) -> Alarm:
        mid = topo.meter_id[i]
        return Alarm(record_id(self.name, "meter", mid, start), self.name, "meter", mid, start,
                     end, f"no report for more than {self.cfg.intervals} intervals",
                     ("reads:interval_end", "events:event_time"))

    def snapshot(self) -> dict[str, Any]:
        return {"last": self.last, "since": self.since,
                "scalars": np.array([self.origin, self._scanned])}

    def restore(self, s: dict[str, Any]) -> None:
        self.last, self.since = np.array(s["last"]), np.array(s["since"])
        self.origin, self._scanned = (int(x) for x in s["scalars"])
