"""Benchmark: collector uploads to durable store, against PostgreSQL COPY.

Measures, on reads the simulator makes (no faults), in one run:

* binary frames -> durable store, end to end (decode, HMAC, validate, dedup, fsync);
* canonical CSV -> durable store;
* PostgreSQL COPY of the same reads into a (meter, reading type, interval end)-keyed
  table on the local server (says so plainly when none is reachable);
* bytes per stored interval read after compaction; peak memory.

Figures are medians of ``--repeat`` runs; "per core" divides by the process CPU time.
Usage::

    python bench/bench_ingest.py --meters 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pg_baseline
from _common import dir_bytes, peak_rss_mb, report

from headend.ingest.pipeline import Ingestor
from headend.sim import build_utility
from headend.sim.writers import simulate


def ingest_once(root: Path, static: list[Path], files: list[Path]) -> tuple[float, float, int]:
    shutil.rmtree(root, ignore_errors=True)
    with Ingestor.open(root) as ing:
        ing.ingest_paths(static)
        w0, c0 = time.perf_counter(), time.process_time()
        r = ing.ingest_paths(files)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return wall, cpu, r.accepted + r.duplicate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--interval-minutes", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-csv", action="store_true", help="skip the CSV measurement")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="headend-bench-"))
    sim_dir, root = work / "sim", work / "data"
    u = build_utility(args.meters, seed=1, start=dt.date(2026, 1, 5), days=args.days,
                      interval_s=args.interval_minutes * 60)
    t0 = time.perf_counter()
    fmts = ("frames",) if args.no_csv else ("frames", "csv")
    summary = simulate(u, None, sim_dir, formats=fmts)
    t_sim = time.perf_counter() - t0
    static = [sim_dir / "collectors.csv", sim_dir / "meters.csv"]
    frames = sorted((sim_dir / "uploads").glob("*.hef"))
    fig: dict[str, object] = {
        "meters": args.meters, "days": args.days, "interval_minutes": args.interval_minutes,
        "simulated_rows": summary["rows"], "simulate_s": round(t_sim, 2),
    }

    runs = [ingest_once(root, static, frames) for _ in range(args.repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    rows = runs[0][2]
    fig.update({
        "frames_rows": rows, "frames_wall_s": round(wall, 3), "frames_cpu_s": round(cpu, 3),
        "frames_rows_per_s_wall": round(rows / wall), "frames_rows_per_cpu_s": round(rows / cpu),
    })

    if not args.no_csv:
        csv_files = [sim_dir / "reads.csv", sim_dir / "registers.csv", sim_dir / "events.csv"]
        runs = [ingest_once(work / "data-csv", static, csv_files) for _ in range(args.repeat)]
        wall_c = statistics.median(r[0] for r in runs)
        cpu_c = statistics.median(r[1] for r in runs)
        fig.update({
            "csv_rows": runs[0][2], "csv_wall_s": round(wall_c, 3),
            "csv_rows_per_s_wall": round(runs[0][2] / wall_c),
            "csv_rows_per_cpu_s": round(runs[0][2] / cpu_c),
        })
        shutil.rmtree(work / "data-csv", ignore_errors=True)

    # compaction and size on disk (the frames store of the last run)
    with Ingestor.open(root) as ing:
        t1 = time.perf_counter()
        ing.data.store.compact()
        fig["compact_s"] = round(time.perf_counter() - t1, 2)
        stats = ing.data.store.stats()
        reads = ing.data.store.scan_reads()
    n_reads = stats.rows["reads"]
    fig["stored_interval_reads"] = n_reads
    fig["bytes_per_read"] = round(stats.bytes_on_disk["reads"] / n_reads, 3)
    fig["bytes_per_read_all_files"] = round(dir_bytes(root / "reads") / n_reads, 3)

    why = pg_baseline.reachable()
    if why is not None:
        fig["postgres"] = f"not reachable ({why}): no baseline in this run"
    else:
        pg_runs = [pg_baseline.copy_reads(reads) for _ in range(args.repeat)]
        pg_rate = statistics.median(r.rows_per_s for r in pg_runs)
        fig.update({
            "postgres": f"PostgreSQL {pg_runs[0].server_version} on 127.0.0.1",
            "pg_copy_rows": pg_runs[0].rows,
            "pg_copy_rows_per_s": round(pg_rate),
            "pg_bytes_per_read": round(pg_runs[0].bytes_per_read, 1),
            "ratio_frames_vs_pg_wall": round(fig["frames_rows_per_s_wall"] / pg_rate, 2),  # type: ignore[operator]
            "ratio_interval_reads_only_vs_pg": round(n_reads / wall / pg_rate, 2),
        })
    fig["peak_rss_mb"] = round(peak_rss_mb())
    report("ingest", fig, args.out)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
