"""In-memory store: the :class:`~headend.store.base.ReadStore` contract without a disk.

For tests and examples. Same dedup, ordering and query semantics as
:class:`~headend.store.parquet.ParquetStore` (checked by the conformance suite);
"durable" means "kept for the life of the object".
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.store._keys import (
    EVENTS_KIND,
    KINDS,
    READS_KIND,
    REGISTERS_KIND,
    Keys,
    Kind,
    sort_unique_first,
    sorted_contains,
)
from headend.store._plan import TablePlan
from headend.store._query import interval_sum
from headend.store.base import AppendResult, StoreStats

__all__ = ["InMemoryStore"]


class _Table:
    """One kind's rows, sorted by key, with the sorted key array."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.table = kind.schema.empty_table()
        self.keys: Keys = kind.keys(self.table)

    def append(self, table: pa.Table) -> AppendResult:
        table = self.kind.coerce(table)
        new = np.zeros(len(table), np.bool_)
        if len(table) == 0:
            return AppendResult(new)
        self.kind.validate(table)
        rows, ks = sort_unique_first(self.kind.keys(table))
        fresh = ~sorted_contains(self.keys, ks)
        rows, ks = rows[fresh], ks[fresh]
        new[rows] = True
        merged = pa.concat_tables([self.table, table.take(rows)])
        allk = np.concatenate([self.keys, ks])
        order = np.argsort(allk, kind="stable")
        self.table, self.keys = merged.take(order), allk[order]
        return AppendResult(new, rows)

    def scan(self, meters: npt.NDArray[np.int32] | None, start: int | None, end: int | None,
             types: npt.NDArray[np.uint8] | None) -> pa.Table:
        t = self.table
        mask = np.ones(len(t), np.bool_)
        if meters is not None:
            mask &= np.isin(t.column("meter_idx").to_numpy(), meters)
        tt = self.kind.times(t)
        if start is not None:
            mask &= tt >= start
        if end is not None:
            mask &= tt < end
        if types is not None and self.kind.type_col:
            mask &= np.isin(t.column(self.kind.type_col).to_numpy(), types)
        return t.filter(pa.array(mask))


class InMemoryStore:
    """A ``ReadStore`` in memory (same contract and queries as ``ParquetStore``)."""

    def __init__(self) -> None:
        self._t = {k.name: _Table(k) for k in KINDS}
        self._lock = threading.Lock()

    def append_reads(self, reads: pa.Table) -> AppendResult:
        with self._lock:
            return self._t[READS_KIND.name].append(reads)

    def append_registers(self, registers: pa.Table) -> AppendResult:
        with self._lock:
            return self._t[REGISTERS_KIND.name].append(registers)

    def append_events(self, events: pa.Table) -> AppendResult:
        with self._lock:
            return self._t[EVENTS_KIND.name].append(events)

    def scan_reads(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None, reading_types: npt.NDArray[np.uint8] | None = None,
    ) -> pa.Table:
        return self._t["reads"].scan(meters, start, end, reading_types)

    def plan_reads(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None, reading_types: npt.NDArray[np.uint8] | None = None,
        chunk_rows: int = 2_000_000,
    ) -> TablePlan:
        """The rows ``scan_reads`` would return, as a plan over that (immutable) table."""
        return TablePlan(self.scan_reads(meters=meters, start=start, end=end,
                                         reading_types=reading_types), chunk_rows)

    def scan_registers(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None,
    ) -> pa.Table:
        return self._t["registers"].scan(meters, start, end, None)

    def scan_events(
        self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
        end: int | None = None,
    ) -> pa.Table:
        return self._t["events"].scan(meters, start, end, None)

    def meter_history(self, meter_idx: int, reading_type: int, start: int, end: int
                      ) -> pa.Table:
        return self.scan_reads(meters=np.array([meter_idx], np.int32), start=start, end=end,
                               reading_types=np.array([reading_type], np.uint8))

    def feeder_interval_sum(self, meter_lo: int, meter_hi: int, reading_type: int, day: int
                            ) -> pa.Table:
        t = self.scan_reads(meters=np.arange(meter_lo, meter_hi, dtype=np.int32), start=day,
                            end=day + 86_400, reading_types=np.array([reading_type], np.uint8))
        return interval_sum(t)

    def compact(self) -> None:
        """Nothing to compact in memory."""

    def stats(self) -> StoreStats:
        rows = {k: len(v.table) for k, v in self._t.items()}
        zero = {k: 0 for k in self._t}
        return StoreStats(rows, {k: v.table.nbytes for k, v in self._t.items()}, zero,
                          zero, zero)

    def close(self) -> None:
        """Nothing to release."""


