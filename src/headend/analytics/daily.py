"""Daily matrices straight from the store's daily rollups, and anomaly detection on them.

Anomaly detection of one day needs every household's daily totals over its history,
not its hours. :func:`daily_from_store` reads them from the rollup sidecars that
compaction writes beside month and year files (:mod:`headend.store._rollup`; files
without one are rolled up from their rows on the way), 24 times fewer rows than the
hourly reads, already summed. The result equals ``HourlyMatrix.daily()`` of the same
reads (:func:`headend.analytics.hourly.matrix_from_store`): the same rows (meters with a
read), the same whole days, the day's energy where all 24 hours have a read and NaN
otherwise; energies agree up to floating-point rounding (the rollup sums the day in
integers, the hourly matrix sums 24 rounded hourly values: <= 1e-12 relative).

With VEE versions (``overlay``), the households VEE touched are recomputed from their
reads through :func:`~headend.analytics.hourly.matrix_from_store` with the overlay; the
others come from the rollups.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.hourly import matrix_from_store
from headend.errors import ConfigError
from headend.model import codes
from headend.store.base import ReadStore

__all__ = ["DailyMatrix", "anomaly_from_store", "daily_from_store"]

_FULL = (1 << 24) - 1


@dataclass(slots=True)
class DailyMatrix:
    """Daily energy per household: ``kwh[h, d]`` of UTC day ``day0 + d`` (days since
    1970-01-01) [kWh], NaN unless all 24 hours of the day have a read."""

    meter_idx: npt.NDArray[np.int32]
    day0: int
    kwh: npt.NDArray[np.float64]


def _day_of(t: int) -> int:
    return ((t + 3599) // 3600 - 1) // 24


def daily_from_store(store: ReadStore, *, reading_type: int = 0,
                     meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                     end: int | None = None, overlay: pa.Table | None = None) -> DailyMatrix:
    """The daily matrix of one reading type (see the module docstring); arguments as
    :func:`~headend.analytics.hourly.matrix_from_store`."""
    res = codes.READING_TYPES[reading_type].resolution
    rts = np.array([reading_type], np.uint8)
    plan = store.plan_reads(meters=meters, start=start, end=end, reading_types=rts)
    ext = plan.extent
    if ext is None:
        return DailyMatrix(np.empty(0, np.int32), 0, np.empty((0, 0)))
    lo, d0 = ext.meter_lo, _day_of(ext.t_lo)
    wanted = None  # sparse meters: one row each, found by search
    if meters is not None:
        u = np.unique(np.asarray(meters, np.int64))
        u = u[(u >= lo) & (u <= ext.meter_hi)]
        if len(u) * 2 < ext.meter_hi - lo + 1:
            wanted = u
    shape = (len(wanted) if wanted is not None else ext.meter_hi - lo + 1,
             _day_of(ext.t_hi) - d0 + 1)
    sums = np.zeros(shape)
    hours = np.zeros(shape, np.uint32)
    lock = threading.Lock()

    def add(d: pa.Table) -> None:
        m = d.column("meter_idx").to_numpy().astype(np.int64)
        r = m - lo if wanted is None else np.searchsorted(wanted, m)
        c = d.column("day").to_numpy().astype(np.int64) - d0
        if r.min() < 0 or r.max() >= shape[0] or c.min() < 0 or c.max() >= shape[1]:
            raise ValueError("rollup rows outside the plan's extent")
        flat = r * shape[1] + c
        v = d.column("value").to_numpy()
        hb = d.column("hours").to_numpy()
        with lock:
            if bool((flat[1:] > flat[:-1]).all()):  # one row per cell: fancy updates
                sums.reshape(-1)[flat] += v
                hours.reshape(-1)[flat] |= hb
            else:
                np.add.at(sums.reshape(-1), flat, v.astype(np.float64))
                np.bitwise_or.at(hours.reshape(-1), flat, hb)

    plan.run_days(add)
    x = np.where(hours == _FULL, sums * res, np.nan)
    seen = hours != 0
    rows = np.flatnonzero(seen.any(axis=1))
    meter_idx = (rows + lo if wanted is None else wanted[rows]).astype(np.int32)
    days = np.flatnonzero(seen[rows].any(axis=0)) if len(rows) else np.empty(0, np.int64)
    if len(days) == 0:
        return DailyMatrix(np.empty(0, np.int32), 0, np.empty((0, 0)))
    a, b = int(days[0]), int(days[-1]) + 1
    out = DailyMatrix(meter_idx, d0 + a, np.ascontiguousarray(x[rows, a:b]))
    if overlay is not None and overlay.num_rows:
        out = _with_overlay(out, store, reading_type, start, end, overlay)
    return out


def _with_overlay(dm: DailyMatrix, store: ReadStore, reading_type: int, start: int | None,
                  end: int | None, overlay: pa.Table) -> DailyMatrix:
    """Recompute the households VEE touched from their reads with the overlay."""
    touched = np.unique(overlay.column("meter_idx").to_numpy()).astype(np.int32)
    m = matrix_from_store(store, reading_type=reading_type, meters=touched, start=start,
                          end=end, overlay=overlay)
    if len(m.meter_idx) == 0:
        return dm
    sub = m.daily()
    sd0 = (m.t0 - 3600) // 86_400
    lo_day = min(dm.day0, sd0) if len(dm.meter_idx) else sd0
    hi_day = max(dm.day0 + dm.kwh.shape[1], sd0 + sub.shape[1]) if len(dm.meter_idx) \
        else sd0 + sub.shape[1]
    keep = ~np.isin(dm.meter_idx, m.meter_idx)
    meters = np.concatenate([dm.meter_idx[keep], m.meter_idx])
    x = np.full((len(meters), hi_day - lo_day), np.nan)
    nk = int(keep.sum())
    x[:nk, dm.day0 - lo_day:dm.day0 - lo_day + dm.kwh.shape[1]] = dm.kwh[keep]
    x[nk:, sd0 - lo_day:sd0 - lo_day + sub.shape[1]] = sub
    order = np.argsort(meters, kind="stable")
    return DailyMatrix(meters[order], lo_day, x[order])


def anomaly_from_store(store: ReadStore, day: date | int, *, threshold: float = 3.0,
                       reading_type: int = 0, start: int | None = None,
                       end: int | None = None, overlay: pa.Table | None = None) -> pa.Table:
    """The anomaly task (:meth:`EmbeddedEngine.anomaly
    <headend.analytics.engine.EmbeddedEngine.anomaly>`) from the daily rollups: the same
    table, without loading the hourly matrix."""
    dm = daily_from_store(store, reading_type=reading_type, start=start, end=end,
                          overlay=overlay)
    dn = (day.toordinal() - date(1970, 1, 1).toordinal() if isinstance(day, date)
          else day // 86_400)
    d = int(dn - dm.day0)
    if not 0 <= d < dm.kwh.shape[1]:
        raise ConfigError(f"day {day} is outside the loaded data")
    total, mean, std, z, flag = liu.anomaly(dm.kwh, d, threshold=threshold)
    return R.anomaly_table(dm.meter_idx, int(dn) * 86_400, total, mean, std, z, flag)
