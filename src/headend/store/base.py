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
* **Planned scans.** ``plan_reads`` returns the rows ``scan_reads`` would return as a
  :class:`ReadPlan`, pinned when it returns (a later append or compaction changes
  nothing in it), to stream through a function in chunks; every adapter has it, so
  analytics never probes a store for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did. ``new`` marks which input rows were stored (True) and which
    were duplicates (False), in input order. ``order`` lists the input positions of the
    stored rows in key order (meter, type, time for reads; every adapter fills it), so
    that listeners get the new rows sorted without sorting them again. ``table``, when
    not ``None``, is those rows already gathered in that order (an adapter that had to
    gather them to write them hands them over: ``table.take(order)`` of the input)."""

    new: npt.NDArray[np.bool_]
    order: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    table: pa.Table | None = None

    @property
    def accepted(self) -> int:
        return int(self.new.sum())

    @property
    def duplicate(self) -> int:
        return int(len(self.new) - self.new.sum())


@dataclass(frozen=True, slots=True)
class Extent:
    """Bounds of a planned scan's rows (a superset: file statistics may cover more).

    ``meter_lo``/``meter_hi`` inclusive; ``t_lo``/``t_hi`` inclusive, Unix seconds.
    ``rows`` counts the rows of the plan's chunks before filtering.
    """

    meter_lo: int
    meter_hi: int
    t_lo: int
    t_hi: int
    rows: int


@runtime_checkable
class ReadPlan(Protocol):
    """The interval reads of one query, pinned, streamed to the caller's function.

    Contract: each :meth:`run` or :meth:`run_files` call hands over every row that
    ``scan_reads`` would return with the plan's arguments exactly once, in chunks
    sorted by key within (columns of :data:`headend.model.schema.READS`, or the
    ``columns`` asked for). The order of the chunks and the thread calling ``fn`` are
    unspecified unless said; ``fn`` may be called from several threads at once. The
    first exception of ``fn`` is raised once the running calls finished.
    """

    @property
    def extent(self) -> Extent | None:
        """Meter and time bounds of the rows; None when there is no row."""
        ...

    @property
    def meters_in_one_file(self) -> bool:
        """Whether each meter's rows reach :meth:`run_files` through one ``file_no``."""
        ...

    def run(self, fn: Callable[[pa.Table], None], columns: list[str] | None = None) -> int:
        """Call ``fn`` on every non-empty chunk; returns the rows handed over."""
        ...

    def run_files(self, fn: Callable[[int, pa.Table | None], None],
                  columns: list[str] | None = None) -> None:
        """Like :meth:`run`, but the chunks of each file go to ``fn(file_no, table)`` in
        key order from one thread, then ``fn(file_no, None)`` once the file is done."""
        ...

    def run_days(self, fn: Callable[[pa.Table], None]) -> int:
        """Call ``fn`` with daily rollups of the rows (``headend.store._rollup.DAILY``
        columns: ``meter_idx, reading_type, day, value, hours, reads``); rows of one
        (meter, type, day) may come in several calls, to be summed (``hours`` ORed).
        Returns the rollup rows handed over."""
        ...

    def paths(self) -> list[Path]:
        """Parquet files holding part of the rows, unfiltered, for readers that read
        files themselves (Spark) and apply the query's filter."""
        ...

    def segments(self) -> list[pa.Table]:
        """The rows not in :meth:`paths`, filtered; with :meth:`paths`, all the rows."""
        ...


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

    def plan_reads(
        self,
        *,
        meters: npt.NDArray[np.int32] | None = None,
        start: int | None = None,
        end: int | None = None,
        reading_types: npt.NDArray[np.uint8] | None = None,
        chunk_rows: int = 2_000_000,
    ) -> ReadPlan:
        """The rows ``scan_reads`` would return, as a :class:`ReadPlan` of chunks of
        about ``chunk_rows`` rows (bounded memory, no global sort)."""
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
