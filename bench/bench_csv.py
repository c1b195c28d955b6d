"""Benchmark canonical CSV decoding and writing of interval reads [rows/s].

Run: ``python bench/bench_csv.py [rows]`` (default 2,000,000). Prints, for
:func:`headend.wire.csvfmt.decode_csv` and :func:`headend.wire.csvfmt.write_reads_csv`
on one core (Arrow threads limited to 1), rows per CPU-second (per-core throughput,
robust to other load on the machine) and rows per wall-clock second.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from headend.model import schema


def make_reads(n: int, seed: int = 1, *, distinct: bool = False) -> pa.Table:
    """``n`` interval reads of 15-minute kWh and volts, 96 intervals a day, some quality.

    With ``distinct``, values and times are random over their whole range (nearly all
    distinct): the decoder's worst case.
    """
    rng = np.random.default_rng(seed)
    meters = max(n // 96, 1)
    i = np.arange(n)
    meter = pa.array([f"MTR{m:08d}" for m in range(meters)]).take(pa.array(i % meters))
    rt = np.where(i % 10 == 0, 2, 0).astype(np.uint8)
    end = 1_772_323_200 + 900 * (i // meters + 1)
    value = np.where(rt == 2, rng.integers(2300, 2500, n), rng.integers(0, 3000, n))
    quality = np.where(i % 50 == 0, 1 << 22, 0).astype(np.uint32)
    if distinct:
        value = rng.integers(-(2**31), 2**31 - 1, n)
        end = rng.integers(946_684_800, 4_102_444_800, n)
    return pa.table({
        "meter_id": meter, "reading_type": pa.array(rt),
        "interval_end": pa.array(end.astype(np.int64)).cast(schema.TS),
        "value": pa.array(value.astype(np.int64)), "quality": pa.array(quality),
    })


def _timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """Best wall-clock and best CPU time of ``fn`` [s] (CPU time is robust to load)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def main(n: int) -> None:
    from headend.wire.csvfmt import decode_csv, write_reads_csv

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    for label, distinct in (("typical", False), ("all distinct", True)):
        table = make_reads(n, distinct=distinct)
        sink = io.BytesIO()
        write_reads_csv(table, sink)
        data = sink.getvalue()

        def write() -> None:
            write_reads_csv(table, io.BytesIO())  # noqa: B023 - used within the loop

        def decode() -> None:
            rows = 0
            for d in decode_csv(data, source="bench"):  # noqa: B023
                assert d.reads is not None and not d.rejects
                rows += len(d.reads)
            assert rows == n

        for name, fn in (("write_reads_csv", write), ("decode_csv", decode)):
            wall, cpu = _timed(fn)
            print(f"{name:16s} {label:12s} {n / cpu:>11,.0f} rows per CPU-s "
                  f"{n / wall:>11,.0f} rows/s wall ({len(data) / cpu / 1e6:.0f} MB per CPU-s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
