"""Hourly (household x hour) matrices: the shape every analytics kernel works on.

Interval reads of one reading type are summed into clock hours (an interval belongs
to the hour in which it ends: ``hour_end = ceil(interval_end / 3600) * 3600``) and laid
out as a dense matrix whose columns are whole UTC days: column ``j`` is the hour ending
at ``t0 + j * 3600`` with ``t0`` one hour after a UTC midnight. Missing hours are NaN.
Energy is summed as integers in the reading type's resolution and converted once
(``sum * resolution``), so every engine gets bit-identical hourly values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model import codes

__all__ = ["HOURLY", "HourlyMatrix", "hour_span", "hourly_sql", "matrix_from_hourly", "reads_for_engines", "temperature_vector"]

F64 = npt.NDArray[np.float64]

#: schema of the long hourly table both engines produce
HOURLY = pa.schema([pa.field("meter_idx", pa.int32(), nullable=False),
                    pa.field("hour_end", pa.int64(), nullable=False),  # [Unix s]
                    pa.field("kwh", pa.float64(), nullable=False)])


def hourly_sql(table: str, reading_type: int, epoch_expr: str) -> str:
    """SQL (DuckDB and Spark dialects alike) summing reads into hours.

    ``epoch_expr`` is the dialect's expression for ``interval_end`` in Unix seconds.
    """
    res = codes.READING_TYPES[reading_type].resolution
    return (
        f"SELECT meter_idx, CAST(FLOOR(({epoch_expr} + 3599) / 3600) AS BIGINT) * 3600 AS hour_end, "
        f"CAST(SUM(CAST(value AS BIGINT)) AS DOUBLE) * {res!r} AS kwh "
        f"FROM {table} WHERE reading_type = {int(reading_type)} GROUP BY 1, 2"
    )


@dataclass(slots=True)
class HourlyMatrix:
    """Hourly energy per household.

    Attributes
    ----------
    meter_idx : ndarray of int32, shape (H,)
        Household (meter) of each row, ascending.
    t0 : int
        End of the hour of column 0 [Unix s]; always 01:00 UTC of a day.
    kwh : ndarray of float64, shape (H, 24 * D)
        Energy per hour [kWh]; NaN where no read exists.
    """

    meter_idx: npt.NDArray[np.int32]
    t0: int
    kwh: F64

    @property
    def days(self) -> int:
        return int(self.kwh.shape[1] // 24)

    @property
    def day_start(self) -> npt.NDArray[np.int64]:
        """UTC midnight starting each day [Unix s]."""
        return self.t0 - 3600 + np.arange(self.days, dtype=np.int64) * 86_400

    def daily(self) -> F64:
        """Daily energy [kWh], shape (H, D); NaN for a day with any missing hour."""
        out: F64 = self.kwh.reshape(len(self.meter_idx), self.days, 24).sum(axis=2)
        return out

    def take(self, rows: npt.NDArray[np.int64]) -> HourlyMatrix:
        return HourlyMatrix(self.meter_idx[rows], self.t0, self.kwh[rows])


def hour_span(hour_end_min: int, hour_end_max: int) -> tuple[int, int]:
    """``(t0, ncol)`` of the whole UTC days covering the given hour ends."""
    day0 = (hour_end_min - 3600) // 86_400
    day1 = (hour_end_max - 3600) // 86_400
    return day0 * 86_400 + 3600, (day1 - day0 + 1) * 24


def matrix_from_hourly(hourly: pa.Table, span: tuple[int, int] | None = None) -> HourlyMatrix:
    """Pivot a long :data:`HOURLY` table into a :class:`HourlyMatrix`.

    ``span`` = ``(t0, ncol)`` fixes the columns (engines pass the global span to each
    partition); by default the whole days covering the table.
    """
    if hourly.num_rows == 0:
        t0, ncol = span or (3600, 0)
        return HourlyMatrix(np.empty(0, np.int32), t0, np.empty((0, ncol)))
    m = hourly.column("meter_idx").to_numpy()
    h = hourly.column("hour_end").to_numpy()
    v = hourly.column("kwh").to_numpy()
    rows, row_of = _dense_unique(m)
    t0, ncol = span or hour_span(int(h.min()), int(h.max()))
    x = np.full((len(rows), ncol), np.nan)
    x[row_of, (h - t0) // 3600] = v
    return HourlyMatrix(rows.astype(np.int32), t0, x)


def _dense_unique(m: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32],
                                                     npt.NDArray[np.int64]]:
    """``np.unique(m, return_inverse=True)`` in O(n + range) without sorting, for meter
    indices spanning at most a few times their count (else the sort)."""
    lo, hi = int(m.min()), int(m.max())
    if hi - lo > 4 * len(m) + 1024:
        rows, inv = np.unique(m, return_inverse=True)
        return rows, inv.astype(np.int64)
    present = np.zeros(hi - lo + 1, bool)
    off = m.astype(np.int64) - lo
    present[off] = True
    slot = np.cumsum(present) - 1  # row of each present meter
    return (np.flatnonzero(present) + lo).astype(m.dtype), slot[off]


def temperature_vector(weather: pa.Table, t0: int, ncol: int, zone: str | None = None) -> F64:
    """Temperature [degC] at each hour end ``t0 + j * 3600`` (NaN where none).

    A weather row at time ``t`` applies to the hour ending at ``ceil(t / 3600) * 3600``;
    several rows in one hour are averaged. ``zone`` defaults to the only zone present.
    """
    out = np.full(ncol, np.nan)
    if weather.num_rows == 0:
        return out
    zones = weather.column("zone").to_numpy(zero_copy_only=False)
    if zone is None:
        uz = np.unique(zones)
        if len(uz) > 1:
            from headend.errors import ConfigError

            raise ConfigError(f"weather has {len(uz)} zones; choose one with zone=")
        zone = str(uz[0])
    sel = zones == zone
    t = weather.column("time").cast(pa.int64()).to_numpy()[sel]
    temp = weather.column("temperature_c").to_numpy()[sel]
    col = (-(-t // 3600) * 3600 - t0) // 3600
    ok = (col >= 0) & (col < ncol)
    s = np.bincount(col[ok], weights=temp[ok], minlength=ncol)
    n = np.bincount(col[ok], minlength=ncol)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)


def reads_for_engines(reads: pa.Table) -> pa.Table:
    """``reads`` with ``interval_end`` as Unix seconds (``t``, int64): the dialect-neutral
    input of every engine's SQL."""
    return pa.table({"meter_idx": reads.column("meter_idx"),
                     "reading_type": reads.column("reading_type").cast(pa.int32()),
                     "t": reads.column("interval_end").cast(pa.int64()),
                     "value": reads.column("value")})
