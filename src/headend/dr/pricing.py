"""Pricing interval reads with a tariff, and billing determinants (pure NumPy/Arrow).

:func:`interval_kwh` turns stored reads (:data:`headend.model.schema.READS`) into the
table this module prices (:data:`INTERVAL_KWH`); :func:`price_intervals` gives each
interval its tariff version, period, tier, price and cost; :func:`determinants` sums
them per meter and billing period (a local calendar month of the tariff's time zone).

Rules (docs/dr.md, "Pricing"):

* an interval belongs to the version in effect at its **start** (``interval_end -
  interval_s``): the latest version whose ``effective_from`` (local midnight) is at or
  before it; an interval before every version is not priced (null version, NaN price);
* its period is that of the local minute, day type and month of its start; on a
  critical-peak day the critical window overrides the period; a real-time price is the
  step holding at its start (NaN before the first step);
* tiers split the kWh of a meter's billing period in time order: the interval that
  crosses a bound has its kWh split between the two tiers, each priced with its adder;
* peak demand of an interval is ``kwh * 3600 / interval_s`` [kW]; the month's is the
  maximum (the earliest interval of it); the demand and fixed charges of a month are
  those of the version in effect at its last priced interval.

Everything is vectorised: loops run over versions, seasons, periods and tiers, never
over reads or meters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.dr.tariff import ALL_DAY_TYPES, Tariff, minutes_of
from headend.model import codes, dr
from headend.model.schema import TS
from headend.vee.grid import local_seconds

__all__ = ["DETERMINANTS_ENERGY", "DETERMINANTS_SUMMARY", "INTERVAL_KWH", "PRICED",
           "determinants", "interval_kwh", "price_intervals"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: what :func:`price_intervals` prices: energy per interval
INTERVAL_KWH = pa.schema([
    pa.field("meter_idx", pa.int32(), nullable=False),
    pa.field("interval_end", TS, nullable=False),
    pa.field("interval_s", pa.int32(), nullable=False),
    pa.field("kwh", pa.float64(), nullable=False),
])

#: :data:`INTERVAL_KWH` plus what pricing adds (``tier``: the tier the interval ends in)
PRICED = pa.schema([
    *INTERVAL_KWH,
    pa.field("version", pa.int32()),
    pa.field("billing_period", pa.string()),
    pa.field("period", pa.string()),
    pa.field("tier", pa.int8()),
    pa.field("price", pa.float64()),  # [currency/kWh], tier adders blended in
    pa.field("cost", pa.float64()),
])

#: kWh and cost per meter, billing period, period and tier
DETERMINANTS_ENERGY = pa.schema([
    pa.field("meter_idx", pa.int32()), pa.field("billing_period", pa.string()),
    pa.field("period", pa.string()), pa.field("tier", pa.int8()),
    pa.field("kwh", pa.float64()), pa.field("cost", pa.float64())])

#: one row per meter and billing period
DETERMINANTS_SUMMARY = pa.schema([
    pa.field("meter_idx", pa.int32()), pa.field("billing_period", pa.string()),
    pa.field("version", pa.int32()),
    pa.field("kwh", pa.float64()), pa.field("max_kw", pa.float64()),
    pa.field("max_interval_end", TS),
    pa.field("energy_cost", pa.float64()), pa.field("demand_cost", pa.float64()),
    pa.field("fixed_cost", pa.float64()), pa.field("total_cost", pa.float64())])


def interval_kwh(reads: pa.Table, interval_s: npt.NDArray[np.int32], *,
                 reading_type: int = 0) -> pa.Table:
    """Reads of one reading type as :data:`INTERVAL_KWH`.

    Parameters
    ----------
    reads : pyarrow.Table
        :data:`headend.model.schema.READS` rows (e.g. ``scan_reads`` or the current VEE
        reads).
    interval_s : ndarray of int32
        Interval length of each meter [s], indexed by ``meter_idx``.
    reading_type : int
        Code of the energy reading type (default ``kwh_del``).
    """
    r = reads.filter(pc.equal(reads.column("reading_type"), reading_type))
    res = codes.READING_TYPES[reading_type].resolution
    m = r.column("meter_idx").to_numpy()
    return pa.table({
        "meter_idx": pa.array(m, pa.int32()),
        "interval_end": r.column("interval_end").cast(TS),
        "interval_s": pa.array(np.asarray(interval_s, np.int32)[m], pa.int32()),
        "kwh": pa.array(r.column("value").to_numpy().astype(np.float64) * res),
    }, schema=INTERVAL_KWH)


def _utc_midnight(d: Any, tz: str) -> int:
    return int(datetime.combine(d, time(0), tzinfo=ZoneInfo(tz)).timestamp())


def _local_fields(start: I64, tz: str) -> tuple[I64, I64, I64, I64, npt.NDArray[np.datetime64]]:
    """Local (minute of day, weekday Mon=0, month 1..12, year*12+month-1, date) of
    each instant."""
    loc = local_seconds(start, tz)
    day = np.floor_divide(loc, 86_400)
    minute = (loc - day * 86_400) // 60
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    d = day.astype("datetime64[D]")
    ym = d.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    return minute, weekday, ym % 12 + 1, ym, d


def _period_lut(t: Tariff, names: dict[str, int]) -> tuple[npt.NDArray[np.int16], F64]:
    """(season, day type, minute) -> period code, and -> price (a period name may have
    another price in another season)."""
    shape = (max(len(t.seasons), 1), 3, 1440)
    lut = np.full(shape, -1, np.int16)
    price = np.full(shape, np.nan)
    for si, s in enumerate(t.seasons):
        timed = [p for p in s.periods if p.start is not None and p.end is not None]
        untimed = [p for p in s.periods if p.start is None]
        for p in timed + untimed:  # untimed periods take what the timed ones left
            for di, day_type in enumerate(ALL_DAY_TYPES):
                if day_type not in p.day_types:
                    continue
                if p.start is None or p.end is None:
                    cells = lut[si, di] < 0
                    lut[si, di, cells] = names[p.name]
                    price[si, di, cells] = p.price
                    continue
                for a, b in minutes_of(p.start, p.end):
                    lut[si, di, a:b] = names[p.name]
                    price[si, di, a:b] = p.price
    return lut, price


def _period_names(tariffs: Sequence[Tariff]) -> dict[str, int]:
    names = {dr.FLAT_PERIOD: 0, dr.CRITICAL_PEAK_PERIOD: 1, dr.REAL_TIME_PERIOD: 2}
    for t in tariffs:
        for s in t.seasons:
            for p in s.periods:
                names.setdefault(p.name, len(names))
    return names


def _base_price(t: Tariff, start: I64, names: dict[str, int]) -> tuple[npt.NDArray[np.int16], F64]:
    """Period code and energy price [currency/kWh] of intervals starting at ``start``."""
    n = len(start)
    if t.kind == "flat":
        assert t.price is not None
        return np.full(n, names[dr.FLAT_PERIOD], np.int16), np.full(n, t.price)
    if t.kind == "rtp":
        assert t.real_time is not None
        steps = np.array([int(p.start.timestamp()) for p in t.real_time.prices], np.int64)
        values = np.array([p.price for p in t.real_time.prices]) + t.real_time.adder
        i = np.searchsorted(steps, start, side="right") - 1
        price = np.where(i >= 0, values[np.maximum(i, 0)], np.nan)
        return np.full(n, names[dr.REAL_TIME_PERIOD], np.int16), price
    minute, weekday, month, _, d = _local_fields(start, t.timezone)
    holiday = np.isin(d, np.array(t.holidays, dtype="datetime64[D]"))
    day_type = np.where(holiday, 2, np.where(weekday >= 5, 1, 0))
    season = np.array(t.season_of_month(), np.int64)[month]
    lut, prices = _period_lut(t, names)
    code = lut[season, day_type, minute]
    price = prices[season, day_type, minute]
    cp = t.critical_peak
    if cp is not None and cp.days and cp.start is not None and cp.end is not None:
        on = np.isin(d, np.array(cp.days, dtype="datetime64[D]"))
        inside = np.zeros(n, np.bool_)
        for a, b in minutes_of(cp.start, cp.end):
            inside |= (minute >= a) & (minute < b)
        crit = on & inside
        code = np.where(crit, np.int16(names[dr.CRITICAL_PEAK_PERIOD]), code)
        price = np.where(crit, cp.price, price)
    return code.astype(np.int16), price


def _version_of(tariffs: Sequence[Tariff], start: I64) -> I64:
    """Index into ``tariffs`` (sorted by version) in effect at each start; -1 if none."""
    eff = np.array([_utc_midnight(t.effective_from, t.timezone) for t in tariffs], np.int64)
    out: I64 = np.searchsorted(eff, start, side="right") - 1
    return out


def _group_starts(key: I64) -> npt.NDArray[np.bool_]:
    first: npt.NDArray[np.bool_] = np.r_[True, key[1:] != key[:-1]] if len(key) else \
        np.zeros(0, np.bool_)
    return first


@dataclass(frozen=True, slots=True)
class _Priced:
    """The arrays of a priced table, sorted by meter and interval end."""

    meter: npt.NDArray[np.int32]
    end: I64
    ivl: I64
    kwh: F64
    vi: I64  # index into versions, -1: no version in effect
    ym: I64  # local billing month, months since 1970-01
    code: npt.NDArray[np.int16]  # period code (index into names)
    base: F64  # energy price [currency/kWh] without tier adders
    tier_kwh: F64  # (tiers, n): kWh of each interval in each tier (1 row: no tiers)
    tier_adder: F64  # (tiers, n): the adder of each tier for each interval
    names: tuple[str, ...]
    versions: tuple[Tariff, ...]

    @property
    def cost(self) -> F64:
        out: F64 = self.kwh * self.base + (self.tier_kwh * self.tier_adder).sum(axis=0)
        return out

    @property
    def tier(self) -> npt.NDArray[np.int8]:
        """The tier each interval ends in (the last with kWh of it)."""
        has = self.tier_kwh > 0
        j = np.where(has.any(axis=0),
                     self.tier_kwh.shape[0] - 1 - np.argmax(has[::-1], axis=0), 0)
        return j.astype(np.int8)


def _price(tariffs: Sequence[Tariff], intervals: pa.Table) -> _Priced:
    if not tariffs:
        raise ValueError("no tariff version to price with")
    if len({t.tariff_id for t in tariffs}) != 1:
        raise ValueError("versions of several tariffs given")
    vs = tuple(sorted(tariffs, key=lambda t: t.version))
    m = intervals.column("meter_idx").to_numpy()
    end = intervals.column("interval_end").cast(pa.int64()).to_numpy()
    ivl = intervals.column("interval_s").to_numpy().astype(np.int64)
    kwh = intervals.column("kwh").to_numpy().astype(np.float64)
    order = np.lexsort((end, m))
    m, end, ivl, kwh = m[order], end[order], ivl[order], kwh[order]
    start = end - ivl
    n = len(m)
    names = _period_names(vs)
    vi = _version_of(vs, start)
    code = np.zeros(n, np.int16)
    base = np.full(n, np.nan)
    ym = np.zeros(n, np.int64)
    for i, t in enumerate(vs):
        sel = np.flatnonzero(vi == i)
        if len(sel) == 0:
            continue
        code[sel], base[sel] = _base_price(t, start[sel], names)
        ym[sel] = _local_fields(start[sel], t.timezone)[3]
    ntier = max((len(t.tiers) for t in vs), default=0)
    if not ntier:
        return _Priced(m, end, ivl, kwh, vi, ym, code, base, kwh[None, :], np.zeros((1, n)),
                       tuple(names), vs)
    # cumulative kWh of each meter's billing period, in time order
    key = m.astype(np.int64) * 100_000 + ym
    cum = np.cumsum(kwh)
    head = np.maximum.accumulate(np.where(_group_starts(key), np.arange(n), 0))
    upto = cum - (cum - kwh)[head]  # kWh of the billing period up to the interval's end
    prev = upto - kwh
    lo_of = np.full((len(vs), ntier), np.inf)  # versions with fewer tiers: empty blocks
    hi_of = np.full((len(vs), ntier), np.inf)
    add_of = np.zeros((len(vs), ntier))
    for i, t in enumerate(vs):
        bound = 0.0
        for j, tr in enumerate(t.tiers):
            lo_of[i, j] = bound
            hi_of[i, j] = bound = np.inf if tr.up_to_kwh is None else tr.up_to_kwh
            add_of[i, j] = tr.adder
    v = np.maximum(vi, 0)
    q = np.empty((ntier, n))
    for j in range(ntier):
        lo, hi = lo_of[v, j], hi_of[v, j]
        q[j] = np.clip(upto, lo, hi) - np.clip(prev, lo, hi)
    q[~np.isfinite(q)] = 0.0  # an empty block (inf - inf)
    return _Priced(m, end, ivl, kwh, vi, ym, code, base, q, add_of[v].T.copy(),
                   tuple(names), vs)


def price_intervals(tariffs: Sequence[Tariff], intervals: pa.Table) -> pa.Table:
    """Price every interval with the versions of one tariff.

    Parameters
    ----------
    tariffs : sequence of Tariff
        Versions of one tariff (any order; each interval takes the one in effect).
    intervals : pyarrow.Table
        :data:`INTERVAL_KWH` rows, any order.

    Returns
    -------
    pyarrow.Table
        :data:`PRICED`, sorted by meter and interval end. ``price`` is the interval's
        cost per kWh (its tier adders blended in; the energy price when ``kwh`` is 0).
        Intervals before every version have null version, period, tier and NaN price
        and cost.
    """
    p = _price(tariffs, intervals)
    cost = p.cost
    with np.errstate(invalid="ignore", divide="ignore"):
        price = np.where(p.kwh != 0, cost / np.where(p.kwh != 0, p.kwh, 1.0), p.base)
    none = p.vi < 0
    names = np.array(p.names, dtype=object)
    version = np.array([t.version for t in p.versions] + [0], np.int32)[p.vi]
    return pa.table({
        "meter_idx": pa.array(p.meter, pa.int32()),
        "interval_end": pa.array(p.end, pa.int64()).cast(TS),
        "interval_s": pa.array(p.ivl, pa.int32()),
        "kwh": p.kwh,
        "version": pa.array(version, pa.int32(), mask=none),
        "billing_period": pa.array(_ym_str(p.ym), pa.string(), mask=none),
        "period": pa.array(names[p.code], pa.string(), mask=none),
        "tier": pa.array(p.tier, pa.int8(), mask=none),
        "price": np.where(none, np.nan, price),
        "cost": np.where(none, np.nan, cost),
    }, schema=PRICED)


def _ym_str(ym: I64) -> npt.NDArray[np.object_]:
    """Months since 1970-01 as ``YYYY-MM`` (one string made per distinct month)."""
    u, inv = np.unique(ym, return_inverse=True)
    text = np.array([f"{1970 + x // 12:04d}-{x % 12 + 1:02d}" for x in u.tolist()],
                    dtype=object)
    out: npt.NDArray[np.object_] = text[inv]
    return out


def determinants(tariffs: Sequence[Tariff], intervals: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Billing determinants of intervals priced with the versions of one tariff.

    Parameters
    ----------
    tariffs, intervals
        As :func:`price_intervals`.

    Returns
    -------
    energy : pyarrow.Table
        :data:`DETERMINANTS_ENERGY`: kWh and cost per meter, billing period, period and
        tier (a tier's kWh at the period's price plus the tier's adder), sorted by
        meter, billing period, period name, tier. A tier with no kWh is no row.
    summary : pyarrow.Table
        :data:`DETERMINANTS_SUMMARY`: per meter and billing period the kWh, the peak
        demand [kW] and its (earliest) interval end, energy cost, demand cost
        (``max_kw * demand_charge``), fixed cost and their total; charges of the version
        in effect at the billing period's last interval. Intervals before every version
        are left out of both.
    """
    p = _price(tariffs, intervals)
    ok = np.flatnonzero(p.vi >= 0)
    m = p.meter[ok].astype(np.int64)
    ym, code, vi = p.ym[ok], p.code[ok].astype(np.int64), p.vi[ok]
    kwh, end, ivl = p.kwh[ok], p.end[ok], p.ivl[ok]
    ntier = p.tier_kwh.shape[0]
    mb = m * 100_000 + ym  # meter x billing month
    # energy: one key per (meter, month, period, tier)
    pkey = (mb * len(p.names) + code) * ntier
    q = p.tier_kwh[:, ok]
    c = q * (p.base[ok][None, :] + p.tier_adder[:, ok])
    k = (pkey[None, :] + np.arange(ntier)[:, None]).ravel()
    q, c = q.ravel(), c.ravel()
    if ntier > 1:
        keep = q != 0
        k, q, c = k[keep], q[keep], c[keep]
    uk, inv = np.unique(k, return_inverse=True)
    g = uk // ntier
    names = np.array(p.names, dtype=object)
    energy = pa.table({
        "meter_idx": pa.array(g // len(p.names) // 100_000, pa.int32()),
        "billing_period": pa.array(_ym_str(g // len(p.names) % 100_000), pa.string()),
        "period": pa.array(names[g % len(p.names)], pa.string()),
        "tier": pa.array(uk % ntier, pa.int8()),
        "kwh": np.bincount(inv, weights=q, minlength=len(uk)),
        "cost": np.bincount(inv, weights=c, minlength=len(uk)),
    }, schema=DETERMINANTS_ENERGY)
    energy = energy.sort_by([("meter_idx", "ascending"), ("billing_period", "ascending"),
                             ("period", "ascending"), ("tier", "ascending")])
    # summary: one row per (meter, month)
    umb, minv = np.unique(mb, return_inverse=True)
    kw = kwh * 3600.0 / ivl
    order = np.lexsort((end, -kw, mb))  # per group: highest demand, earliest first
    first = order[_group_starts(mb[order])]
    last = np.lexsort((-end, mb))
    last = last[_group_starts(mb[last])]
    demand_rate = np.array([t.demand_charge for t in p.versions])[vi[last]]
    fixed = np.array([t.fixed_charge for t in p.versions])[vi[last]]
    e_cost = np.bincount(minv, weights=p.cost[ok], minlength=len(umb))
    d_cost = kw[first] * demand_rate
    summary = pa.table({
        "meter_idx": pa.array(umb // 100_000, pa.int32()),
        "billing_period": pa.array(_ym_str(umb % 100_000), pa.string()),
        "version": pa.array(np.array([t.version for t in p.versions], np.int32)[vi[last]],
                            pa.int32()),
        "kwh": np.bincount(minv, weights=kwh, minlength=len(umb)),
        "max_kw": kw[first],
        "max_interval_end": pa.array(end[first], pa.int64()).cast(TS),
        "energy_cost": e_cost, "demand_cost": d_cost, "fixed_cost": fixed,
        "total_cost": e_cost + d_cost + fixed,
    }, schema=DETERMINANTS_SUMMARY)
    return energy, summary
