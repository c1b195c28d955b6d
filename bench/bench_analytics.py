"""Benchmark: the Liu et al. (TODS 2016) smart-meter analytics tasks, embedded vs Spark.

Usage::

    python bench/bench_analytics.py [--scale 0.1] [--spark-scale 0.02] [--repeat 3] [--no-spark]

Data shape of the paper's benchmark: 27,300 households x 8,760 hourly reads (one year),
with one temperature series; ``--scale`` takes a fraction of the households. Each task
is timed on data already loaded (hourly table -> engine), as in the paper; medians of
``--repeat`` runs. Spark runs in local mode on ``--spark-scale`` (its JVM and Python
workers need more memory); figures are also extrapolated to the full 27,300 households
(linear in households; quadratic for similarity). Targets at full scale: histogram
<= 5 s, 3-line <= 30 s, PAR <= 30 s, similarity top-10 <= 60 s, anomaly of one day
(25,000 households) <= 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from headend.analytics.matrix import HOURLY

FULL_HOUSEHOLDS = 27_300
HOURS = 8_760
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
TARGETS = {"histogram": 5.0, "threeline": 30.0, "par": 30.0, "similarity": 60.0,
           "anomaly": 1.0}


def make(households: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Hourly consumption with daily, weekly and thermal structure, and temperature."""
    rng = np.random.default_rng(seed)
    h = np.arange(HOURS)
    temp = (10 + 12 * np.sin(2 * np.pi * (h / 8760 - 0.3)) + 5 * np.sin(2 * np.pi * h / 24)
            + rng.normal(0, 2, HOURS)).round(1)
    daily = 0.3 + 0.4 * np.clip(np.sin(2 * np.pi * ((h % 24) - 7) / 24), 0, None)
    heat = rng.uniform(0.0, 0.08, (households, 1)) * np.maximum(15 - temp, 0)
    cool = rng.uniform(0.0, 0.1, (households, 1)) * np.maximum(temp - 22, 0)
    x = (rng.uniform(0.5, 2.0, (households, 1)) * daily + heat + cool
         + rng.gamma(2.0, 0.05, (households, HOURS)))
    hourly = pa.table({"meter_idx": pa.array(np.repeat(np.arange(households, dtype=np.int32),
                                                       HOURS)),
                       "hour_end": pa.array(np.tile(T0 + 3600 * (h + 1), households)),
                       "kwh": x.ravel()}, schema=HOURLY)
    weather = pa.table({"zone": [""] * HOURS,
                        "time": pa.array(T0 + 3600 * (h + 1)).cast(pa.timestamp("s", "UTC")),
                        "temperature_c": temp})
    return hourly, weather


def tasks(engine: Any) -> dict[str, Callable[[], Any]]:
    return {"histogram": engine.histogram, "threeline": engine.threeline, "par": engine.par,
            "similarity": lambda: engine.similarity(k=10),
            "anomaly": lambda: engine.anomaly(dt.date(2024, 12, 1))}


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def extrapolate(task: str, seconds: float, households: int) -> float:
    f = FULL_HOUSEHOLDS / households
    return seconds * (f * f if task == "similarity" else f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--spark-scale", type=float, default=0.02)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-spark", action="store_true")
    a = ap.parse_args()
    from headend.analytics import EmbeddedEngine

    n_emb = max(2, round(FULL_HOUSEHOLDS * a.scale))
    hourly, weather = make(n_emb)
    e = EmbeddedEngine()
    t0 = time.perf_counter()
    e.load_hourly(hourly, weather)
    print(f"embedded (DuckDB + NumPy): {n_emb:,} households x {HOURS:,} h "
          f"({hourly.num_rows:,} reads), load {time.perf_counter() - t0:.1f} s")
    emb = {k: median_time(fn, a.repeat) for k, fn in tasks(e).items()}
    del e, hourly
    sp: dict[str, float] = {}
    n_sp = max(2, round(FULL_HOUSEHOLDS * a.spark_scale))
    if not a.no_spark:
        from headend.analytics.spark import SparkEngine, spark_session

        hourly, weather = make(n_sp)
        t0 = time.perf_counter()
        s = SparkEngine(spark_session(), partitions=2)
        s.load_hourly(hourly, weather)
        print(f"spark (local[2]): {n_sp:,} households ({hourly.num_rows:,} reads), session + "
              f"load {time.perf_counter() - t0:.1f} s")
        sp = {k: median_time(fn, max(1, a.repeat - 1)) for k, fn in tasks(s).items()}
        s.close()
        # the embedded engine on the Spark-sized data, for a like-for-like ratio
        from headend.analytics import EmbeddedEngine as E2

        e2 = E2()
        e2.load_hourly(hourly, weather)
        emb_small = {k: median_time(fn, a.repeat) for k, fn in tasks(e2).items()}
    print()
    print(f"{'task':<11} {'embedded s':>11} {'full-scale s':>13} {'target s':>9}  "
          + (f"{'spark s':>9} {'embedded s':>11} {'spark/emb':>10}  (at {n_sp:,} households)"
             if sp else ""))
    for k, v in emb.items():
        full = extrapolate(k, v, n_emb)
        line = (f"{k:<11} {v:>11.3f} {full:>13.2f} {TARGETS[k]:>9.1f} "
                f"{'ok' if full <= TARGETS[k] else 'MISS':>4}")
        if sp:
            line += f" {sp[k]:>9.3f} {emb_small[k]:>11.3f} {sp[k] / emb_small[k]:>10.1f}"
        print(line)
    print("(medians; full-scale = extrapolated to 27,300 households; anomaly target is for "
          "25,000 households)")


if __name__ == "__main__":
    main()
