"""Load profiles and shapes, asset loading and billing determinants (pure NumPy).

* :func:`daily_shape` - mean energy per local hour of day, per meter;
* :func:`seasonal_shape` - the same per meteorological season (DJF, MAM, JJA, SON);
* :func:`class_shape` - shapes averaged over the meters of each customer class;
* :func:`group_load` / :func:`asset_loading` - hourly load of transformers or feeders
  (sum of their meters) against the rating;
* :func:`billing_determinants` - energy per time-of-use period and maximum demand per
  billing period (local calendar months).

Local time: ``tz`` is the utility's IANA zone (default UTC). An hour or interval
belongs to the local hour in which it *starts*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.analytics.matrix import HourlyMatrix
from headend.model import codes
from headend.vee.grid import local_seconds

__all__ = [
    "SEASONS",
    "TouSchedule",
    "asset_loading",
    "billing_determinants",
    "class_shape",
    "daily_shape",
    "group_load",
    "seasonal_shape",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: meteorological seasons by month (1..12) -> name
SEASONS = ("winter", "spring", "summer", "autumn")
_SEASON_OF_MONTH = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0])  # index month 1..12


def _local_parts(start_s: I64, tz: str) -> tuple[I64, I64, I64, I64]:
    """Local (hour of day, weekday Mon=0, month 1..12, year) of each instant."""
    loc = local_seconds(start_s, tz)
    days = np.floor_divide(loc, 86_400)
    hour = (loc - days * 86_400) // 3600
    weekday = (days + 3) % 7
    d = days.astype("datetime64[D]")
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    return hour, weekday, month, year


def _mean_by(x: F64, group: I64, ngroups: int) -> F64:
    """Mean of each row over the columns of each group (NaN-aware), shape (H, G)."""
    valid = ~np.isnan(x)
    onehot = np.zeros((x.shape[1], ngroups))
    onehot[np.arange(x.shape[1]), group] = 1.0
    s = np.where(valid, x, 0.0) @ onehot
    n = valid.astype(np.float64) @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)


def daily_shape(m: HourlyMatrix, tz: str = "UTC") -> pa.Table:
    """Mean energy [kWh] per local hour of day: ``meter_idx, hour, mean_kwh``."""
    hour, *_ = _local_parts(m.t0 - 3600 + np.arange(m.kwh.shape[1], dtype=np.int64) * 3600, tz)
    mean = _mean_by(m.kwh, hour, 24)
    h = len(m.meter_idx)
    return pa.table({"meter_idx": pa.array(np.repeat(m.meter_idx, 24), pa.int32()),
                     "hour": pa.array(np.tile(np.arange(24), h), pa.int32()),
                     "mean_kwh": mean.ravel()})


def seasonal_shape(m: HourlyMatrix, tz: str = "UTC") -> pa.Table:
    """Mean energy per season and local hour: ``meter_idx, season, hour, mean_kwh``
    (seasons without data are left out)."""
    hour, _, month, _ = _local_parts(
        m.t0 - 3600 + np.arange(m.kwh.shape[1], dtype=np.int64) * 3600, tz)
    season = _SEASON_OF_MONTH[month - 1]
    mean = _mean_by(m.kwh, season * 24 + hour, 96).reshape(-1, 4, 24)
    present = np.bincount(season, minlength=4) > 0
    hh, ss, kk = np.meshgrid(np.arange(len(m.meter_idx)), np.flatnonzero(present),
                             np.arange(24), indexing="ij")
    return pa.table({"meter_idx": pa.array(m.meter_idx[hh.ravel()], pa.int32()),
                     "season": pa.array(np.array(SEASONS)[ss.ravel()]),
                     "hour": pa.array(kk.ravel(), pa.int32()),
                     "mean_kwh": mean[hh, ss, kk].ravel()})


def class_shape(shape: pa.Table, meter_class: pa.Table) -> pa.Table:
    """Average a per-meter shape table over customer classes.

    ``meter_class`` has ``meter_idx, customer_class``; the result has the shape's key
    columns with ``customer_class`` instead of ``meter_idx``, plus ``meters``.
    """
    import duckdb

    keys = [c for c in shape.column_names if c not in ("meter_idx", "mean_kwh")]
    con = duckdb.connect()
    con.register("s", shape)
    con.register("c", meter_class)
    k = ", ".join(keys)
    q = (f"SELECT c.customer_class, {k}, AVG(s.mean_kwh) AS mean_kwh, "
         f"COUNT(DISTINCT s.meter_idx) AS meters FROM s JOIN c USING (meter_idx) "
         f"GROUP BY c.customer_class, {k} ORDER BY c.customer_class, {k}")
    from headend.analytics.engine import _fetch_arrow

    out = _fetch_arrow(con.sql(q))
    con.close()
    return out


def group_load(m: HourlyMatrix, group: npt.NDArray[np.object_]) -> tuple[npt.NDArray[np.object_], F64]:
    """Hourly load of each group (transformer, feeder): the sum of its meters [kWh].

    Returns the group names (sorted) and a (G, T) matrix; missing hours count as 0.
    """
    names, inv = np.unique(group.astype(str), return_inverse=True)
    onehot = np.zeros((len(names), len(group)))
    onehot[inv, np.arange(len(group))] = 1.0
    return names.astype(object), onehot @ np.nan_to_num(m.kwh)


def asset_loading(m: HourlyMatrix, group: npt.NDArray[np.object_], rating_kva: dict[str, float],
                  *, power_factor: float = 1.0) -> pa.Table:
    """Peak loading of each asset against its rating.

    Average demand over an hour is its energy per hour (kW = kWh / 1 h); apparent
    power is ``kW / power_factor``.

    Returns
    -------
    pyarrow.Table
        ``asset_id, meters, peak_kw, peak_hour_end, rating_kva, peak_loading_pct,
        hours_over_rating``, most loaded first (assets without rating last).
    """
    names, load = group_load(m, group)
    meters = np.bincount(np.unique(group.astype(str), return_inverse=True)[1])
    ncol = load.shape[1]
    peak_col = np.argmax(load, axis=1) if ncol else np.zeros(len(names), np.int64)
    peak = load[np.arange(len(names)), peak_col] if ncol else np.zeros(len(names))
    rating = np.array([rating_kva.get(str(n), np.nan) for n in names], dtype=np.float64)
    kva = load / power_factor
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * peak / power_factor / rating
        over = (kva > rating[:, None]).sum(axis=1)
    t = pa.table({"asset_id": pa.array(names.astype(str)), "meters": pa.array(meters, pa.int64()),
                  "peak_kw": peak,
                  "peak_hour_end": pa.array(m.t0 + peak_col.astype(np.int64) * 3600,
                                            pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                  "rating_kva": rating, "peak_loading_pct": pct,
                  "hours_over_rating": pa.array(np.where(np.isnan(rating), 0, over), pa.int64())})
    order = np.lexsort((names.astype(str), -np.nan_to_num(pct, nan=-np.inf)))
    return t.take(pa.array(order))


@dataclass(frozen=True, slots=True)
class TouSchedule:
    """Time-of-use periods by local hour on weekdays and on weekends/holidays.

    ``weekday`` and ``weekend`` map each local hour (0..23) to a period name;
    the default is ``peak`` 16:00-21:00 on weekdays and ``off_peak`` otherwise.
    """

    weekday: tuple[str, ...] = tuple("peak" if 16 <= h < 21 else "off_peak" for h in range(24))
    weekend: tuple[str, ...] = tuple("off_peak" for _ in range(24))
    holidays: tuple[str, ...] = field(default_factory=tuple)  # local ISO dates


def billing_determinants(reads: pa.Table, interval_s_of: npt.NDArray[np.int32], *,
                         tz: str = "UTC", tou: TouSchedule = TouSchedule(),
                         reading_type: int = 0) -> tuple[pa.Table, pa.Table]:
    """Energy per TOU period and maximum demand per billing period (local month).

    Parameters
    ----------
    reads : pyarrow.Table
        Interval reads (:data:`~headend.model.schema.READS`), e.g. after VEE.
    interval_s_of : ndarray of int32
        Interval length of each meter [s], indexed by ``meter_idx``.

    Returns
    -------
    energy : pyarrow.Table
        ``meter_idx, period (YYYY-MM), tou, kwh``.
    demand : pyarrow.Table
        ``meter_idx, period, max_kw, max_interval_end, kwh``; demand of an interval is
        ``energy / interval length`` [kW].
    """
    r = reads.filter(pc.equal(reads.column("reading_type"), reading_type))
    res = codes.READING_TYPES[reading_type].resolution
    meter = r.column("meter_idx").to_numpy()
    t = r.column("interval_end").cast(pa.int64()).to_numpy()
    ivl = np.asarray(interval_s_of, np.int64)[meter]
    kwh = r.column("value").to_numpy().astype(np.float64) * res
    hour, weekday, month, year = _local_parts(t - ivl, tz)
    loc_day = np.floor_divide(local_seconds(t - ivl, tz), 86_400).astype("datetime64[D]")
    weekend = (weekday >= 5) | np.isin(loc_day, np.array(tou.holidays, dtype="datetime64[D]"))
    names = sorted(set(tou.weekday) | set(tou.weekend))
    code = {n: i for i, n in enumerate(names)}
    wd = np.array([code[n] for n in tou.weekday])
    we = np.array([code[n] for n in tou.weekend])
    period_code = np.where(weekend, we[hour], wd[hour])
    ym = year * 12 + (month - 1)
    # energy by (meter, month, tou)
    key = (meter.astype(np.int64) * 100_000 + ym) * len(names) + period_code
    uk, inv = np.unique(key, return_inverse=True)
    e = np.bincount(inv, weights=kwh)
    um = uk // len(names)
    energy = pa.table({"meter_idx": pa.array(um // 100_000, pa.int32()),
                       "period": pa.array(_ym_str(um % 100_000)),
                       "tou": pa.array(np.array(names)[uk % len(names)]),
                       "kwh": e})
    # demand by (meter, month)
    kw = kwh * 3600.0 / ivl
    mk = meter.astype(np.int64) * 100_000 + ym
    order = np.lexsort((t, -kw, mk))  # per key: highest demand, earliest first
    mks = mk[order]
    first = np.r_[True, mks[1:] != mks[:-1]]
    sel = order[first]
    _umk, minv = np.unique(mk, return_inverse=True)
    demand = pa.table({"meter_idx": pa.array(mk[sel] // 100_000, pa.int32()),
                       "period": pa.array(_ym_str(mk[sel] % 100_000)),
                       "max_kw": kw[sel],
                       "max_interval_end": pa.array(t[sel], pa.int64()).cast(
                           pa.timestamp("s", tz="UTC")),
                       "kwh": np.bincount(minv, weights=kwh)})
    return energy, demand


def _ym_str(ym: I64) -> list[str]:
    return [f"{y:04d}-{mo:02d}" for y, mo in zip((ym // 12).tolist(), (ym % 12 + 1).tolist())]
