"""Benchmark: the cost of an append does not grow with the files already stored.

Builds a store whose bucket-year directory already holds ``--segments`` segment files
(default 100,000; hard links of one tiny valid segment per day, so the build takes
seconds), then times appends of a fixed batch (``--meters`` x 96 15-minute reads of one
day, each append a new day of the same directory) into it and into an empty store.
Appends alternate between the two stores (same machine load for both). Reports the
median wall and CPU time per append, the ratio, the first append (which
lists the directory once to build the owner's manifest) and the directory listings
(``os.scandir``) per steady append.

``--delta N`` (needs ``pip install deltalake``, not a dependency of headend) measures
the alternative manifest, a Delta Lake transaction log: the commit alone of one file
(``create_write_transaction`` with one add action) into a fresh table and after
``N`` commits, the same for a whole ``write_deltalake`` append of the batch, and the
time to open the table's snapshot (what a reader pays) at ``N`` commits.

Run::

    python bench/bench_append.py                      # 100,000 segments, ~1 min
    python bench/bench_append.py --segments 10000     # quicker
    python bench/bench_append.py --segments 10000 --delta 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from headend.model import schema as S
from headend.store import ParquetStore, StoreConfig

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
BUILD_DAY0 = 181  # segments of the full store fill 2025-07-01 .. 2025-12-31


def day_reads(meters: int, day: int, meter0: int = 0) -> pa.Table:
    """Every 15-minute read of ``meters`` meters on day ``day`` of 2025."""
    t = T0 + day * DAY + 900 * np.arange(96, dtype=np.int64)  # one UTC day
    m, tt = np.meshgrid(np.arange(meter0, meter0 + meters, dtype=np.int32), t, indexing="ij")
    n = m.size
    rng = np.random.default_rng(day)
    return pa.table([pa.array(m.ravel()), pa.array(np.zeros(n, np.uint8)),
                     pa.array(tt.ravel()).cast(S.TS),
                     pa.array(rng.integers(0, 2000, n).astype(np.int32)),
                     pa.array(np.zeros(n, np.uint32))], schema=S.READS)


def build(root: Path, n_segments: int) -> float:
    """Fill ``reads/b=000000/y=2025`` with ``n_segments`` segments; returns seconds."""
    t0 = time.perf_counter()
    d = root / "reads" / "b=000000" / "y=2025"
    d.mkdir(parents=True)
    tpl = root / "templates"
    tpl.mkdir()
    days = list(range(BUILD_DAY0, 365))
    names = []
    for day in days:  # one valid one-read segment per day (meter 60000)
        t = day_reads(1, day, meter0=60_000).slice(0, 1)
        p = tpl / f"{day}.arrow"
        with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        names.append((p, time.strftime("%m%d", time.gmtime(T0 + day * DAY))))
    for seq in range(n_segments):
        p, mmdd = names[seq % len(names)]
        os.link(p, d / f"seg-{mmdd}-{seq:012d}.arrow")
    return time.perf_counter() - t0


@contextmanager
def count_listings() -> Iterator[list[int]]:
    """Count ``os.scandir`` / ``os.listdir`` calls in the block."""
    n = [0]
    real_scandir, real_listdir = os.scandir, os.listdir

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            n[0] += 1
            return f(*a, **k)
        return inner

    os.scandir, os.listdir = wrap(real_scandir), wrap(real_listdir)  # type: ignore[assignment]
    try:
        yield n
    finally:
        os.scandir, os.listdir = real_scandir, real_listdir  # type: ignore[assignment]


def measure(roots: dict[str, Path], meters: int, appends: int) -> dict[str, dict[str, float]]:
    """Time ``appends`` appends of one day each (Jan 1, 2, ...) into each store,
    alternating between the stores so that both see the same machine load."""
    wall: dict[str, list[float]] = {k: [] for k in roots}
    cpu: dict[str, list[float]] = {k: [] for k in roots}
    steady: dict[str, int] = dict.fromkeys(roots, 0)
    batches = [day_reads(meters, day) for day in range(appends)]
    stores = {k: ParquetStore(r, config=StoreConfig()) for k, r in roots.items()}
    try:
        for i, b in enumerate(batches):
            for k, s in stores.items():
                with count_listings() as listings:
                    w0, c0 = time.perf_counter(), time.process_time()
                    r = s.append_reads(b)
                    wall[k].append(time.perf_counter() - w0)
                    cpu[k].append(time.process_time() - c0)
                assert r.accepted == len(b)
                steady[k] += listings[0] if i else 0
    finally:
        for s in stores.values():
            s.close()
    return {k: {"first_ms": wall[k][0] * 1e3,
                "median_ms": statistics.median(wall[k][1:]) * 1e3,
                "median_cpu_ms": statistics.median(cpu[k][1:]) * 1e3,
                "listings_per_append": steady[k] / (appends - 1)} for k in roots}


def _delta_types(t: pa.Table) -> pa.Table:
    """The batch in types Delta Lake accepts (signed ints, microsecond timestamps)."""
    return pa.table({"meter_idx": t["meter_idx"], "reading_type": t["reading_type"].cast(pa.int16()),
                     "interval_end": t["interval_end"].cast(pa.timestamp("us", "UTC")),
                     "value": t["value"], "quality": t["quality"].cast(pa.int64())})


def measure_delta(base: Path, meters: int, commits: int, appends: int) -> dict[str, float]:
    """Delta Lake commit and append costs, fresh and after ``commits`` commits [ms]."""
    try:
        from deltalake import DeltaTable, write_deltalake
        from deltalake.transaction import AddAction
    except ImportError as exc:
        raise SystemExit("--delta needs the deltalake package (pip install deltalake)") from exc
    batch = _delta_types(day_reads(meters, 0))
    uri = str(base / "delta")
    write_deltalake(uri, batch.slice(0, 1), mode="append")
    dt = DeltaTable(uri)
    f = next(Path(uri).glob("*.parquet"))
    n = [0]

    def commit() -> float:  # the writer keeps its snapshot current, as ours does
        n[0] += 1  # a new file name each commit (the file itself is not read)
        add = AddAction(f"seg-{n[0]:012d}.parquet", f.stat().st_size, {},
                        int(time.time() * 1000), True, "{}")
        t0 = time.perf_counter()
        dt.create_write_transaction([add], "append", batch.schema)
        dt.update_incremental()
        return time.perf_counter() - t0

    first = [commit() for _ in range(appends)]
    for _ in range(commits - 2 * appends):
        commit()
    last = [commit() for _ in range(appends)]
    w0 = time.perf_counter()
    opened = DeltaTable(uri)
    open_ms = (time.perf_counter() - w0) * 1e3
    n_commits = opened.version()
    writes = []
    for _ in range(min(appends, 11)):
        w0 = time.perf_counter()
        write_deltalake(uri, batch, mode="append")
        writes.append(time.perf_counter() - w0)
    fresh_uri = str(base / "delta-fresh")
    fresh_writes = []
    for _ in range(min(appends, 11)):
        w0 = time.perf_counter()
        write_deltalake(fresh_uri, batch, mode="append")
        fresh_writes.append(time.perf_counter() - w0)
    med = statistics.median
    return {"commits": n_commits,
            "commit_fresh_ms": med(first) * 1e3, "commit_after_ms": med(last) * 1e3,
            "open_snapshot_ms": open_ms,
            "write_fresh_ms": med(fresh_writes[1:]) * 1e3,
            "write_after_ms": med(writes[1:]) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=100_000)
    ap.add_argument("--meters", type=int, default=500, help="meters per batch (x96 reads)")
    ap.add_argument("--appends", type=int, default=31)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: tmp)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--delta", type=int, default=0, metavar="N",
                    help="also measure Delta Lake commits after N commits (needs deltalake)")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(dir=a.dir, prefix="bench-append-"))
    try:
        build_s = build(base / "full", a.segments)
        got = measure({"empty": base / "empty", "full": base / "full"}, a.meters, a.appends)
        empty, full = got["empty"], got["full"]
        delta = measure_delta(base, a.meters, a.delta, a.appends) if a.delta else None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {"segments": a.segments, "reads_per_append": a.meters * 96, "build_s": build_s,
           "empty": empty, "full": full,
           "ratio_median": full["median_ms"] / empty["median_ms"],
           "ratio_median_cpu": full["median_cpu_ms"] / empty["median_cpu_ms"]}
    print(f"append of {a.meters * 96:,} reads, median of {a.appends - 1} (alternating):")
    for k in ("empty", "full"):
        r = out[k]
        assert isinstance(r, dict)
        label = "empty store" if k == "empty" else f"{a.segments:,} segments"
        print(f"  {label:>18}: {r['median_ms']:8.2f} ms wall {r['median_cpu_ms']:8.2f} ms CPU"
              f"  first {r['first_ms']:8.1f} ms  listings/append {r['listings_per_append']:.2f}")
    print(f"  full / empty: {out['ratio_median']:.3f} wall, {out['ratio_median_cpu']:.3f} CPU"
          f"  (build {build_s:.1f} s)")
    if delta is not None:
        out["delta"] = delta
        print(f"Delta Lake ({delta['commits']:,.0f} commits): commit of one add action "
              f"{delta['commit_fresh_ms']:.2f} ms fresh, {delta['commit_after_ms']:.2f} ms "
              f"after; open snapshot {delta['open_snapshot_ms']:.1f} ms; write_deltalake "
              f"append {delta['write_fresh_ms']:.1f} ms fresh, "
              f"{delta['write_after_ms']:.1f} ms after")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
