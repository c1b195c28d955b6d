"""Benchmark of the Parquet store: append rate, bytes per read, query latencies.

Builds a store of ``meters x days x channels`` 15-minute reads of realistic-ish load
profiles (smooth daily shapes scaled per meter, noise, integer Wh, a share of meters
with rooftop solar on ``kwh_rec``), then measures:

* append rate [reads/s], wall and process CPU, dedup included (1 % re-sent);
* compaction time, and bytes per stored read of all live files and their sidecars
  (default ``top_level="year"``, year files split by part_rows, block sums of
  ``--block-meters`` meters; ``--day-copies`` adds the old full day copies), with the
  share of each kind of file;
* one meter-year (``meter_history``) latency, p50/p99 over random meters, cold (first
  query of each meter after reopening the store) and warm;
* a feeder-day aggregate (``feeder_interval_sum``) latency, p50/p99;
* ``--json`` writes the figures; ``--keep`` / ``--reuse DIR`` measure a store again.

Run::

    python bench/bench_store.py --meters 2000 --days 30                     # < 1 min
    python bench/bench_store.py --meters 14300 --days 365 --dir /work/tmp \
        --json bench/out/store.json                                        # ~1.0 B reads
"""

from __future__ import annotations

import argparse
import json
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


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1e3


def build(args: argparse.Namespace, root: Path, cfg: StoreConfig, end_t: int,
          rng: np.random.Generator, out: dict[str, object]) -> None:
    """Append ``meters x days`` of reads (1 % re-sent), then compact."""
    scale = rng.lognormal(np.log(120.0), 0.6, args.meters)  # mean Wh per 15 min
    solar = np.where(rng.random(args.meters) < 0.15, rng.uniform(300, 1200, args.meters), 0)
    store = ParquetStore(root, config=cfg, clock=lambda: end_t)
    total = dups = 0
    cpu = wall = 0.0
    try:
        for day in range(args.days):
            for m0 in range(0, args.meters, args.batch_meters):
                n = min(args.batch_meters, args.meters - m0)
                t = make_day(m0, n, day, rng, scale[m0:m0 + n], solar[m0:m0 + n])
                t = pa.concat_tables([t, t.slice(0, len(t) // 100)])  # 1 % re-sent
                c0, w0 = time.process_time(), time.perf_counter()
                r = store.append_reads(t)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
                total += r.accepted
                dups += r.duplicate
            if day % 30 == 29:
                print(f"day {day + 1}: {total / 1e6:.1f} M reads, append "
                      f"{(total + dups) / wall / 1e6:.2f} M reads/s wall", flush=True)
        print(f"appended {total:,} reads ({dups:,} duplicates dropped): "
              f"{(total + dups) / wall / 1e6:.2f} M reads/s wall, "
              f"{(total + dups) / cpu / 1e6:.2f} M reads/s process CPU "
              f"(incl. background day compaction)")
        c0 = time.perf_counter()
        store.compact()
        comp = time.perf_counter() - c0
        print(f"compact: {comp:.1f} s", flush=True)
        out.update(appended=total, duplicates=dups, append_wall_s=wall, append_cpu_s=cpu,
                   append_reads_per_s_wall=(total + dups) / wall,
                   append_reads_per_s_cpu=(total + dups) / cpu, compact_s=comp,
                   build_peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
    finally:
        store.close()


def by_kind(root: Path) -> dict[str, int]:
    """Bytes of the reads tree by kind of file (a hard-linked copy counted once)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for p in (root / "reads").rglob("*"):
        st = p.stat()
        if not p.is_file() or p.name.startswith(".tmp-") or st.st_ino in seen:
            continue
        seen.add(st.st_ino)
        k = ("daily rollups" if p.name.endswith(".daily") else "block sums"
             if p.name.endswith(".blocks") else p.name.split("-")[0])
        out[k] = out.get(k, 0) + st.st_size
    return dict(sorted(out.items()))


def measure(args: argparse.Namespace, root: Path, cfg: StoreConfig, end_t: int,
            rng: np.random.Generator, out: dict[str, object]) -> None:
    store = ParquetStore(root, config=cfg, clock=lambda: end_t)
    try:
        st = store.stats()
        rows, size = st.rows["reads"], st.bytes_on_disk["reads"]
        du = sum(p.stat().st_size for p in (root / "reads").rglob("*.parquet")
                 if p.stat().st_nlink == 1 or p.name.startswith("dcp-"))
        print(f"rows {rows:,}; {size / rows:.3f} bytes/read (all live files and "
              f"sidecars, {size / 1e9:.2f} GB); files {st.compacted_files['reads']}")
        share = by_kind(root)
        print("bytes/read by kind: " + ", ".join(f"{k} {v / rows:.4f}"
                                                 for k, v in share.items()))
        out.update(rows=rows, bytes=size, bytes_per_read=size / rows, parquet_bytes=du,
                   compacted_files=st.compacted_files["reads"],
                   bytes_per_read_by_kind={k: v / rows for k, v in share.items()})
        if args.queries <= 0:
            return
        # one-time process warm-up (pyarrow imports pandas on a first timestamp
        # to_numpy, ~0.3 s): not a store cost, kept out of the cold figures
        pa.array([0], pa.int64()).cast(S.TS).to_numpy(zero_copy_only=False)
        y1 = T0 + args.days * DAY + 1
        ms = rng.choice(args.meters, min(args.queries, args.meters), replace=False)
        for phase in ("cold", "warm"):  # cold: first query of each meter after reopen
            lat = []
            for m in ms.tolist():
                c0 = time.perf_counter()
                h = store.meter_history(m, 0, T0, y1)
                lat.append(time.perf_counter() - c0)
                assert len(h) == args.days * 96
            print(f"meter-year {phase} ({args.days * 96} reads): p50 {p50(lat):.2f} ms, "
                  f"p99 {pct(lat, 99):.2f} ms, max {max(lat) * 1e3:.1f} ms")
            out[f"meter_year_{phase}_ms"] = {"p50": p50(lat), "p99": pct(lat, 99),
                                             "max": max(lat) * 1e3}
        f = min(args.feeder, args.meters)
        for phase in ("cold", "warm"):
            lat = []
            qs = [(int(rng.integers(0, args.meters - f + 1)),
                   T0 + int(rng.integers(0, args.days)) * DAY) for _ in range(args.queries)]
            for lo, d in qs:
                c0 = time.perf_counter()
                agg = store.feeder_interval_sum(lo, lo + f, 0, d)
                lat.append(time.perf_counter() - c0)
                assert int(agg.column("meters").to_numpy().sum()) in (f * 96, f * 95)
            print(f"feeder-day {phase} sum ({f} meters): p50 {p50(lat):.2f} ms, "
                  f"p99 {pct(lat, 99):.2f} ms, max {max(lat) * 1e3:.1f} ms")
            out[f"feeder_day_{phase}_ms"] = {"p50": p50(lat), "p99": pct(lat, 99),
                                             "max": max(lat) * 1e3}
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"peak RSS {out['peak_rss_gb']:.2f} GB")
    finally:
        store.close()


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
    ap.add_argument("--top-level", default="year", choices=["day", "month", "year"])
    ap.add_argument("--day-copies", action="store_true",
                    help="also keep dcp-MMDD day copies (feeder-days read them)")
    ap.add_argument("--block-meters", type=int, default=StoreConfig().block_meters,
                    help="meters per block of the block-sum sidecars (0: none)")
    ap.add_argument("--merge-rows", type=int, default=32_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the store (default tmp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="measure an existing store (built with the same --meters/--days)")
    ap.add_argument("--recompact", action="store_true", help="with --reuse: compact first")
    ap.add_argument("--part-rows", type=int, default=StoreConfig().part_rows)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--registry-meters", type=int, default=0,
                    help="also time registry lookups with this many meters")
    args = ap.parse_args()

    parent = args.dir or Path(tempfile.gettempdir())
    if args.registry_meters:
        bench_registry(args.registry_meters, parent)
    end_t = T0 + (args.days + 40) * DAY
    cfg = StoreConfig(bucket_bits=args.bucket_bits, zstd_level=args.zstd,
                      top_level=args.top_level, day_copies=args.day_copies,
                      block_meters=args.block_meters,
                      merge_rows=args.merge_rows, part_rows=args.part_rows)
    rng = np.random.default_rng(42)
    out: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    root = args.reuse or Path(tempfile.mkdtemp(prefix="bench-store-", dir=parent))
    try:
        if args.reuse is None:
            build(args, root, cfg, end_t, rng, out)
        elif args.recompact:  # e.g. re-split a year file written before part_rows
            with ParquetStore(root, config=cfg, clock=lambda: end_t) as st:
                c0 = time.perf_counter()
                st.compact()
                out["recompact_s"] = time.perf_counter() - c0
                print(f"re-compact: {out['recompact_s']:.1f} s", flush=True)
        measure(args, root, cfg, end_t, rng, out)
    finally:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))
        if args.keep or args.reuse is not None:
            print("store kept at", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
