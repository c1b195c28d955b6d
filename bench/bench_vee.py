"""Benchmark: VEE core throughput (validation + estimation) per core.

Usage::

    python bench/bench_vee.py [--meters 2000] [--days 30] [--repeat 3] [--with-io]

Generates 15-minute kwh_del reads with 1 % of intervals missing (short and long gaps),
a few spikes and daily register reads, then times :func:`headend.vee.vee_tables` (the
pure core) on one thread (BLAS and Arrow limited to 1 thread). Prints the median
wall time and reads/s; target >= 5,000,000 reads/s per core. ``--with-io`` also times a
full ``run_vee`` over a Parquet data dir (scan + core + diff + version write).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

from headend.model.schema import READS, REGISTERS, TS
from headend.vee import VeeConfig, vee_tables

T0 = 1_704_067_200


def make(meters: int, days: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    n = days * 96
    hour = (np.arange(n) % 96) / 4
    shape = 200 + 150 * np.sin((hour - 6) / 24 * 2 * np.pi).clip(0)
    v = (shape[None, :] * rng.uniform(0.5, 2.0, (meters, 1))
         + rng.integers(0, 40, (meters, n))).astype(np.int32)
    spikes = rng.integers(0, meters * n, meters // 10)
    v.ravel()[spikes] *= 30
    keep = rng.random((meters, n)) > 0.005
    starts = rng.integers(1, n - 40, meters // 20)  # long gaps of 10 h on 5 % of meters
    for i, s in enumerate(starts):
        keep[i, s:s + 40] = False
    keep[:, 0] = keep[:, -1] = True
    m, c = np.nonzero(keep)
    t = T0 + 900 * (c.astype(np.int64) + 1)
    reads = pa.table({"meter_idx": pa.array(m, pa.int32()),
                      "reading_type": pa.array(np.zeros(len(m), np.uint8)),
                      "interval_end": pa.array(t).cast(TS), "value": v[m, c],
                      "quality": pa.array(np.zeros(len(m), np.uint32))}, schema=READS)
    daily = np.concatenate([np.zeros((meters, 1)), np.cumsum(v.reshape(meters, days, 96).sum(2),
                                                             axis=1)], axis=1)
    rm, rd = np.nonzero(np.ones_like(daily, bool))
    regs = pa.table({"meter_idx": pa.array(rm, pa.int32()),
                     "register": pa.array(np.zeros(len(rm), np.uint8)),
                     "read_time": pa.array(T0 + 86_400 * rd.astype(np.int64)).cast(TS),
                     "value": pa.array(daily[rm, rd].astype(np.int64))}, schema=REGISTERS)
    return reads, regs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tz", default="UTC")
    ap.add_argument("--with-io", action="store_true")
    a = ap.parse_args()
    pa.set_cpu_count(1)
    reads, regs = make(a.meters, a.days)
    ivl = np.full(a.meters, 900, np.int32)
    cfg = VeeConfig(tz=a.tz)
    walls, cpus = [], []
    for _ in range(a.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        _, _, summary = vee_tables(reads, ivl, registers=regs, config=cfg)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    med = statistics.median(walls)
    cpu = statistics.median(cpus)
    print(f"VEE core: {reads.num_rows:,} reads ({a.meters:,} meters x {a.days} days, 15 min), "
          f"1 thread, tz={a.tz}")
    print(f"  median {med:.3f} s  ->  {reads.num_rows / med / 1e6:.2f} M reads/s per core "
          f"(target >= 5.00)   runs: {', '.join(f'{w:.3f}' for w in walls)}")
    print(f"  median CPU {cpu:.3f} s  ->  {reads.num_rows / cpu / 1e6:.2f} M reads/s per CPU "
          "second (robust to other load on the machine)")
    print(f"  estimated {summary.estimated:,} ({dict(summary.methods)}), suspect "
          f"{summary.suspect:,} ({dict(summary.rules)})")
    if a.with_io:
        from headend.store import DataDir
        from headend.vee import run_vee

        with tempfile.TemporaryDirectory() as root:
            with DataDir.open(root) as dd:
                n = a.meters
                dd.registry.upsert(pa.table({
                    "meter_id": [f"M{i:07d}" for i in range(n)],
                    "commodity": pa.array(np.zeros(n), pa.uint8()),
                    "technology": pa.array(np.zeros(n), pa.uint8()), "two_way": [True] * n,
                    "collector_id": ["C"] * n, "transformer_id": ["T"] * n,
                    "feeder_id": ["F"] * n, "substation_id": ["S"] * n,
                    "interval_s": pa.array(ivl)}))
                dd.store.append_reads(reads)
                dd.store.append_registers(regs)
            t0 = time.perf_counter()
            s = run_vee(root, config=cfg)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_vee(root, config=cfg)
            second = time.perf_counter() - t0
        print(f"  run_vee with I/O: first run {first:.2f} s ({s.versions_written:,} versions "
              f"written, {reads.num_rows / first / 1e6:.2f} M reads/s); re-run {second:.2f} s")


if __name__ == "__main__":
    main()
