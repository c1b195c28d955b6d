"""Throughput of the simulator: interval reads generated per second, on one core.

Usage::

    python bench/bench_simulate.py [--meters 200000] [--runs 3] [--faults storm]
                                   [--write frames|csv|none] [--out DIR]

Prints the median over ``--runs`` of reads/s for generation alone (``iter_uploads``),
then, with ``--write``, one timed run that also writes the files, with the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from headend.sim import Faults, build_utility, iter_uploads
from headend.sim.writers import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--interval-minutes", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--faults", default="")
    ap.add_argument("--write", choices=("none", "frames", "csv", "both"), default="none")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    t = time.perf_counter()
    u = build_utility(a.meters, seed=1, days=a.days, interval_s=a.interval_minutes * 60)
    print(f"build_utility({a.meters:,}): {time.perf_counter() - t:.2f} s")
    rates = []
    for _ in range(a.runs):
        n = 0
        t = time.perf_counter()
        for up in iter_uploads(u, Faults.from_names(a.faults)):
            n += up.reads.num_rows
        secs = time.perf_counter() - t
        rates.append(n / secs)
        print(f"  run: {n:,} reads in {secs:.2f} s = {n / secs / 1e6:.1f} M reads/s")
    print(f"generate: median {statistics.median(rates) / 1e6:.1f} M reads/s "
          f"({a.meters:,} meters, {u.n_cycles} cycles, faults={a.faults or 'none'})")
    if a.write != "none":
        fmts = ("frames", "csv") if a.write == "both" else (a.write,)
        with tempfile.TemporaryDirectory() as tmp:
            out = a.out or tmp
            t = time.perf_counter()
            s = simulate(u, Faults.from_names(a.faults), out, formats=fmts)
            secs = time.perf_counter() - t
            n = s["rows"]["reads"]  # type: ignore[index]
            print(f"write {a.write}: {n:,} reads in {secs:.2f} s = {n / secs / 1e6:.1f} M reads/s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS: {rss:.2f} GB")


if __name__ == "__main__":
    main()
