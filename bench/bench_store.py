"""Benchmark of the Parquet store: append rate, bytes per read, query latencies.

Builds a store of ``meters x days x channels`` 15-minute reads of realistic-ish load
profiles (smooth daily shapes scaled per meter, noise, integer Wh, a share of meters
with rooftop solar on ``kwh_rec``), then measures:

* append rate [reads/s] on one core, dedup included (1 % of each batch re-sent);
* bytes per stored read after compaction (day files, then month files);
* one meter-year (``meter_history``) latency, p50 over random meters;
* a feeder-day aggregate (``feeder_interval_sum``) latency, p50 over random feeders.

Run::

    python bench/bench_store.py --meters 2048 --days 365          # ~143 M reads
    python bench/bench_store.py --meters 40000 --days 365 --dir /big/tmp   # ~1 B reads
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from headend.model import schema as S
from headend.store import MeterRegistry, ParquetStore, StoreConfig

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400


def day_profile() -> np.ndarray:
    """Relative residential load per 15-minute interval (96 values, mean ~1)."""
    h = (np.arange(96) + 1) / 4.0
    p = (0.45 + 0.35 * np.exp(-((h - 7.5) ** 2) / 2.0) + 0.9 * np.exp(-((h - 19.0) ** 2) / 4.5)
         + 0.15 * np.sin(h / 24 * 2 * np.pi))
    return p / p.mean()


def solar_profile() -> np.ndarray:
    h = (np.arange(96) + 1) / 4.0
    return np.clip(np.cos((h - 13.0) / 7.0 * np.pi / 1.0), 0, None) ** 1.5


def make_day(meter0: int, n: int, day: int, rng: np.random.Generator,
             scale: np.ndarray, solar: np.ndarray) -> pa.Table:
    """One day of 2 channels for meters [meter0, meter0+n), in collector order."""
    t = T0 + day * DAY + 900 * (1 + np.arange(96, dtype=np.int64))
    season = 1.0 + 0.25 * np.cos((day - 15) / 365 * 2 * np.pi)
    base = day_profile()[None, :] * (scale[:, None] * season)  # Wh per interval
    noise = rng.gamma(4.0, 0.25, (n, 96))
    v_del = np.rint(base * noise).astype(np.int32)
    sun = solar_profile()[None, :] * solar[:, None] * rng.uniform(0.6, 1.0, (n, 1))
    v_rec = np.rint(np.clip(sun * 1.0 - base * 0.5, 0, None)
                    * rng.uniform(0.9, 1.1, (n, 96))).astype(np.int32)
    m = np.repeat(np.arange(meter0, meter0 + n, dtype=np.int32), 192)
    rt = np.tile(np.repeat(np.array([0, 1], np.uint8), 96), n)
    tt = np.tile(np.tile(t, 2), n)
    v = np.stack([v_del, v_rec], axis=1).reshape(-1)
    q = np.zeros(len(v), np.uint32)
    q[rng.random(len(v)) < 0.001] = 1 << 10
    return pa.table([pa.array(m), pa.array(rt), pa.array(tt).cast(S.TS), pa.array(v),
                     pa.array(q)], schema=S.READS)


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def bench_registry(n: int, parent: Path) -> None:
    """Lookup rates of a registry of ``n`` meters with numeric ids."""
    root = Path(tempfile.mkdtemp(prefix="bench-registry-", dir=parent))
    try:
        ids = pa.array(np.char.mod("%d", 10**9 + np.arange(n)).astype(object), pa.string())
        t = pa.table({
            "meter_id": ids, "commodity": pa.array(np.zeros(n, np.uint8)),
            "technology": pa.array(np.zeros(n, np.uint8)), "two_way": pa.array(np.ones(n, bool)),
            "collector_id": pa.array(np.char.mod("C%d", np.arange(n) // 500).astype(object)),
            "transformer_id": pa.array(np.char.mod("T%d", np.arange(n) // 8).astype(object)),
            "feeder_id": pa.array(np.char.mod("F%d", np.arange(n) // 1000).astype(object)),
            "substation_id": pa.array(np.char.mod("S%d", np.arange(n) // 20000).astype(object)),
            "interval_s": pa.array(np.full(n, 900, np.int32))})
        c0 = time.perf_counter()
        reg = MeterRegistry(root)
        reg.upsert(t)
        print(f"registry: upsert {n:,} meters {time.perf_counter() - c0:.1f} s")
        rng = np.random.default_rng(1)
        q = (10**9 + rng.integers(0, n, 2_000_000)).astype(np.uint64)
        reg.idx_for_serial(q[:10])
        c0 = time.perf_counter()
        got = reg.idx_for_serial(q)
        dt = time.perf_counter() - c0
        assert reg.ids(got[:1000]).to_pylist() == [str(x) for x in q[:1000].tolist()]
        print(f"registry: idx_for_serial {len(q) / dt / 1e6:.1f} M lookups/s")
        qs = ids.take(pa.array(rng.integers(0, n, 2_000_000)))
        c0 = time.perf_counter()
        reg.idx_for_id(qs)
        print(f"registry: idx_for_id {len(qs) / (time.perf_counter() - c0) / 1e6:.1f} M lookups/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=2048)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--batch-meters", type=int, default=20_000,
                    help="meters per append batch (x192 reads)")
    ap.add_argument("--feeder", type=int, default=1000, help="meters per feeder")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--bucket-bits", type=int, default=16)
    ap.add_argument("--zstd", type=int, default=StoreConfig().zstd_level)
    ap.add_argument("--top-level", default="month", choices=["day", "month", "year"])
    ap.add_argument("--dir", type=Path, default=None, help="parent of the store (default tmp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--registry-meters", type=int, default=0,
                    help="also time registry lookups with this many meters")
    args = ap.parse_args()

    parent = args.dir or Path(tempfile.gettempdir())
    if args.registry_meters:
        bench_registry(args.registry_meters, parent)
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=parent))
    end_t = T0 + (args.days + 40) * DAY
    cfg = StoreConfig(bucket_bits=args.bucket_bits, zstd_level=args.zstd,
                      top_level=args.top_level)
    rng = np.random.default_rng(42)
    scale = rng.lognormal(np.log(120.0), 0.6, args.meters)  # mean Wh per 15 min
    solar = np.where(rng.random(args.meters) < 0.15, rng.uniform(300, 1200, args.meters), 0)
    store = ParquetStore(root, config=cfg, clock=lambda: end_t)
    total = 0
    append_s = 0.0
    dups = 0
    try:
        for day in range(args.days):
            for m0 in range(0, args.meters, args.batch_meters):
                n = min(args.batch_meters, args.meters - m0)
                t = make_day(m0, n, day, rng, scale[m0:m0 + n], solar[m0:m0 + n])
                k = len(t) // 100
                resend = t.slice(0, k)  # 1 % re-sent in the same batch (dedup work)
                t = pa.concat_tables([t, resend])
                c0 = time.process_time()
                r = store.append_reads(t)
                append_s += time.process_time() - c0
                total += r.accepted
                dups += r.duplicate
            if day % 30 == 29:
                print(f"day {day + 1}: {total / 1e6:.1f} M reads, "
                      f"append {total / append_s / 1e6:.2f} M reads/s (CPU)", flush=True)
        print(f"appended {total:,} reads ({dups:,} duplicates dropped): "
              f"{(total + dups) / append_s / 1e6:.2f} M reads/s per core (CPU time)")
        c0 = time.perf_counter()
        store.compact()
        print(f"compact: {time.perf_counter() - c0:.1f} s")
        st = store.stats()
        print(f"rows {st.rows['reads']:,}; {st.bytes_on_disk['reads'] / st.rows['reads']:.3f} "
              f"bytes/read; files {st.compacted_files['reads']}, partitions "
              f"{st.partitions['reads']}")
        assert st.rows["reads"] == total
        store.close()
        store = ParquetStore(root, config=cfg, clock=lambda: end_t)
        print(f"peak RSS after ingest + compaction "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB", flush=True)
        if args.queries > 0:
            y1 = T0 + args.days * DAY + 1
            lat = []
            for i in range(args.queries + 5):
                m = int(rng.integers(0, args.meters))
                c0 = time.perf_counter()
                h = store.meter_history(m, 0, T0, y1)
                dt = time.perf_counter() - c0
                if i >= 5:
                    lat.append(dt)
                assert len(h) == args.days * 96
            print(f"meter history ({args.days * 96} reads): p50 {p50(lat):.2f} ms, "
                  f"p90 {np.percentile(lat, 90) * 1e3:.2f} ms")
            lat = []
            f = min(args.feeder, args.meters)
            for i in range(args.queries + 5):
                lo = int(rng.integers(0, args.meters - f + 1))
                d = T0 + int(rng.integers(0, args.days)) * DAY
                c0 = time.perf_counter()
                agg = store.feeder_interval_sum(lo, lo + f, 0, d)
                dt = time.perf_counter() - c0
                if i >= 5:
                    lat.append(dt)
                assert int(agg.column("meters").to_numpy().sum()) in (f * 96, f * 95)
            print(f"feeder-day sum ({f} meters): p50 {p50(lat):.2f} ms, "
                  f"p90 {np.percentile(lat, 90) * 1e3:.2f} ms")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("store kept at", root)


if __name__ == "__main__":
    main()
