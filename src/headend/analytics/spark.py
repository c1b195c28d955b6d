"""The Spark adapter of the analytics engine (pyspark, local mode or a cluster).

Reads are aggregated into hours with the same SQL as the embedded engine; the
histogram and the anomaly task are Spark SQL; the regression and similarity tasks run
the NumPy kernels of :mod:`headend.analytics.liu` on partitions of households
(``repartition(meter_idx)`` + ``mapInArrow``), similarity with every household's
normalised series broadcast. Needs the ``spark`` extra (``pip install 'headend[spark]'``).

**From a store** (:meth:`SparkEngine.load_store`): Spark reads the store's live Parquet
files itself (``spark.read.parquet``), so the reads never pass through the driver; only
the Arrow segments (recent, uncompacted data, usually few and small), already opened
and pinned by the store's scan plan, go from the driver to Spark as a small DataFrame.
Both are filtered exactly as ``ParquetStore.scan_reads`` filters (reading type, meters,
``start <= interval_end < end``). Current VEE versions (``overlay``) are applied as
:func:`headend.vee.current_reads` defines them: an anti-join on the key removes the
replaced raw reads, a union adds the current versions (estimated keys only inside a
meter's first..last read without a window, only for meters with reads with one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.analytics import liu
from headend.analytics import results as R
from headend.analytics.engine import day_number
from headend.analytics.matrix import (
    HOURLY,
    HourlyMatrix,
    hour_span,
    hourly_sql,
    matrix_from_hourly,
    reads_for_engines,
    temperature_vector,
)
from headend.errors import ConfigError
from headend.store.base import ReadStore

__all__ = ["SparkEngine", "spark_session"]

_SESSION: Any = None

#: defaults of :func:`spark_session`
DEFAULT_MASTER = "local[2]"
DEFAULT_DRIVER_MEMORY = "4g"


def spark_session(master: str = DEFAULT_MASTER, driver_memory: str = DEFAULT_DRIVER_MEMORY,
                  conf: Mapping[str, str] | None = None) -> Any:
    """The process's shared SparkSession, created on the first call.

    Parameters
    ----------
    master : str
        Spark master URL: ``local[N]`` (N cores of this machine), ``local[*]``, or a
        cluster's (``spark://host:7077``, ``yarn``, ...).
    driver_memory : str
        JVM heap of the driver (``spark.driver.memory``), e.g. ``"4g"``. In local mode
        the driver is also the executor: the cached hourly table of a full-scale run
        (27,300 households x 8,760 h, about 240M rows) needs ``"12g"`` or more.
    conf : mapping, optional
        Further Spark settings (``{"spark.sql.shuffle.partitions": "8"}``), applied
        after the defaults (which they override).

    Notes
    -----
    The arguments only apply when the session is created (the driver JVM starts once
    per process): later calls return the existing session whatever they pass. Defaults:
    2 local cores, 4 GB of driver memory, 2 shuffle partitions, UTC session time zone,
    Arrow transfers on, no UI.
    """
    global _SESSION
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError("the spark engine needs pyspark: pip install 'headend[spark]'") from exc
    if _SESSION is None:
        b = (
            SparkSession.builder.master(master).appName("headend-analytics")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.driver.memory", driver_memory)
        )
        for k, v in (conf or {}).items():
            b = b.config(k, v)
        _SESSION = b.getOrCreate()
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


#: the columns the engine reads from the store's Parquet files, in the widest types the
#: files may use (Spark widens on read: UINT_8 -> INT, INT32 -> BIGINT)
_PARQUET_READS = "meter_idx INT, reading_type INT, interval_end TIMESTAMP, value BIGINT"
#: what every source of reads becomes: interval end as Unix seconds (``t``)
_READS_DDL = "meter_idx INT, reading_type INT, t BIGINT, value BIGINT"
_KEY = ["meter_idx", "reading_type", "t"]
_VIEWS = itertools.count()


def _engine_reads(t: pa.Table) -> pa.Table:
    """meter_idx int32, reading_type int32, t int64 [Unix s], value int64 of READS rows."""
    col = t.column("interval_end")
    mult = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[col.type.unit]
    sec = col.cast(pa.int64())
    if mult != 1:  # floor, as Spark's unix_seconds
        sec = pa.array(np.floor_divide(sec.to_numpy(), mult))
    return pa.table({"meter_idx": t.column("meter_idx").cast(pa.int32()),
                     "reading_type": t.column("reading_type").cast(pa.int32()),
                     "t": sec, "value": t.column("value").cast(pa.int64())})


def _select(t: pa.Table, reading_type: int, meters: npt.NDArray[np.int32] | None,
            start: int | None, end: int | None) -> pa.Table:
    """The rows of an :func:`_engine_reads` table that ``scan_reads`` would return."""
    mask = pc.equal(t.column("reading_type"), reading_type)
    if meters is not None:
        mask = pc.and_(mask, pc.is_in(t.column("meter_idx"), pa.array(meters, pa.int32())))
    if start is not None:
        mask = pc.and_(mask, pc.greater_equal(t.column("t"), start))
    if end is not None:
        mask = pc.and_(mask, pc.less(t.column("t"), end))
    return t.filter(mask)


def _ts(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _vanished(exc: BaseException) -> bool:
    """Whether a Spark error says a file of the plan is gone (compacted away)."""
    text = str(exc)
    return any(k in text for k in ("FileNotFoundException", "PATH_NOT_FOUND",
                                   "does not exist"))


class SparkEngine:
    """Liu benchmark tasks on Spark. ``partitions`` sets the household partitions."""

    name = "spark"

    def __init__(self, spark: Any = None, *, partitions: int = 4) -> None:
        self.spark = spark or spark_session()
        self.partitions = partitions
        n = next(_VIEWS)
        self._view = f"headend_hourly_{n}"  # own views: engines may share a session
        self._reads_view = f"headend_reads_{n}"
        self._hourly: Any = None
        self._span = (3600, 0)
        self._temp = np.empty(0)

    def load(self, reads: pa.Table, weather: pa.Table | None = None, *,
             reading_type: int = 0, zone: str | None = None) -> None:
        """Sum ``reads`` (an Arrow table in the driver; small data) into hours."""
        src = self.spark.createDataFrame(reads_for_engines(reads))
        src.createOrReplaceTempView(self._reads_view)
        hourly = self.spark.sql(hourly_sql(self._reads_view, reading_type, "t"))
        mine = reads.filter(pc.equal(reads.column("reading_type"), reading_type))
        self._set_hourly(hourly, weather, zone, _hour_range(mine.column("interval_end")))

    def load_store(self, store: ReadStore, weather: pa.Table | None = None, *,
                   reading_type: int = 0, zone: str | None = None,
                   meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                   end: int | None = None, overlay: pa.Table | None = None) -> None:
        """Sum a store's reads into hours on Spark (see the module docstring).

        The same hourly data as ``EmbeddedEngine.load_store`` (and as ``load`` of
        ``headend.vee.current_reads(store.scan_reads(...))``), computed where the data
        is: the driver holds the file list, the segments and ``overlay`` only.

        Parameters
        ----------
        store : ReadStore
            Any store adapter: Spark reads the Parquet files of its plan
            (``ReadPlan.paths``) and gets the other rows (``ReadPlan.segments``) from
            the driver.
        weather : pyarrow.Table, optional
            Hourly temperatures (``WeatherStore.load``).
        reading_type : int
            ``codes.READING_TYPES`` code (default ``kwh_del``).
        zone : str, optional
            Weather zone (default: the only one).
        meters, start, end
            As ``scan_reads``: meter indices, ``start <= interval_end < end`` [Unix s].
        overlay : pyarrow.Table, optional
            Current VEE versions (READS columns; ``VersionStore.latest``); rows of other
            reading types, meters or times are ignored.

        Notes
        -----
        Eager: the hourly table is computed and cached (memory and disk) before this
        returns, so a compaction that deletes planned files afterwards does not matter;
        one that deletes them while Spark reads makes the load start over with a new
        plan (3 attempts).
        """
        from pyspark.sql import functions as F

        ms = None if meters is None else np.unique(np.asarray(meters, np.int32))
        for attempt in range(3):
            try:
                reads = self._store_reads(store, reading_type, ms, start, end)
                if overlay is not None and overlay.num_rows:
                    reads = self._current(reads, overlay, reading_type, ms, start, end)
                # one shuffle, of the reads by meter: the hourly GROUP BY (meter, hour)
                # needs no other, and the hours come out partitioned by household as
                # the tasks want them (1.7-2.5x faster than aggregate + repartition
                # on 24M hourly reads, local[2])
                reads = reads.repartition(self.partitions, "meter_idx")
                reads.createOrReplaceTempView(self._reads_view)
                hourly = self.spark.sql(hourly_sql(self._reads_view, reading_type, "t"))
                self._set_hourly(hourly, weather, zone, None, partitioned=True)
                # one pass: materialises the cache and gives the hour range
                lo, hi = self._hourly.agg(F.min("hour_end"), F.max("hour_end")).first()
                break
            except Exception as exc:  # Py4J/Spark errors: only a vanished file is retried
                if attempt == 2 or not _vanished(exc):
                    raise
        if lo is not None:
            self._span = hour_span(int(lo), int(hi))
            self._temp = temperature_vector(self._weather(weather), *self._span, zone)

    def _store_reads(self, store: ReadStore, reading_type: int, meters: npt.NDArray[np.int32] | None,
                     start: int | None, end: int | None) -> Any:
        """DataFrame (:data:`_READS_DDL`) of the rows ``scan_reads`` would return."""
        from pyspark.sql import functions as F

        empty = self.spark.createDataFrame([], _READS_DDL)
        if meters is not None and len(meters) == 0:
            return empty
        plan = store.plan_reads(meters=meters, start=start, end=end,
                                reading_types=np.array([reading_type], np.uint8))
        paths = [str(x) for x in plan.paths()]
        segments = [_engine_reads(t) for t in plan.segments()]
        out = empty
        if paths:
            df = self.spark.read.schema(_PARQUET_READS).parquet(*paths)
            cond = F.col("reading_type") == reading_type
            if meters is not None:  # the range prunes row groups, isin selects
                cond &= F.col("meter_idx").between(int(meters[0]), int(meters[-1]))
                cond &= F.col("meter_idx").isin([int(m) for m in meters])
            if start is not None:
                cond &= F.col("interval_end") >= F.lit(_ts(start))
            if end is not None:
                cond &= F.col("interval_end") < F.lit(_ts(end))
            out = df.where(cond).select(
                "meter_idx", "reading_type", F.unix_seconds("interval_end").alias("t"),
                "value")
        seg = pa.concat_tables(segments) if segments else None
        if seg is not None and seg.num_rows:
            out = out.unionByName(self.spark.createDataFrame(seg, _READS_DDL))
        return out

    def _current(self, reads: Any, overlay: pa.Table, reading_type: int,
                 meters: npt.NDArray[np.int32] | None, start: int | None,
                 end: int | None) -> Any:
        """``reads`` with the overlay's current versions, as ``current_reads`` does."""
        from pyspark.sql import functions as F

        ov = _select(_engine_reads(overlay), reading_type, meters, start, end)
        if ov.num_rows and (start is None) != (end is None):
            # a half-open window: current_reads bounds the versions by the reads' first
            # (last) interval end on the open side
            lo, hi = reads.agg(F.min("t"), F.max("t")).first()
            if lo is None:
                return reads
            ov = _select(ov, reading_type, None, lo if start is None else start,
                         hi + 1 if end is None else end)
        if ov.num_rows == 0:
            return reads
        odf = F.broadcast(self.spark.createDataFrame(ov, _READS_DDL))
        om = np.unique(ov.column("meter_idx").to_numpy())
        touched = reads.where(F.col("meter_idx").isin([int(m) for m in om]))
        if start is not None or end is not None:  # meters with reads in the window
            allowed = odf.join(F.broadcast(touched.select("meter_idx").distinct()),
                               "meter_idx", "left_semi")
        else:  # inside each meter's first..last read
            span = touched.groupBy("meter_idx").agg(F.min("t").alias("first"),
                                                    F.max("t").alias("last"))
            allowed = (odf.join(F.broadcast(span), "meter_idx")
                       .where(F.col("t").between(F.col("first"), F.col("last")))
                       .select(*_KEY, "value"))
        kept = reads.join(odf.select(*_KEY), _KEY, "left_anti")
        return kept.unionByName(allowed)

    def collect_hourly(self) -> pa.Table:
        """The loaded hourly table (:data:`~headend.analytics.matrix.HOURLY`), sorted, in
        the driver: for tests and small data."""
        if self._hourly is None:
            return HOURLY.empty_table()
        t = self._hourly.toArrow().select(HOURLY.names).cast(HOURLY)
        return t.sort_by([("meter_idx", "ascending"), ("hour_end", "ascending")])

    def collect_matrix(self) -> HourlyMatrix:
        """The loaded hourly matrix in the driver (the embedded engine's ``matrix``)."""
        return matrix_from_hourly(self.collect_hourly(), self._span)

    def load_hourly(self, hourly: pa.Table, weather: pa.Table | None = None, *,
                    zone: str | None = None) -> None:
        h = hourly.column("hour_end")
        rng = None if hourly.num_rows == 0 else (pc.min(h).as_py(), pc.max(h).as_py())
        self._set_hourly(self.spark.createDataFrame(hourly), weather, zone, rng)

    def _set_hourly(self, hourly: Any, weather: pa.Table | None, zone: str | None,
                    hour_range: tuple[int, int] | None, *, partitioned: bool = False) -> None:
        """Cache ``hourly`` partitioned by household (``partitioned``: it already is)."""
        if self._hourly is not None:
            self._hourly.unpersist()
        if not partitioned:
            hourly = hourly.repartition(self.partitions, "meter_idx")
        self._hourly = hourly.cache()
        self._hourly.createOrReplaceTempView(self._view)
        self._span = hour_span(*hour_range) if hour_range else (3600, 0)
        self._temp = temperature_vector(self._weather(weather), *self._span, zone)

    @staticmethod
    def _weather(weather: pa.Table | None) -> pa.Table:
        return weather if weather is not None else pa.table(
            {"zone": pa.array([], pa.string()), "time": pa.array([], pa.timestamp("s", "UTC")),
             "temperature_c": pa.array([], pa.float64())})

    # ------------------------------------------------------------------ SQL tasks
    def histogram(self) -> pa.Table:
        nb = liu.HIST_BUCKETS
        # window functions over the meter partitioning: no shuffle
        q = f"""
        WITH s AS (SELECT meter_idx, kwh,
                          MIN(kwh) OVER (PARTITION BY meter_idx) AS lo,
                          MAX(kwh) OVER (PARTITION BY meter_idx) AS hi
                   FROM {self._view})
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
            FROM {self._view} GROUP BY 1, 2),
        hist AS (
            SELECT meter_idx, AVG(total) AS mean, STDDEV_SAMP(total) AS std, COUNT(*) AS n
            FROM daily WHERE d < {d} AND n = 24 GROUP BY meter_idx),
        m AS (SELECT DISTINCT meter_idx FROM {self._view})
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
