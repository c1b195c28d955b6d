"""Verb group ``analytics``: the Liu et al. benchmark tasks, shapes, asset loading,
billing determinants and the day-ahead feeder forecast, each as one CSV.

Columns are documented in docs/analytics.md; ``meter_idx`` is written as ``meter_id``.
Reads are the current (VEE'd) values unless ``--version original``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import typer

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_STORAGE,
    DataOption,
    fail,
    parse_range,
    require_extra,
    verb_group,
)
from headend.errors import ConfigError, StorageError

analytics_app = verb_group("Analytics on stored interval reads (CSV on stdout or -o).")

FromOpt = Annotated[str | None, typer.Option("--from", help="Reads ending from this time (ISO 8601, inclusive; UTC if no offset).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Reads ending before this time (exclusive; after --from).")]
EngineOpt = Annotated[str, typer.Option("--engine", help="duckdb (embedded) or spark (local mode).")]
FormatOpt = Annotated[str, typer.Option("--format", help="csv or json (one JSON object per line).")]
OutOpt = Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of stdout.")]
VersionOpt = Annotated[str, typer.Option("--version", help="current (after VEE) or original reads.")]
ZoneOpt = Annotated[str | None, typer.Option("--zone", help="Weather zone (default: the only one).")]
TzOpt = Annotated[str, typer.Option("--tz", envvar="HEADEND_TZ", help="Utility time zone for local hours and months.")]


class _Loaded:
    """What a verb reads: the reads (``reads``), or what ``compute`` made of the store."""

    def __init__(self, reads: pa.Table | None, weather: pa.Table, registry: Any,
                 computed: Any = None) -> None:
        self.reads, self.weather, self.registry = reads, weather, registry
        self.computed = computed

    @property
    def matrix(self) -> Any:
        return self.computed


def _hourly_matrix(store: Any, overlay: pa.Table | None, start: int | None,
                   end: int | None) -> Any:
    from headend.analytics.hourly import matrix_from_store
    from headend.model import codes

    return matrix_from_store(store, reading_type=codes.READING_TYPE_BY_NAME["kwh_del"].code,
                             start=start, end=end, overlay=overlay)


def _load(data: Path, from_: str | None, to: str | None, version: str, *,
          matrix: bool = False, compute: Any = None) -> _Loaded:
    """Reads of ``kwh_del`` (current VEE versions unless ``original``) and the weather.

    With ``matrix``, the hourly matrix streamed from the store instead of the reads;
    with ``compute(store, overlay, start, end)``, its result (``overlay``: the current
    VEE versions, None for ``original``).
    """
    from headend.analytics.weather import WeatherStore
    from headend.model import codes
    from headend.store import DataDir

    if version not in ("current", "original"):
        fail(f"--version must be current or original, not {version!r}")
    start, end = parse_range(from_, to)
    rt = np.array([codes.READING_TYPE_BY_NAME["kwh_del"].code], np.uint8)
    if matrix:
        compute = _hourly_matrix
    try:
        with DataDir.open(data) as dd:
            raw = got = None
            if compute is not None:
                overlay = None
                if version == "current":
                    from headend.vee import VersionStore

                    overlay = VersionStore(data).latest(start=start, end=end, reading_types=rt)
                got = compute(dd.store, overlay, start, end)
            else:
                raw = dd.store.scan_reads(start=start, end=end, reading_types=rt)
                if version == "current":
                    from headend.vee import current_reads

                    raw = current_reads(data, raw, dd.registry, start=start, end=end)
            reg = dd.registry
            weather = WeatherStore(data).load(start=None if start is None else start - 86_400,
                                              end=None if end is None else end + 86_400)
            return _Loaded(raw, weather, reg, got)
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    except ConfigError as exc:
        fail(str(exc))


def _write(table: pa.Table, registry: Any, fmt: str, out: Path | None) -> None:
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in ("meter_idx", "other_meter_idx"):
            ids = registry.ids(col.to_numpy())
            cols[name.replace("_idx", "_id")] = ids
        elif pa.types.is_timestamp(col.type):
            cols[name] = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
        elif pa.types.is_floating(col.type):  # NaN (undefined, e.g. no history): empty
            cols[name] = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        else:
            cols[name] = col
    t = pa.table(cols)
    if fmt not in ("csv", "json"):
        fail(f"--format must be csv or json, not {fmt!r}")
    sink = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout  # noqa: SIM115
    try:
        if fmt == "csv":
            w = csv.writer(sink, lineterminator="\n")
            w.writerow(t.column_names)
            text = [pc.cast(c, pa.string()).to_pylist() for c in t.columns]
            w.writerows(("" if v is None else v for v in row) for row in zip(*text))
        else:
            for row in t.to_pylist():
                sink.write(json.dumps(row, default=str) + "\n")
    finally:
        if out:
            sink.close()
        else:
            sink.flush()


def _engine_task(task: str, data: Path, from_: str | None, to: str | None, engine: str,
                 fmt: str, out: Path | None, version: str, zone: str | None,
                 **kw: Any) -> None:
    from headend.analytics import open_engine

    if engine == "spark":
        require_extra("spark", "headend analytics --engine spark")
    embedded = engine == "duckdb"
    if embedded and task == "anomaly":  # days only: the daily rollups, not the hours
        from headend.analytics.daily import anomaly_from_store

        def daily(store: Any, overlay: Any, start: int | None, end: int | None) -> Any:
            return anomaly_from_store(store, kw["day"], threshold=kw["threshold"],
                                      start=start, end=end, overlay=overlay)

        ld = _load(data, from_, to, version, compute=daily)
        _write(ld.computed, ld.registry, fmt, out)
        return
    if embedded and task == "histogram":  # streamed when no VEE version and no meter
        from headend.analytics import EmbeddedEngine  # spans files; else the matrix
        from headend.analytics.stream import histogram_from_store

        def hist(store: Any, overlay: Any, start: int | None, end: int | None) -> Any:
            if overlay is None or overlay.num_rows == 0:
                try:
                    return histogram_from_store(store, start=start, end=end)
                except ValueError:
                    pass
            e = EmbeddedEngine()
            e.load_matrix(_hourly_matrix(store, overlay, start, end))
            return e.histogram()

        ld = _load(data, from_, to, version, compute=hist)
        _write(ld.computed, ld.registry, fmt, out)
        return
    ld = _load(data, from_, to, version, matrix=embedded)
    try:
        eng = open_engine(engine)
        try:
            w = ld.weather if ld.weather.num_rows else None
            if embedded:
                eng.load_matrix(ld.matrix, w, zone=zone)  # type: ignore[attr-defined]
            else:
                eng.load(ld.reads, w, zone=zone)
            result = getattr(eng, task)(**kw)
        finally:
            eng.close()
    except ConfigError as exc:
        fail(str(exc))
    _write(result, ld.registry, fmt, out)


@analytics_app.command("histogram")
def histogram(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
              engine: EngineOpt = "duckdb", fmt: FormatOpt = "csv", out: OutOpt = None,
              version: VersionOpt = "current") -> None:
    """Hourly consumption histogram per household: 10 equal-width buckets between its
    minimum and maximum. Columns: meter_id,bucket,lower_kwh,upper_kwh,count.

    \b
    Example:
      headend analytics histogram --data ./headend-data --from 2026-01-01 --to 2026-02-01
    """
    _engine_task("histogram", data, from_, to, engine, fmt, out, version, None)


@analytics_app.command("threeline")
def threeline(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
              engine: EngineOpt = "duckdb", fmt: FormatOpt = "csv", out: OutOpt = None,
              version: VersionOpt = "current", zone: ZoneOpt = None) -> None:
    """3-line thermal-sensitivity regression (10th and 90th percentiles). Columns:
    meter_id,percentile,k1_c,k2_c,intercept_kwh,heating_slope_kwh_per_c,
    base_slope_kwh_per_c,cooling_slope_kwh_per_c,sse,points.

    \b
    Example:
      headend analytics threeline --data ./headend-data -o threeline.csv
    """
    _engine_task("threeline", data, from_, to, engine, fmt, out, version, zone)


@analytics_app.command("par")
def par(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
        engine: EngineOpt = "duckdb", fmt: FormatOpt = "csv", out: OutOpt = None,
        version: VersionOpt = "current", zone: ZoneOpt = None) -> None:
    """Periodic autoregression daily profile (3 previous days + temperature terms, per
    hour). Columns: meter_id,hour,n_days,intercept,ar1,ar2,ar3,cool,heat,cold,rmse_kwh.

    \b
    Example:
      headend analytics par --data ./headend-data --format json
    """
    _engine_task("par", data, from_, to, engine, fmt, out, version, zone)


@analytics_app.command("similarity")
def similarity(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
               engine: EngineOpt = "duckdb", fmt: FormatOpt = "csv", out: OutOpt = None,
               version: VersionOpt = "current",
               k: Annotated[int, typer.Option("--k", help="Neighbours per household.")] = 10,
               method: Annotated[str, typer.Option(
                   "--method", help="auto, exact (all pairs) or projected (candidates from "
                   "a principal subspace, re-ranked exactly).")] = "auto") -> None:
    """Top-k most similar households by cosine similarity (exact cosines). Columns:
    meter_id,rank,other_meter_id,cosine.

    \b
    Example:
      headend analytics similarity --data ./headend-data --k 5
    """
    _engine_task("similarity", data, from_, to, engine, fmt, out, version, None, k=k,
                 method=method)


@analytics_app.command("anomaly")
def anomaly(day: Annotated[str, typer.Option("--day", help="UTC day to check (YYYY-MM-DD).")],
            data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
            engine: EngineOpt = "duckdb", fmt: FormatOpt = "csv", out: OutOpt = None,
            version: VersionOpt = "current",
            threshold: Annotated[float, typer.Option("--threshold", help="|z| above which a day is anomalous.")] = 3.0) -> None:
    """A day's consumption against each household's previous days (z-score). Columns:
    meter_id,day,total_kwh,mean_kwh,std_kwh,z,anomaly; mean_kwh, std_kwh and z are
    empty when the history is too short or flat.

    \b
    Example:
      headend analytics anomaly --data ./headend-data --day 2026-01-20
    """
    try:
        d = dt.date.fromisoformat(day)
    except ValueError:
        fail(f"--day: not a YYYY-MM-DD date: {day!r}")
    _engine_task("anomaly", data, from_, to, engine, fmt, out, version, None, day=d,
                 threshold=threshold)


def _matrix(ld: _Loaded) -> Any:
    from headend.analytics import EmbeddedEngine

    eng = EmbeddedEngine()
    eng.load_matrix(ld.matrix, ld.weather if ld.weather.num_rows else None)
    return eng


def _read_csv(path: Path, columns: list[str]) -> pa.Table:
    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns if not c.endswith("kva")}))
        return t.select(columns)
    except (OSError, KeyError, pa.ArrowInvalid) as exc:
        fail(f"{path}: {exc}")


@analytics_app.command("profile")
def profile(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
            fmt: FormatOpt = "csv", out: OutOpt = None, version: VersionOpt = "current",
            tz: TzOpt = "UTC",
            season: Annotated[bool, typer.Option("--season", help="Seasonal shapes (winter, spring, summer, autumn).")] = False,
            customers: Annotated[Path | None, typer.Option("--customers", help="customers.csv (meter_id,customer_class): shapes per class.")] = None) -> None:
    """Load shapes: mean kWh per local hour of day (and season), per meter or per class.
    Columns: meter_id|customer_class,[season,]hour,mean_kwh[,meters].

    \b
    Example:
      headend analytics profile --data ./headend-data --tz America/Chicago --season
    """
    from headend.analytics import shapes

    ld = _load(data, from_, to, version, matrix=True)
    m = _matrix(ld).matrix
    try:
        shape = shapes.seasonal_shape(m, tz) if season else shapes.daily_shape(m, tz)
    except ConfigError as exc:
        fail(str(exc))
    if customers is not None:
        c = _read_csv(customers, ["meter_id", "customer_class"])
        idx = ld.registry.idx_for_id(c.column("meter_id"))
        keep = idx >= 0
        mc = pa.table({"meter_idx": pa.array(idx[keep], pa.int32()),
                       "customer_class": c.column("customer_class").filter(pa.array(keep))})
        shape = shapes.class_shape(shape, mc)
    _write(shape, ld.registry, fmt, out)


@analytics_app.command("loading")
def loading(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
            fmt: FormatOpt = "csv", out: OutOpt = None, version: VersionOpt = "current",
            level: Annotated[str, typer.Option("--level", help="transformer or feeder.")] = "transformer",
            transformers: Annotated[Path | None, typer.Option("--transformers", help="transformers.csv (transformer_id,feeder_id,substation_id,kva); a feeder's rating is the sum of its transformers'.")] = None,
            power_factor: Annotated[float, typer.Option("--power-factor", help="kW to kVA.")] = 1.0) -> None:
    """Transformer or feeder loading against rating, most loaded first. Columns:
    asset_id,meters,peak_kw,peak_hour_end,rating_kva,peak_loading_pct,hours_over_rating.

    \b
    Example:
      headend analytics loading --data ./headend-data --transformers transformers.csv
    """
    from headend.analytics import shapes

    if level not in ("transformer", "feeder"):
        fail(f"--level must be transformer or feeder, not {level!r}")
    ld = _load(data, from_, to, version, matrix=True)
    m = _matrix(ld).matrix
    group = np.asarray(ld.registry.attribute(f"{level}_id", m.meter_idx).to_pylist(), dtype=object)
    group = np.where(group == None, "", group)
    rating: dict[str, float] = {}
    if transformers is not None:
        tr = _read_csv(transformers, ["transformer_id", "feeder_id", "kva"])
        key = tr.column(f"{level}_id").to_pylist()
        for k, v in zip(key, tr.column("kva").to_pylist(), strict=True):
            rating[str(k)] = rating.get(str(k), 0.0) + float(v)
    _write(shapes.asset_loading(m, group, rating, power_factor=power_factor), ld.registry,
           fmt, out)


@analytics_app.command("billing")
def billing(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
            fmt: FormatOpt = "csv", out: OutOpt = None, version: VersionOpt = "current",
            tz: TzOpt = "UTC",
            peak: Annotated[str, typer.Option("--peak", help="Weekday peak hours, local, as START-END (end exclusive).")] = "16-21",
            demand: Annotated[bool, typer.Option("--demand", help="Write maximum demand per billing period instead of TOU energy.")] = False) -> None:
    """Billing determinants per local calendar month: energy per TOU period
    (meter_id,period,tou,kwh) or, with --demand, maximum demand
    (meter_id,period,max_kw,max_interval_end,kwh).

    \b
    Example:
      headend analytics billing --data ./headend-data --tz America/Chicago --peak 16-21
    """
    from headend.analytics import shapes

    try:
        a, b = (int(x) for x in peak.split("-"))
    except ValueError:
        fail(f"--peak must be START-END hours, not {peak!r}")
    tou = shapes.TouSchedule(weekday=tuple("peak" if a <= h < b else "off_peak" for h in range(24)))
    ld = _load(data, from_, to, version)
    reg = ld.registry.table()
    ivl = np.zeros(len(reg) + 1, np.int32)
    ivl[reg.column("meter_idx").to_numpy()] = reg.column("interval_s").to_numpy()
    try:
        energy, dem = shapes.billing_determinants(ld.reads, ivl, tz=tz, tou=tou)
    except ConfigError as exc:
        fail(str(exc))
    _write(dem if demand else energy, ld.registry, fmt, out)


@analytics_app.command("forecast")
def forecast(data: DataOption = DEFAULT_DATA_PATH, from_: FromOpt = None, to: ToOpt = None,
             fmt: FormatOpt = "csv", out: OutOpt = None, version: VersionOpt = "current",
             zone: ZoneOpt = None,
             holdout: Annotated[int, typer.Option("--holdout", help="Held-back days at the end.")] = 7,
             error: Annotated[bool, typer.Option("--error", help="Write the MAPE per feeder instead of the forecast.")] = False) -> None:
    """Day-ahead feeder load forecast on held-back days. Columns:
    feeder_id,hour_end,actual_kw,forecast_kw; with --error feeder_id,mape_pct,hours.

    \b
    Example:
      headend analytics forecast --data ./headend-data --holdout 7 --error
    """
    from headend.analytics import shapes
    from headend.analytics.forecast import day_ahead_forecast
    from headend.analytics.matrix import temperature_vector

    ld = _load(data, from_, to, version, matrix=True)
    m = _matrix(ld).matrix
    group = np.asarray(ld.registry.attribute("feeder_id", m.meter_idx).to_pylist(), dtype=object)
    group = np.where(group == None, "", group)
    names, load = shapes.group_load(m, group)
    try:
        temp = temperature_vector(ld.weather, m.t0, m.kwh.shape[1], zone)
        fc, err = day_ahead_forecast(load, temp, m.t0, [str(n) for n in names], holdout=holdout)
    except ConfigError as exc:
        fail(str(exc))
    _write(err if error else fc, ld.registry, fmt, out)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
