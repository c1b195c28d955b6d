"""Benchmark: the Liu et al. (TODS 2016) smart-meter analytics tasks, embedded vs Spark.

Usage::

    python bench/bench_analytics.py [--households 27300] [--spark-households 1365]
        [--repeat 3] [--workdir /work/bench-analytics] [--no-spark] [--keep] [--store DIR]
        [--compare-scan] [--tasks-only]

Data shape of the paper's benchmark: 27,300 households x 8,760 hourly reads (one year,
239M reads) with one temperature series. The reads are generated once (in chunks of
households) as interval reads (``kwh_del``, 1 Wh resolution) into a headend
:class:`~headend.store.ParquetStore` and a :class:`~headend.analytics.WeatherStore` in
``--workdir`` (deleted afterwards unless ``--keep``).

Timings (wall, median of ``--repeat`` runs unless said):

* ``load``: read cold from the store (the store's files are evicted from the page cache
  first with ``posix_fadvise(DONTNEED)``, only those files): the embedded engine streams
  the store into its hourly matrix (``EmbeddedEngine.load_store``); Spark loads the table
  of ``ParquetStore.scan_reads``; ``--compare-scan`` also times the embedded engine
  through ``scan_reads`` + ``load`` in the same run. Once.
* each task on the loaded engine; ``end_to_end`` = load + task is what a CLI verb costs.
* embedded similarity: ``method="auto"`` (projected above 4,096 households); its
  recall@10 against the exact top-10 of a seeded sample of ``--recall-sample``
  households (exact float64 against all households) is measured on the same data.
* Spark (local[2]) and the embedded engine both load the same first
  ``--spark-households`` households from the same store in the same run; ratio
  Spark / embedded per task.

Figures are printed and saved to ``bench/out/analytics.json``. Targets at full scale:
histogram <= 5 s, 3-line <= 30 s, PAR <= 30 s, similarity top-10 <= 60 s, anomaly of one
day (25,000 households) <= 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FULL_HOUSEHOLDS = 27_300
HOURS = 8_760
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
TARGETS = {"histogram": 5.0, "threeline": 30.0, "par": 30.0, "similarity": 60.0,
           "anomaly": 1.0}
ANOMALY_DAY = dt.date(2024, 12, 1)
OUT = Path(__file__).resolve().parent / "out" / "analytics.json"


def temperature(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.arange(HOURS)
    return (10 + 12 * np.sin(2 * np.pi * (h / 8760 - 0.3)) + 5 * np.sin(2 * np.pi * h / 24)
            + rng.normal(0, 2, HOURS)).round(1)


def consumption(first: int, n: int, temp: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hourly kWh (n, 8760) of households ``first .. first + n - 1``: daily shape, heating
    and cooling gradients, gamma noise; deterministic per household chunk."""
    rng = np.random.default_rng([seed, first])
    h = np.arange(HOURS)
    daily = 0.3 + 0.4 * np.clip(np.sin(2 * np.pi * ((h % 24) - 7) / 24), 0, None)
    heat = rng.uniform(0.0, 0.08, (n, 1)) * np.maximum(15 - temp, 0)
    cool = rng.uniform(0.0, 0.1, (n, 1)) * np.maximum(temp - 22, 0)
    return (rng.uniform(0.5, 2.0, (n, 1)) * daily + heat + cool
            + rng.gamma(2.0, 0.05, (n, HOURS)))


def build_store(root: Path, households: int, chunk: int = 1000) -> dict[str, float]:
    """Write the interval reads and the weather into a headend data directory."""
    from headend.analytics import WeatherStore
    from headend.model.schema import READS
    from headend.store import ParquetStore

    temp = temperature()
    ends = (T0 + 3600 * (np.arange(HOURS) + 1)).astype("datetime64[s]")
    t0 = time.perf_counter()
    with ParquetStore(root) as store:
        for first in range(0, households, chunk):
            n = min(chunk, households - first)
            wh = np.rint(consumption(first, n, temp) * 1000).astype(np.int32)  # 1 Wh units
            reads = pa.table({
                "meter_idx": np.repeat(np.arange(first, first + n, dtype=np.int32), HOURS),
                "reading_type": pa.array(np.zeros(n * HOURS, np.uint8)),
                "interval_end": pa.array(np.tile(ends, n), READS.field("interval_end").type),
                "value": wh.ravel(),
                "quality": pa.array(np.zeros(n * HOURS, np.uint32)),
            }, schema=READS)
            store.append_reads(reads)
        store.compact()
    WeatherStore(root).append(pa.table({
        "zone": [""] * HOURS, "time": pa.array(ends, pa.timestamp("s", "UTC")),
        "temperature_c": temp}))
    wall = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {"build_s": wall, "store_mb": size / 1e6}


def evict(root: Path) -> None:
    """Drop this store's files (only these) from the OS page cache: a cold read."""
    os.sync()
    for f in root.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cold_load(root: Path, engine: Any, meters: np.ndarray | None = None, *,
              via_scan: bool = False) -> dict[str, float]:
    """Read the store cold into ``engine``; wall of each step [s].

    The embedded engine streams the store into its matrix (``load_store``) unless
    ``via_scan``; Spark (and ``via_scan``) loads the table of ``scan_reads``.
    """
    from headend.analytics import WeatherStore
    from headend.store import ParquetStore

    evict(root)
    rt = np.array([0], np.uint8)
    t0 = time.perf_counter()
    with ParquetStore(root) as store:
        weather = WeatherStore(root).load()
        if hasattr(engine, "load_store") and not via_scan:
            engine.load_store(store, weather, meters=meters)  # Spark: eager (cached)
            t2 = time.perf_counter()
            m = engine.matrix if hasattr(engine, "matrix") else None
            return {"scan_s": 0.0, "engine_load_s": t2 - t0, "load_s": t2 - t0,
                    "hours": float(np.isfinite(m.kwh).sum()) if m is not None else None,
                    "path": "load_store"}
        reads = store.scan_reads(meters=meters, reading_types=rt)
    t1 = time.perf_counter()
    engine.load(reads, weather)
    t2 = time.perf_counter()
    return {"scan_s": t1 - t0, "engine_load_s": t2 - t1, "load_s": t2 - t0,
            "reads": float(reads.num_rows), "path": "scan_reads + load"}


def cold_anomaly(root: Path) -> dict[str, Any]:
    """Anomaly detection of one day read cold from the store's daily rollups (what
    ``headend analytics anomaly`` does on the embedded engine); median of 3 cold runs."""
    from headend.analytics.daily import anomaly_from_store
    from headend.store import ParquetStore

    walls = []
    for _ in range(3):
        evict(root)
        t0 = time.perf_counter()
        with ParquetStore(root) as store:
            out = anomaly_from_store(store, ANOMALY_DAY)
        walls.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(walls), "walls_s": walls, "rows": out.num_rows,
            "anomalies": int(sum(out.column("anomaly").to_pylist())), "uptime": loadavg()}


def cold_histogram(root: Path) -> dict[str, Any]:
    """The histogram streamed cold from the store's files (what ``headend analytics
    histogram`` does when every household is in one file and VEE changed nothing);
    median of 3 cold runs, each in a new process."""
    code = ("import sys, time; from pathlib import Path; sys.path.insert(0, {bench!r}); "
            "import bench_analytics as b; from headend.store import ParquetStore; "
            "from headend.analytics.stream import histogram_from_store; "
            "b.evict(Path({root!r})); t0 = time.perf_counter(); "
            "s = ParquetStore(Path({root!r})); out = histogram_from_store(s); s.close(); "
            "print(time.perf_counter() - t0, out.num_rows)")
    walls, rows = [], 0
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code.format(
            bench=str(Path(__file__).parent), root=str(root))], check=True,
            capture_output=True, text=True)
        w, n = r.stdout.split()
        walls.append(float(w))
        rows = int(n)
    return {"median_s": statistics.median(walls), "walls_s": walls, "rows": rows,
            "uptime": loadavg()}


def tasks(engine: Any) -> dict[str, Callable[[], Any]]:
    return {"histogram": engine.histogram, "threeline": engine.threeline, "par": engine.par,
            "similarity": lambda: engine.similarity(k=10),
            "anomaly": lambda: engine.anomaly(ANOMALY_DAY)}


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), walls


def loadavg() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def run_tasks(engine: Any, repeat: int, sim_repeat: int) -> dict[str, dict[str, Any]]:
    out = {}
    for name, fn in tasks(engine).items():
        med, walls = median_time(fn, sim_repeat if name == "similarity" else repeat)
        out[name] = {"median_s": med, "walls_s": walls, "uptime": loadavg()}
        print(f"  {name:<11} {med:8.3f} s  {[f'{w:.2f}' for w in walls]}  "
              f"[{out[name]['uptime'].split('load average:')[-1].strip()}]", flush=True)
    return out


def recall(engine: Any, sample: int, projected: Any) -> dict[str, float]:
    """recall@10 of the embedded result against exact top-10 for a seeded sample."""
    from headend.analytics import liu
    from headend.analytics.similarity import recall_at_k

    x = engine.matrix.kwh
    h = x.shape[0]
    q = np.sort(np.random.default_rng(7).choice(h, size=min(sample, h), replace=False))
    t0 = time.perf_counter()
    exact, ecos = liu.similarity(x, 10, rows=q, method="exact")
    wall = time.perf_counter() - t0
    found = np.asarray(projected.column("other_meter_idx").to_numpy()).reshape(h, -1)[q]
    fcos = np.asarray(projected.column("cosine").to_numpy()).reshape(h, -1)[q]
    # positions whose k-th cosine equals the exact one count as found (ties)
    return {"recall_at_10": recall_at_k(found, exact), "rows": float(len(q)),
            "exact_rows_s": wall,
            "max_abs_cos_diff_rank1": float(np.max(np.abs(fcos[:, 0] - ecos[:, 0])))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=FULL_HOUSEHOLDS)
    ap.add_argument("--spark-households", type=int, default=1365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--similarity-repeat", type=int, default=3)
    ap.add_argument("--recall-sample", type=int, default=2000)
    ap.add_argument("--workdir", type=Path, default=Path("/work/bench-analytics"))
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--spark-driver-memory", default="8g")
    ap.add_argument("--compare-scan", action="store_true",
                    help="also load through scan_reads + load (the table path), same run")
    ap.add_argument("--tasks-only", action="store_true",
                    help="embedded load and tasks only (no recall, no Spark)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--store", type=Path, default=None,
                    help="use this already built data directory (not deleted)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    from headend.analytics import EmbeddedEngine

    res: dict[str, Any] = {"households": a.households, "hours": HOURS,
                           "cpus": os.cpu_count(), "started": dt.datetime.now(dt.UTC).isoformat()}
    root = a.store or a.workdir
    keep = a.keep or a.store is not None
    if a.store is None and root.exists():
        shutil.rmtree(root)
    try:
        if a.store is None:
            print(f"building store: {a.households:,} households x {HOURS:,} h "
                  f"({a.households * HOURS:,} reads) in {root}", flush=True)
            res["store"] = build_store(root, a.households)
            print(f"  {res['store']['build_s']:.1f} s, {res['store']['store_mb']:.0f} MB",
                  flush=True)

        e = EmbeddedEngine()
        res["embedded_load"] = cold_load(root, e)
        res["embedded_load"]["uptime"] = loadavg()
        ld = res["embedded_load"]
        print(f"embedded, cold load from store ({ld['path']}): {ld['load_s']:.2f} s "
              f"[{res['embedded_load']['uptime'].split('load average:')[-1].strip()}]", flush=True)
        if a.compare_scan:
            e_scan = EmbeddedEngine()
            res["embedded_load_via_scan"] = cold_load(root, e_scan, via_scan=True)
            res["embedded_load_via_scan"]["uptime"] = loadavg()
            ls = res["embedded_load_via_scan"]
            print(f"  baseline, same run: scan_reads {ls['scan_s']:.1f} s + load "
                  f"{ls['engine_load_s']:.1f} s = {ls['load_s']:.1f} s "
                  f"({ls['load_s'] / ld['load_s']:.1f}x)", flush=True)
            assert np.array_equal(np.isnan(e_scan.matrix.kwh), np.isnan(e.matrix.kwh))
            assert np.array_equal(np.nan_to_num(e_scan.matrix.kwh), np.nan_to_num(e.matrix.kwh))
            del e_scan
        res["embedded"] = run_tasks(e, a.repeat, a.similarity_repeat)
        res["histogram_cold"] = cold_histogram(root)
        hc = res["histogram_cold"]
        print(f"  histogram, streamed cold from the files (new process each): "
              f"{hc['median_s']:.3f} s {[f'{w:.2f}' for w in hc['walls_s']]}", flush=True)
        res["anomaly_cold"] = cold_anomaly(root)
        ac = res["anomaly_cold"]
        print(f"  anomaly, cold from the daily rollups: {ac['median_s']:.3f} s "
              f"{[f'{w:.2f}' for w in ac['walls_s']]} ({ac['rows']:,} households)", flush=True)
        if a.tasks_only:
            a.no_spark = True
            a.recall_sample = 0
        sim = e.similarity(k=10) if a.recall_sample else None
        if sim is not None:
            res["similarity_recall"] = recall(e, a.recall_sample, sim)
            print(f"  similarity recall@10 on {a.recall_sample:,} households vs exact: "
                  f"{res['similarity_recall']['recall_at_10']:.4f}", flush=True)
        e.close()
        del e, sim

        if not a.no_spark:
            from headend.analytics.spark import SparkEngine, spark_session

            meters = np.arange(min(a.spark_households, a.households), dtype=np.int32)
            res["spark_households"] = len(meters)
            t0 = time.perf_counter()
            s = SparkEngine(spark_session(driver_memory=a.spark_driver_memory), partitions=2)
            res["spark_session_s"] = time.perf_counter() - t0
            res["spark_load"] = cold_load(root, s, meters)
            print(f"spark (local[2], load_store) on {len(meters):,} households: session "
                  f"{res['spark_session_s']:.1f} s, cold load {res['spark_load']['load_s']:.1f} s",
                  flush=True)
            res["spark"] = run_tasks(s, max(1, a.repeat - 1), max(1, a.repeat - 1))
            s.close()
            e2 = EmbeddedEngine()
            res["embedded_small_load"] = cold_load(root, e2, meters)
            print(f"embedded on the same {len(meters):,} households: cold load "
                  f"{res['embedded_small_load']['load_s']:.1f} s", flush=True)
            res["embedded_small"] = run_tasks(e2, a.repeat, a.repeat)
            e2.close()
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    res["finished"] = dt.datetime.now(dt.UTC).isoformat()

    print()
    load = res["embedded_load"]["load_s"]
    print(f"embedded, {a.households:,} households (cold load {load:.1f} s):")
    print(f"{'task':<11} {'task s':>8} {'cold total s':>13} {'target s':>9}")
    for k, v in res["embedded"].items():
        total = (res["anomaly_cold"]["median_s"] if k == "anomaly" else
                 res["histogram_cold"]["median_s"] if k == "histogram" else
                 load + v["median_s"])
        print(f"{k:<11} {v['median_s']:>8.2f} {total:>13.2f} "
              f"{TARGETS[k]:>9.1f} {'ok' if total <= TARGETS[k] else 'MISS':>4}")
    if "spark" in res:
        n = res["spark_households"]
        sl, el = res["spark_load"]["load_s"], res["embedded_small_load"]["load_s"]
        print(f"\nsame {n:,} households, both engines: load spark {sl:.1f} s, "
              f"embedded {el:.1f} s, ratio {sl / el:.1f}")
        print(f"{'task':<11} {'spark s':>9} {'embedded s':>11} {'spark/emb':>10}")
        for k in res["spark"]:
            sp, em = res["spark"][k]["median_s"], res["embedded_small"][k]["median_s"]
            print(f"{k:<11} {sp:>9.3f} {em:>11.3f} {sp / em:>10.1f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(f"\nsaved {a.out}")


if __name__ == "__main__":
    main()
