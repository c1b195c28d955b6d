"""The Spark adapter of the analytics engine (pyspark, local mode or a cluster).

Reads are aggregated into hours with the same SQL as the embedded engine; the
histogram and the anomaly task are Spark SQL; the regression and similarity tasks run
the NumPy kernels of :mod:`headend.analytics.liu` on partitions of households
(``repartition(meter_idx)`` + ``mapInArrow``), similarity with every household's
normalised series broadcast. Needs the ``spark`` extra (``pip install 'headend[spark]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.engine import day_number
from headend.analytics.matrix import (
    hour_span,
    hourly_sql,
    matrix_from_hourly,
    reads_for_engines,
    temperature_vector,
)
from headend.errors import ConfigError

__all__ = ["SparkEngine", "spark_session"]

_SESSION: Any = None


def spark_session(master: str = "local[2]") -> Any:
    """The process's shared SparkSession (created once, small local defaults)."""
    global _SESSION
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError("the spark engine needs pyspark: pip install 'headend[spark]'") from exc
    if _SESSION is None:
        _SESSION = (
            SparkSession.builder.master(master).appName("headend-analytics")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.driver.memory", "4g")
            .getOrCreate()
        )
        _SESSION.sparkContext.setLogLevel("ERROR")
    return _SESSION


def _hour_range(interval_end: pa.ChunkedArray) -> tuple[int, int] | None:
    """First and last hour end [Unix s] of the reads (as the hourly SQL computes them)."""
    if len(interval_end) == 0:
        return None
    t = interval_end.cast(pa.int64())
    lo, hi = pc.min(t).as_py(), pc.max(t).as_py()
    return -(-lo // 3600) * 3600, -(-hi // 3600) * 3600


def _ddl(schema: pa.Schema) -> str:
    names = {pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double",
             pa.date32(): "date", pa.bool_(): "boolean"}
    return ", ".join(f"`{f.name}` {names[f.type]}" for f in schema)


class SparkEngine:
    """Liu benchmark tasks on Spark. ``partitions`` sets the household partitions."""

    name = "spark"

    def __init__(self, spark: Any = None, *, partitions: int = 4) -> None:
        self.spark = spark or spark_session()
        self.partitions = partitions
        self._hourly: Any = None
        self._span = (3600, 0)
        self._temp = np.empty(0)

    def load(self, reads: pa.Table, weather: pa.Table | None = None, *,
             reading_type: int = 0, zone: str | None = None) -> None:
        src = self.spark.createDataFrame(reads_for_engines(reads))
        src.createOrReplaceTempView("headend_reads")
        hourly = self.spark.sql(hourly_sql("headend_reads", reading_type, "t"))
        mine = reads.filter(pc.equal(reads.column("reading_type"), reading_type))
        self._set_hourly(hourly, weather, zone, _hour_range(mine.column("interval_end")))

    def load_hourly(self, hourly: pa.Table, weather: pa.Table | None = None, *,
                    zone: str | None = None) -> None:
        h = hourly.column("hour_end")
        rng = None if hourly.num_rows == 0 else (pc.min(h).as_py(), pc.max(h).as_py())
        self._set_hourly(self.spark.createDataFrame(hourly), weather, zone, rng)

    def _set_hourly(self, hourly: Any, weather: pa.Table | None, zone: str | None,
                    hour_range: tuple[int, int] | None) -> None:
        if self._hourly is not None:
            self._hourly.unpersist()
        self._hourly = hourly.repartition(self.partitions, "meter_idx").cache()
        self._hourly.createOrReplaceTempView("headend_hourly")
        self._span = hour_span(*hour_range) if hour_range else (3600, 0)
        w = weather if weather is not None else pa.table(
            {"zone": pa.array([], pa.string()), "time": pa.array([], pa.timestamp("s", "UTC")),
             "temperature_c": pa.array([], pa.float64())})
        self._temp = temperature_vector(w, self._span[0], self._span[1], zone)

    # ------------------------------------------------------------------ SQL tasks
    def histogram(self) -> pa.Table:
        nb = liu.HIST_BUCKETS
        # window functions over the meter partitioning: no shuffle
        q = f"""
        WITH s AS (SELECT meter_idx, kwh,
                          MIN(kwh) OVER (PARTITION BY meter_idx) AS lo,
                          MAX(kwh) OVER (PARTITION BY meter_idx) AS hi
                   FROM headend_hourly)
        SELECT meter_idx, lo, hi,
               CASE WHEN hi > lo
                    THEN LEAST(CAST(FLOOR(((kwh - lo) / (hi - lo)) * {nb}) AS INT), {nb - 1})
                    ELSE 0 END AS bucket,
               COUNT(*) AS n
        FROM s GROUP BY meter_idx, lo, hi, bucket
        """
        t = self.spark.sql(q).toArrow()
        meters, inv = np.unique(t.column("meter_idx").to_numpy(), return_inverse=True)
        counts = np.zeros((len(meters), nb), np.int64)
        counts[inv, t.column("bucket").to_numpy()] = t.column("n").to_numpy()
        lo = np.zeros(len(meters))
        hi = np.zeros(len(meters))
        lo[inv] = t.column("lo").to_numpy()
        hi[inv] = t.column("hi").to_numpy()
        return R.histogram_table(meters.astype(np.int32), counts, lo, hi)

    def anomaly(self, day: date | int, *, threshold: float = 3.0, min_history: int = 7
                ) -> pa.Table:
        t0, ncol = self._span
        d = day_number(day, t0)
        if not 0 <= d < ncol // 24:
            raise ConfigError(f"day {day} is outside the loaded data")
        q = f"""
        WITH daily AS (
            SELECT meter_idx, CAST(FLOOR((hour_end - {t0}) / 86400) AS INT) AS d,
                   SUM(kwh) AS total, COUNT(*) AS n
            FROM headend_hourly GROUP BY 1, 2),
        hist AS (
            SELECT meter_idx, AVG(total) AS mean, STDDEV_SAMP(total) AS std, COUNT(*) AS n
            FROM daily WHERE d < {d} AND n = 24 GROUP BY meter_idx),
        m AS (SELECT DISTINCT meter_idx FROM headend_hourly)
        SELECT m.meter_idx,
               CASE WHEN x.n = 24 THEN x.total END AS total, h.mean, h.std, h.n AS hn
        FROM m LEFT JOIN daily x ON x.meter_idx = m.meter_idx AND x.d = {d}
               LEFT JOIN hist h ON h.meter_idx = m.meter_idx
        """
        t = self.spark.sql(q).toArrow().sort_by("meter_idx")

        def col(name: str) -> Any:
            return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

        total, mean, std, hn = col("total"), col("mean"), col("std"), col("hn")
        hn = np.nan_to_num(hn)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (total - mean) / std
        z = np.where((hn < max(min_history, 2)) | ~(std > 0), np.nan, z)
        std = np.where(hn > 1, std, np.nan)
        flag = ~np.isnan(z) & (np.abs(z) > threshold)
        return R.anomaly_table(t.column("meter_idx").to_numpy().astype(np.int32),
                               t0 - 3600 + d * 86_400, total, mean, std, z, flag)

    # ------------------------------------------------------------------ kernel tasks
    def _map(self, fn: Any, schema: pa.Schema) -> pa.Table:
        span = self._span

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            got = list(batches)
            if not got:
                return
            t = pa.Table.from_batches(got)
            if t.num_rows == 0:
                return
            m = matrix_from_hourly(t.select(["meter_idx", "hour_end", "kwh"]), span)
            yield from fn(m).cast(schema).to_batches()

        out = self._hourly.mapInArrow(run, _ddl(schema)).toArrow()
        return out.cast(schema)

    def threeline(self) -> pa.Table:
        temp = self._temp
        out = self._map(lambda m: R.threeline_table(m.meter_idx, liu.threeline(m.kwh, temp)),
                        R.THREELINE)
        return out.sort_by([("meter_idx", "ascending"), ("percentile", "ascending")])

    def par(self) -> pa.Table:
        temp = self._temp
        out = self._map(lambda m: R.par_table(m.meter_idx, liu.par(m.kwh, temp)), R.PAR)
        return out.sort_by([("meter_idx", "ascending"), ("hour", "ascending")])

    def similarity(self, k: int = 10, *, method: str = "auto") -> pa.Table:
        full = matrix_from_hourly(self._hourly.toArrow(), self._span)
        bc = self.spark.sparkContext.broadcast((full.meter_idx, full.kwh))

        def fn(m: Any) -> pa.Table:
            all_idx, all_kwh = bc.value
            rows = np.searchsorted(all_idx, m.meter_idx).astype(np.int64)
            other, cos = liu.similarity(all_kwh, k, rows=rows, method=method)
            return R.similarity_table(all_idx, rows, other, cos, all_idx)

        out = self._map(fn, R.SIMILARITY)
        bc.unpersist()
        return out.sort_by([("meter_idx", "ascending"), ("rank", "ascending")])

    def close(self) -> None:
        if self._hourly is not None:
            self._hourly.unpersist()
            self._hourly = None
