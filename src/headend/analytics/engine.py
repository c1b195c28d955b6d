"""Analytics engines: one port, an embedded adapter (DuckDB + NumPy) and Spark.

Both engines aggregate reads into hours with the same SQL (:func:`hourly_sql`) and
compute each task with the same kernels (:mod:`headend.analytics.liu`), the embedded
engine on the whole matrix, Spark per partition of households; the histogram and the
anomaly task are native SQL on Spark. Results are the same tables
(:mod:`headend.analytics.results`), equal up to floating-point rounding (<= 1e-9
relative).

Choose an engine by name with :func:`open_engine` (``duckdb`` or ``spark``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.matrix import (
    HourlyMatrix,
    hour_span,
    hourly_sql,
    matrix_from_hourly,
    reads_for_engines,
    temperature_vector,
)
from headend.errors import ConfigError

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


def _meter_cuts(meter: npt.NDArray[np.int32], chunk: int) -> list[int] | None:
    """Row offsets cutting meter-sorted reads into runs of about ``chunk`` rows at meter
    boundaries; None when the reads are not sorted by meter or fit in one chunk."""
    n = len(meter)
    if n <= chunk or bool((meter[1:] < meter[:-1]).any()):
        return None
    cuts = [0]
    while cuts[-1] < n:
        nxt = cuts[-1] + chunk
        if nxt >= n:
            cuts.append(n)
            break
        cuts.append(int(np.searchsorted(meter, meter[nxt], side="left")) if
                    meter[nxt] != meter[cuts[-1]] else
                    int(np.searchsorted(meter, meter[nxt], side="right")))
    return cuts


def _fetch_arrow(cursor: Any) -> pa.Table:
    """Arrow result of a DuckDB cursor (``to_arrow_table`` in DuckDB 2, earlier names before)."""
    for name in ("to_arrow_table", "fetch_arrow_table"):
        fn = getattr(cursor, name, None)
        if fn is not None:
            out = fn()
            return out.read_all() if isinstance(out, pa.RecordBatchReader) else out
    raise RuntimeError("this DuckDB has no Arrow result API")


class EmbeddedEngine:
    """DuckDB for the hourly aggregation, NumPy kernels on the dense matrix."""

    name = "duckdb"

    def __init__(self) -> None:
        import duckdb

        self._con = duckdb.connect()
        self.matrix = HourlyMatrix(np.empty(0, np.int32), 3600, np.empty((0, 0)))
        self.temp = np.empty(0)

    def load(self, reads: pa.Table, weather: pa.Table | None = None, *,
             reading_type: int = 0, zone: str | None = None,
             chunk_reads: int = 20_000_000) -> None:
        """Sum ``reads`` into hours (DuckDB) and lay them out as the hourly matrix.

        Reads sorted by meter (as every store scan returns them) are aggregated
        ``chunk_reads`` at a time, cut at meter boundaries, so memory stays bounded by
        one chunk's aggregation; unsorted reads in one query. The result is the same.
        """
        src = reads_for_engines(reads)
        m = src.column("meter_idx").to_numpy()
        cuts = _meter_cuts(m, chunk_reads)
        if cuts is None:
            self.load_hourly(self._hourly(src, reading_type), weather, zone=zone)
            return
        t = pc.filter(src.column("t"), pc.equal(src.column("reading_type"), reading_type))
        if len(t) == 0:
            self.load_hourly(self._hourly(src, reading_type), weather, zone=zone)
            return
        lo_hi = pc.min_max(t)
        span = hour_span(-(-int(lo_hi["min"].as_py()) // 3600) * 3600,
                         -(-int(lo_hi["max"].as_py()) // 3600) * 3600)
        parts = [matrix_from_hourly(self._hourly(src.slice(a, b - a), reading_type), span)
                 for a, b in itertools.pairwise(cuts)]
        parts = [q for q in parts if len(q.meter_idx)]
        if not parts:
            self.load_hourly(self._hourly(src, reading_type), weather, zone=zone)
            return
        self._set(HourlyMatrix(np.concatenate([q.meter_idx for q in parts]), span[0],
                               np.concatenate([q.kwh for q in parts])), weather, zone)

    def _hourly(self, src: pa.Table, reading_type: int) -> pa.Table:
        self._con.register("reads_src", src)
        try:
            return _fetch_arrow(self._con.sql(hourly_sql("reads_src", reading_type, "t")))
        finally:
            self._con.unregister("reads_src")

    def load_hourly(self, hourly: pa.Table, weather: pa.Table | None = None, *,
                    zone: str | None = None) -> None:
        """Load an :data:`~headend.analytics.matrix.HOURLY` table directly."""
        self._set(matrix_from_hourly(hourly), weather, zone)

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
        self._con.close()


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
