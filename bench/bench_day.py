"""Benchmark: a whole utility-day simulated and ingested on this machine.

The reference RF network (issue: 4,000,000 meters x 2 interval channels every 15 minutes
plus one daily payload = 772M packets a day) is simulated by one process that writes
each upload cycle (all collectors' frames, back to back) into a spool folder, while this
process ingests the spool as it fills, deleting each cycle file once it is durable
(acknowledged). Reports the wall time from the first simulated read to the last durable
one, reads/s, and the peak memory (resident set) of both processes.

Usage::

    python bench/bench_day.py --meters 4000000            # the reference day, VEE and rules on
    python bench/bench_day.py --meters 4000000 --interval-minutes 5   # 2.3 billion reads
    python bench/bench_day.py --meters 200000             # a quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import report


def simulate_into(n_meters: int, interval_s: int, work: Path, spool: Path) -> None:
    """Child process: simulate the day, publishing each cycle file atomically."""
    from headend.sim import build_utility, iter_uploads
    from headend.sim.faults import Faults
    from headend.sim.writers import FrameWriter, write_static

    u = build_utility(n_meters, seed=3, start=dt.date(2026, 1, 5), days=1, interval_s=interval_s)
    plan = Faults().resolve(u)
    write_static(u, plan, work)
    os.replace(work / "meters.csv", spool / "meters.csv")  # signals: registry ready
    fw = FrameWriter(u, work)
    for up in iter_uploads(u, plan):
        path = fw.write(up)
        os.replace(path, spool / path.name)
    (spool / "DONE").touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=4_000_000)
    ap.add_argument("--interval-minutes", type=int, default=15)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    ap.add_argument("--no-vee", action="store_true", help="without VEE (not the default)")
    ap.add_argument("--no-rules", action="store_true", help="without rules (not the default)")
    ap.add_argument("--vee-shared-data", action="store_true",
                    help="VEE runs on the ingestor's DataDir (VeeListener(data=...)) instead "
                         "of opening the data directory at each run")
    ap.add_argument("--log-vee", action="store_true",
                    help="print each VEE run of the listener (window, chunks, seconds)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()

    from headend import _allocator
    from headend.ingest.hooks import open_ingestor

    _allocator.tune()  # as the headend process does (serve, worker, ingest)
    if args.log_vee:
        import logging

        logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
        logging.getLogger("headend.vee.listener").setLevel(logging.INFO)
    if args.vee_shared_data:
        from headend.ingest import hooks
        from headend.vee import VeeListener

        hooks.LISTENERS["vee"] = lambda data: VeeListener(data.root, data=data)

    work = args.work or Path(tempfile.mkdtemp(prefix="headend-day-", dir="/work/tmp"
                                              if Path("/work/tmp").is_dir() else None))
    sim_dir, spool, root = work / "sim", work / "spool", work / "data"
    for d in (sim_dir, spool):
        d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    child = mp.get_context("spawn").Process(
        target=simulate_into, args=(args.meters, args.interval_minutes * 60, sim_dir, spool))
    child.start()
    rows = accepted = duplicate = quarantined = 0
    files = 0
    ingest_busy = 0.0
    stages: dict[str, float] = {}
    c0 = time.process_time()
    # the ingestor of `headend ingest`: VEE and rules on unless switched off
    with open_ingestor(root, vee=not args.no_vee, rules=not args.no_rules) as ing:
        while not (spool / "meters.csv").exists():
            if not child.is_alive():
                raise SystemExit("simulator died before writing meters.csv")
            time.sleep(0.05)
        ing.ingest_paths([sim_dir / "collectors.csv", spool / "meters.csv"])
        t_registry = time.perf_counter() - t0
        while True:
            ready = sorted(spool.glob("*.hef"))
            if not ready:
                if (spool / "DONE").exists():
                    break
                if not child.is_alive() and child.exitcode:
                    raise SystemExit(f"simulator failed ({child.exitcode})")
                time.sleep(0.02)
                continue
            for f in ready:
                b0 = time.perf_counter()
                r = ing.ingest_paths([f])
                ingest_busy += time.perf_counter() - b0
                f.unlink()  # acknowledged: durable
                accepted += r.accepted
                duplicate += r.duplicate
                quarantined += r.quarantined
                rows += r.accepted + r.duplicate + r.quarantined
                files += 1
                for k, v in r.seconds_by_stage.items():
                    stages[k] = stages.get(k, 0.0) + v
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        stats = ing.data.store.stats()
        t_close = time.perf_counter()
    # closing runs the listeners' close: VEE of the reads still waiting for their run
    close_s = time.perf_counter() - t_close
    child.join()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kid = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    fig = {
        "meters": args.meters, "interval_minutes": args.interval_minutes,
        "vee": not args.no_vee, "rules": not args.no_rules,
        "vee_shared_data": args.vee_shared_data,
        "upload_cycles": files, "rows_ingested": rows, "accepted": accepted,
        "duplicate": duplicate, "quarantined": quarantined,
        "interval_reads_stored": stats.rows["reads"],
        "wall_s_simulate_and_ingest": round(wall, 1),
        "registry_ready_s": round(t_registry, 1),
        "ingest_busy_s": round(ingest_busy, 1),
        "rows_per_s_end_to_end": round(rows / wall),
        "rows_per_s_while_ingesting": round(rows / ingest_busy) if ingest_busy else None,
        "ingest_cpu_s": round(cpu, 1), "rows_per_cpu_s": round(rows / cpu) if cpu else None,
        "seconds_by_stage": {k: round(v, 1) for k, v in sorted(stages.items())},
        "close_s": round(close_s, 1),
        "peak_rss_ingest_mb": round(own), "peak_rss_simulator_mb": round(kid),
        "peak_rss_sum_mb": round(own + kid),
        "store_bytes_before_compaction": stats.bytes_on_disk["reads"],
        "cpu_count": os.cpu_count(),
    }
    report("day", fig, args.out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
