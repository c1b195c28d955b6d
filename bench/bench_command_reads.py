"""Benchmark of on-demand reads tied to their command: the ingest listener's cost.

``CommandReads.on_stored`` runs after every stored batch. Measured on a batch of
``--reads`` interval reads (``--meters`` meters, 10 reads each) with the SQLite command
store of a temporary directory:

* no read command open (the usual case): the cost per batch [us];
* ``--open`` read commands queued, none sent: the same;
* ``--open`` read commands sent, each meter with reads in the batch: the rebuild of the
  open set, the matching (``reads_brought``) and the whole call with its recording;
* the same ``--open`` sent, and one collector's upload (1,000 meters, 4 reads each) of
  which 5 meters have a read sent: the median call.

Run::

    python bench/bench_command_reads.py                 # 1M reads, 16,000 open
    python bench/bench_command_reads.py --json bench/out/command_reads.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.commands import Command, SqliteCommandStore
from headend.commands.reads import OpenReads, reads_brought
from headend.ingest.hooks import CommandReads
from headend.ingest.result import StoredBatch
from headend.model import schema

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]


class _Registry:
    """Meter ``M<i>`` is ``meter_idx`` i (vectorised, as the registry's hash map)."""

    def idx_for_id(self, ids: pa.Array) -> npt.NDArray[np.int32]:
        return np.asarray(pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int32()).to_numpy())


def _per_call(fn: Any, k: int) -> float:
    t = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t) / k


def _collector_upload(listener: CommandReads, step: int) -> float:
    """Median time of one collector's upload: 1,000 meters x 4 reads, 5 of them with a
    read sent (meters ``i * step``), the others without [s]."""
    m = np.sort(np.concatenate([np.arange(1, 996) * step + 1, np.arange(5) * step]))
    idx = np.repeat(m.astype(np.int32), 4)
    reads = pa.table({
        "meter_idx": pa.array(idx), "reading_type": pa.array(np.zeros(len(idx), np.uint8)),
        "interval_end": pa.array(np.tile(np.arange(11, 15, dtype=np.int64) * 900,
                                         len(m))).cast(schema.TS),
        "value": pa.array(np.ones(len(idx), np.int32)),
        "quality": pa.array(np.zeros(len(idx), np.uint32))}, schema=schema.READS)
    batch = StoredBatch("upload", reads, schema.REGISTERS.empty_table(),
                        schema.EVENTS.empty_table())
    listener.on_stored(batch)
    times = []
    for _ in range(21):
        t = time.perf_counter()
        listener.on_stored(batch)
        times.append(time.perf_counter() - t)
    return sorted(times)[10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reads", type=int, default=1_000_000)
    ap.add_argument("--open", type=int, default=16_000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    meters = a.reads // 10
    idx = np.repeat(np.arange(meters, dtype=np.int32), 10)
    reads = pa.table({
        "meter_idx": pa.array(idx), "reading_type": pa.array(np.zeros(len(idx), np.uint8)),
        "interval_end": pa.array(np.tile(np.arange(1, 11, dtype=np.int64) * 900,
                                         meters)).cast(schema.TS),
        "value": pa.array(np.ones(len(idx), np.int32)),
        "quality": pa.array(np.zeros(len(idx), np.uint32))}, schema=schema.READS)
    batch = StoredBatch("bench", reads, schema.REGISTERS.empty_table(),
                        schema.EVENTS.empty_table())
    out: dict[str, float | int] = {"reads": len(idx), "open": a.open}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteCommandStore(Path(tmp) / "commands.sqlite")
        listener = CommandReads(lambda: store, _Registry, owned=False)
        out["none_open_us"] = _per_call(lambda: listener.on_stored(batch), 200) * 1e6
        step = max(meters // a.open, 1)
        cmds = [Command(f"r{i}", "read", f"M{i * step}", "queued", None, None, "bench", T0,
                        T0, T0 + 3_600_000) for i in range(a.open)]
        store.put(cmds)
        out["queued_only_us"] = _per_call(lambda: listener.on_stored(batch), 200) * 1e6
        store.transition_many([(c.command_id, "sent", "headend", T0 + 1, None, None)
                               for c in cmds])
        out["open_reads_rebuild_ms"] = _per_call(store.open_reads, 1) * 1e3
        opened = OpenReads(store.open_reads(),
                           _Registry().idx_for_id(pa.array(list(store.open_reads()))))
        out["matching_ms"] = _per_call(
            lambda: reads_brought(opened, reads, batch.registers, source="bench"), 5) * 1e3
        out["on_stored_with_recording_ms"] = _per_call(
            lambda: listener.on_stored(batch), 3) * 1e3
        got = store.get("r0")
        assert got is not None and got.reads is not None and got.reads.interval_reads == 30
        out["collector_upload_ms"] = _collector_upload(listener, step) * 1e3
        store.close()
    text = json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()})
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
