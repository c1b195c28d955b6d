"""Ports of the store: what ingest, rules, exports and analytics may ask of storage.

Contract shared by every adapter (checked by ``tests/store/test_conformance.py``):

* **Idempotent.** ``append_*`` stores a row only if its key is new: interval reads are
  keyed on ``(meter_idx, reading_type, interval_end)``, register reads on
  ``(meter_idx, register, read_time)``, events on ``(meter_idx, event_time, event_code)``.
  The first write of a key wins; later ones (in the same batch or any later batch,
  before or after compaction) are counted as duplicates and not stored.
* **Durable on return.** When ``append_*`` returns, the accepted rows survive a crash
  (fsync'd). If it raises :class:`~headend.errors.StorageError`, nothing of the batch
  may be acknowledged; rows of it that did become durable are then duplicates on retry.
* **Blocking** and safe to call from one writer thread; readers may run concurrently.
* Scans return rows sorted by key, one row per key, timestamps UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did. ``new`` marks which input rows were stored (True) and which
    were duplicates (False), in input order. ``order`` lists the input positions of the
    stored rows in key order (meter, type, time for reads; every adapter fills it), so
    that listeners get the new rows sorted without sorting them again."""

    new: npt.NDArray[np.bool_]
    order: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def accepted(self) -> int:
        return int(self.new.sum())

    @property
    def duplicate(self) -> int:
        return int(len(self.new) - self.new.sum())


@runtime_checkable
class ReadStore(Protocol):
    """Interval reads, register reads and events (schemas in :mod:`headend.model.schema`)."""

    def append_reads(self, reads: pa.Table) -> AppendResult: ...
    def append_registers(self, registers: pa.Table) -> AppendResult: ...
    def append_events(self, events: pa.Table) -> AppendResult: ...

    def scan_reads(
        self,
        *,
        meters: npt.NDArray[np.int32] | None = None,
        start: int | None = None,
        end: int | None = None,
        reading_types: npt.NDArray[np.uint8] | None = None,
    ) -> pa.Table:
        """Reads with ``start <= interval_end < end`` (Unix s), sorted by key."""
        ...

    def scan_registers(
        self, *, meters: npt.NDArray[np.int32] | None = None,
        start: int | None = None, end: int | None = None,
    ) -> pa.Table: ...

    def scan_events(
        self, *, meters: npt.NDArray[np.int32] | None = None,
        start: int | None = None, end: int | None = None,
    ) -> pa.Table: ...

    def compact(self) -> None:
        """Merge small segments into sorted, compressed files; dedup holds across it."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Size of a store, per kind (reads, registers, events); live files only."""

    rows: dict[str, int]
    bytes_on_disk: dict[str, int]
    partitions: dict[str, int]  # bucket-year directories
    segments: dict[str, int]
    compacted_files: dict[str, int]


@runtime_checkable
class QueryStore(ReadStore, Protocol):
    """A ``ReadStore`` with the fast paths the CLI, exports and analytics use."""

    def meter_history(self, meter_idx: int, reading_type: int, start: int, end: int
                      ) -> pa.Table:
        """One meter's reads of one type, ``start <= interval_end < end``, by time."""
        ...

    def feeder_interval_sum(self, meter_lo: int, meter_hi: int, reading_type: int, day: int
                            ) -> pa.Table:
        """Per-interval sum over meters ``[meter_lo, meter_hi)`` for the UTC day starting
        at ``day`` [Unix s]: ``interval_end, value (int64), meters (int64)``."""
        ...

    def stats(self) -> StoreStats: ...
