"""Analytics engines: one port, an embedded adapter (NumPy) and Spark.

Both engines aggregate reads into hours by one definition (:func:`hourly_sql`; the
embedded engine computes it with NumPy, :mod:`headend.analytics.hourly`, bit for bit)
and compute each task with the same kernels (:mod:`headend.analytics.liu`), the embedded
engine on the whole matrix, Spark per partition of households; the histogram and the
anomaly task are native SQL on Spark. Results are the same tables
(:mod:`headend.analytics.results`), equal up to floating-point rounding (<= 1e-9
relative).

Choose an engine by name with :func:`open_engine` (``duckdb`` or ``spark``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.hourly import matrix_from_reads, matrix_from_store
from headend.analytics.matrix import HourlyMatrix, matrix_from_hourly, temperature_vector
from headend.errors import ConfigError
from headend.store.base import ReadStore

__all__ = ["ENGINES", "EmbeddedEngine", "Engine", "day_number", "open_engine"]


def day_number(day: date | int, t0: int) -> int:
    """Index of a UTC day (a date, or Unix seconds within it) in a matrix starting at ``t0``."""
    start = (t0 - 3600) // 86_400
    d = day.toordinal() - date(1970, 1, 1).toordinal() if isinstance(day, date) else day // 86_400
    return int(d - start)


class Engine(Protocol):
    """An analytics engine. ``load`` once, then run any task; ``close`` when done.

    Every task returns a table of :mod:`headend.analytics.results`, sorted by meter.
    """

    name: str

    def load(self, reads: pa.Table, weather: pa.Table | None = None, *,
             reading_type: int = 0, zone: str | None = None) -> None: ...
    def histogram(self) -> pa.Table: ...
    def threeline(self) -> pa.Table: ...
    def par(self) -> pa.Table: ...
    def similarity(self, k: int = 10, *, method: str = "auto") -> pa.Table: ...
    def anomaly(self, day: date | int, *, threshold: float = 3.0) -> pa.Table: ...
    def close(self) -> None: ...


def _fetch_arrow(cursor: Any) -> pa.Table:
    """Arrow result of a DuckDB cursor (``to_arrow_table`` in DuckDB 2, earlier names before)."""
    for name in ("to_arrow_table", "fetch_arrow_table"):
        fn = getattr(cursor, name, None)
        if fn is not None:
            out = fn()
            return out.read_all() if isinstance(out, pa.RecordBatchReader) else out
    raise RuntimeError("this DuckDB has no Arrow result API")


class EmbeddedEngine:
    """The embedded engine: NumPy hourly matrix (:mod:`headend.analytics.hourly`) and
    NumPy kernels on it. Named ``duckdb`` in :data:`ENGINES` (the CLI's
    ``--engine duckdb``); DuckDB serves the shapes (:mod:`headend.analytics.shapes`)."""

    name = "duckdb"

    def __init__(self) -> None:
        self.matrix = HourlyMatrix(np.empty(0, np.int32), 3600, np.empty((0, 0)))
        self.temp = np.empty(0)

    def load(self, reads: pa.Table, weather: pa.Table | None = None, *,
             reading_type: int = 0, zone: str | None = None) -> None:
        """Sum ``reads`` (any order) into the hourly matrix."""
        self._set(matrix_from_reads(reads, reading_type=reading_type), weather, zone)

    def load_store(self, store: ReadStore, weather: pa.Table | None = None, *,
                   reading_type: int = 0, zone: str | None = None,
                   meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                   end: int | None = None, overlay: pa.Table | None = None) -> None:
        """Stream a store's reads into the hourly matrix (:func:`matrix_from_store`):
        the same matrix as ``load(store.scan_reads(...))``, without the scan's sort and
        copies. ``overlay``: current VEE versions to apply (``VersionStore.latest``)."""
        self._set(matrix_from_store(store, reading_type=reading_type, meters=meters,
                                    start=start, end=end, overlay=overlay), weather, zone)

    def load_hourly(self, hourly: pa.Table, weather: pa.Table | None = None, *,
                    zone: str | None = None) -> None:
        """Load an :data:`~headend.analytics.matrix.HOURLY` table directly."""
        self._set(matrix_from_hourly(hourly), weather, zone)

    def load_matrix(self, matrix: HourlyMatrix, weather: pa.Table | None = None, *,
                    zone: str | None = None) -> None:
        """Load a ready hourly matrix (not copied)."""
        self._set(matrix, weather, zone)

    def _set(self, matrix: HourlyMatrix, weather: pa.Table | None, zone: str | None) -> None:
        self.matrix = matrix
        w = weather if weather is not None else pa.table(
            {"zone": pa.array([], pa.string()), "time": pa.array([], pa.timestamp("s", "UTC")),
             "temperature_c": pa.array([], pa.float64())})
        self.temp = temperature_vector(w, self.matrix.t0, self.matrix.kwh.shape[1], zone)

    def histogram(self) -> pa.Table:
        counts, lo, hi = liu.histogram(self.matrix.kwh)
        return R.histogram_table(self.matrix.meter_idx, counts, lo, hi)

    def threeline(self) -> pa.Table:
        return R.threeline_table(self.matrix.meter_idx, liu.threeline(self.matrix.kwh, self.temp))

    def par(self) -> pa.Table:
        return R.par_table(self.matrix.meter_idx, liu.par(self.matrix.kwh, self.temp))

    def similarity(self, k: int = 10, *, method: str = "auto") -> pa.Table:
        m = self.matrix
        other, cos = liu.similarity(m.kwh, k, method=method)
        return R.similarity_table(m.meter_idx, np.arange(len(m.meter_idx)), other, cos,
                                  m.meter_idx)

    def anomaly(self, day: date | int, *, threshold: float = 3.0) -> pa.Table:
        m = self.matrix
        d = day_number(day, m.t0)
        if not 0 <= d < m.days:
            raise ConfigError(f"day {day} is outside the loaded data")
        total, mean, std, z, flag = liu.anomaly(m.daily(), d, threshold=threshold)
        return R.anomaly_table(m.meter_idx, int(m.day_start[d]), total, mean, std, z, flag)

    def close(self) -> None:
        """Nothing to release (the matrix stays readable)."""


def _spark() -> Engine:
    from headend.analytics.spark import SparkEngine

    return SparkEngine()


#: engine name -> factory (the one registry of engines)
ENGINES: dict[str, Callable[[], Engine]] = {"duckdb": EmbeddedEngine, "spark": _spark}


def open_engine(name: str) -> Engine:
    """An engine by name; raises :class:`ConfigError` for an unknown one."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown analytics engine {name!r}; choose one of "
                          f"{', '.join(ENGINES)}") from None
    return factory()
