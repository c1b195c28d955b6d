"""Fuzz run: 1M mutated uploads (frames and CSV) through the decoders.

The same mutations and checks as ``tests/faults/test_fuzz.py`` (see
``tests/faults/fuzzing.py``), at bench scale: by default 750,000 frame uploads and
250,000 CSV uploads, seeded, on ``--procs`` processes. The contract checked on each
input: no exception other than ``DecodeError``, and every rejection carries a reason
of ``headend.model.reasons.REASONS``. A failing input is written to ``--out`` with its
seed, so it can be replayed.

Run::

    python bench/bench_fuzz.py                    # 1M inputs, ~5-10 min on 2 cores
    python bench/bench_fuzz.py --frames 10000 --csv 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import fuzzing

CHUNK = 5_000


def _run(job: tuple[str, int, int]) -> dict[str, object]:
    fmt, seed, n = job
    rng = np.random.default_rng(seed)
    mutate = fuzzing.mutate_frame if fmt == "frame" else fuzzing.mutate_csv
    check = fuzzing.check_frame_input if fmt == "frame" else fuzzing.check_csv_input
    ok = bad = 0
    failures: list[dict[str, str]] = []
    for _ in range(n):
        data = mutate(rng)
        try:
            good, rejected = check(data)
            ok += good
            bad += rejected
        except Exception:  # noqa: BLE001 - a finding: recorded with its input
            failures.append({"fmt": fmt, "seed": str(seed), "input": data.hex(),
                             "error": traceback.format_exc(limit=3)})
    return {"fmt": fmt, "inputs": n, "decoded": ok, "rejected": bad, "failures": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=750_000)
    ap.add_argument("--csv", type=int, default=250_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--out", type=Path, default=Path("fuzz-failures.jsonl"))
    args = ap.parse_args()
    jobs = []
    for fmt, total in (("frame", args.frames), ("csv", args.csv)):
        for i, start in enumerate(range(0, total, CHUNK)):
            jobs.append((fmt, args.seed * 1_000 + i + (0 if fmt == "frame" else 500),
                         min(CHUNK, total - start)))
    t0 = time.perf_counter()
    totals: dict[str, dict[str, int]] = {}
    failures: list[dict[str, str]] = []
    with ProcessPoolExecutor(args.procs) as pool:
        for r in pool.map(_run, jobs):
            t = totals.setdefault(str(r["fmt"]), {"inputs": 0, "decoded": 0, "rejected": 0})
            for k in t:
                t[k] += int(r[k])  # type: ignore[call-overload]
            failures.extend(r["failures"])  # type: ignore[arg-type]
    if failures:
        with args.out.open("w") as fh:
            for f in failures:
                fh.write(json.dumps(f) + "\n")
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "by_format": totals,
                      "failures": len(failures),
                      "failures_file": str(args.out) if failures else None}, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
