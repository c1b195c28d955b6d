"""M&V of one demand-response event: baselines and shed for N meters over 10 weeks.

Two parts (docs/benchmarks.md, "Demand response: M&V"):

* **kernel**: :func:`headend.dr.baseline.compute_shed` on a synthetic meter x day x
  slot window shaped as the loader makes it for a 70-day lookback (50 weekdays and the
  event day; 3 adjustment hours, 1 gap hour, a 4-hour event: 8 hourly slots), float64,
  for each ``--kernel-meters`` size, both methods;
* **store**: ``--store-meters`` meters with 10 weeks (+ the event day) of 15-minute
  ``kwh_del`` reads written into a ParquetStore and compacted, then
  :func:`headend.dr.measure.measure` (the planned scan streamed into the window, then
  the kernel), warm page cache; the store is built once (``--store DIR`` reuses it).

    python bench/bench_mv.py --kernel-meters 100000 1000000 --store-meters 20000

Prints the figures and saves them to ``bench/out/mv.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, report, timed

from headend.dr.baseline import Window, compute_shed
from headend.dr.measure import MVConfig, MVEvent, measure
from headend.model.schema import READS

DAYS = 70  # history before the event day
T0 = int(datetime(2026, 5, 13, tzinfo=UTC).timestamp())  # 70 days before 2026-07-22
EVENT_START = int(datetime(2026, 7, 22, 17, 0, tzinfo=UTC).timestamp())
MINUTES = 240


def kernel(meters: int, repeat: int, seed: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    d, k = 51, 8  # 50 weekdays + the event day; 3 + 1 + 4 hourly slots
    t0 = time.perf_counter()
    x = np.empty((meters, d, k))  # float64, as the loader makes it
    for a in range(0, meters, 100_000):  # in blocks: no full-size temporaries
        b = min(a + 100_000, meters)
        x[a:b] = rng.gamma(4.0, 0.25, (b - a, d, k))
        x[a:b][rng.random((b - a, d, k)) < 0.002] = np.nan  # some incomplete slots
    make = time.perf_counter() - t0
    w = Window(x, slice(0, 3), slice(4, 8))
    part = np.where(rng.random(meters) < 0.05, rng.integers(0, 4, meters), 4)
    out: dict[str, float] = {"meters": meters, "window_gb": x.nbytes / 1e9,
                             "make_window_s": make}
    for method in ("10of10", "high5of10"):
        wall, cpu, _ = timed(lambda m=method: compute_shed(w, part, method=m), repeat)
        out[f"{method}_s"] = wall
        out[f"{method}_cpu_s"] = cpu
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def build_store(root: Path, meters: int, chunk: int = 2000, seed: int = 2) -> dict[str, float]:
    from headend.store import ParquetStore

    n = (DAYS + 1) * 96
    ends = (T0 + 900 * (np.arange(n) + 1)).astype("datetime64[s]")
    hour = ((T0 + 900 * np.arange(n)) % 86_400) // 3600
    shape = 0.6 + 0.8 * np.exp(-((hour - 19) / 3.0) ** 2)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    with ParquetStore(root) as store:
        for first in range(0, meters, chunk):
            c = min(chunk, meters - first)
            level = rng.uniform(100, 300, (c, 1))
            wh = np.rint(level * shape[None, :] * rng.gamma(20, 1 / 20, (c, n))).astype(np.int32)
            store.append_reads(pa.table({
                "meter_idx": np.repeat(np.arange(first, first + c, dtype=np.int32), n),
                "reading_type": pa.array(np.zeros(c * n, np.uint8)),
                "interval_end": pa.array(np.tile(ends, c), READS.field("interval_end").type),
                "value": wh.ravel(),
                "quality": pa.array(np.zeros(c * n, np.uint32)),
            }, schema=READS))
        appended = time.perf_counter() - t0
        store.compact()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {"reads": meters * n, "append_s": appended, "build_s": time.perf_counter() - t0,
            "store_mb": size / 1e6}


def from_store(root: Path, meters: int, repeat: int) -> dict[str, float]:
    from headend.store import ParquetStore

    ev = MVEvent("bench", EVENT_START, MINUTES, np.arange(meters, dtype=np.int32))
    ivl = np.full(meters, 900, np.int32)
    out: dict[str, float] = {"meters": meters}
    with ParquetStore(root) as store:
        for method in ("10of10", "high5of10"):
            cfg = MVConfig(method=method)
            res: list[pa.Table] = []
            wall, cpu, _ = timed(lambda c=cfg, r=res: r.append(measure(store, ev, c, ivl)),
                                 repeat)
            out[f"{method}_s"] = wall
            out[f"{method}_cpu_s"] = cpu
            out[f"{method}_mean_shed_kwh"] = float(np.nanmean(
                res[-1].column("shed_kwh").to_numpy(zero_copy_only=False)))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-meters", type=int, nargs="*", default=[100_000])
    ap.add_argument("--store-meters", type=int, default=0)
    ap.add_argument("--store", type=Path, help="reuse this built store (not deleted)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    a = ap.parse_args()
    figures: dict[str, float] = {}
    for m in a.kernel_meters:
        for k, v in kernel(m, a.repeat).items():
            figures[f"kernel_{m}_{k}"] = v
    if a.store_meters or a.store:
        root = a.store
        tmp = None
        if root is None:
            tmp = Path(tempfile.mkdtemp(prefix="bench-mv-", dir=a.workdir))
            root = tmp / "data"
            for k, v in build_store(root, a.store_meters).items():
                figures[f"store_{k}"] = v
        meters = a.store_meters or 0
        for k, v in from_store(root, meters, a.repeat).items():
            figures[f"measure_{k}"] = v
        if tmp is not None and not a.keep:
            shutil.rmtree(tmp)
        elif tmp is not None:
            print(f"kept {root}")
    report("mv", figures, a.out)


if __name__ == "__main__":
    main()
