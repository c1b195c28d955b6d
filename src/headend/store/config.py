"""Configuration of the Parquet store (typed, immutable, read once at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from headend.errors import ConfigError

#: bucket bits of a new store (one process, or a few large partitions)
DEFAULT_BUCKET_BITS: Final = 16
#: bucket bits of a new store created by a scale-out process (``serve``/``worker`` on a
#: shared bus): 256 meters per bucket, so a fleet of ``256 * partitions`` meters
#: already reaches every partition (docs/scaling.md, docs/store.md)
PARTITIONED_BUCKET_BITS: Final = 8
MIN_BUCKET_BITS: Final = 4
MAX_BUCKET_BITS: Final = 27
DEFAULT_INDEX_CACHE_BYTES: Final = 1 << 30
DEFAULT_ROW_GROUP_ROWS: Final = 65_536
DEFAULT_BLOCK_METERS: Final = 16


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """How a :class:`~headend.store.parquet.ParquetStore` lays out and keeps its data.

    Parameters
    ----------
    bucket_bits : int or None
        A meter bucket holds ``2**bucket_bits`` consecutive ``meter_idx``; partitions,
        locks and worker routing are per bucket (see :meth:`bucket_of`). Part of the
        data directory's recorded layout (``<root>/layout.json``,
        :mod:`headend.store._storelayout`): None (the default) takes the recorded value
        (:data:`DEFAULT_BUCKET_BITS` for a new store); a value that differs from the
        recorded one makes opening the store fail with ConfigError.
    partitions : int or None
        Ingest partitions of a shared bus, also recorded in the layout: None takes
        the recorded value (or records none); a value is recorded if none is, and
        refused if another is.
    index_cache_bytes : int
        Memory bound of the in-memory dedup index (LRU of day bitmaps) [bytes].
    zstd_level : int
        zstd level of compacted Parquet files.
    row_group_rows : int
        Rows per Parquet row group of compacted files (smaller: faster point reads).
    merge_rows : int
        Rows merged in memory at once during compaction (bounds compaction memory).
    part_rows : int
        Month/year files of more rows are split into parts by meter range (0: never),
        so a footer stays small (a cold query opens one part's footer, not a bucket's
        whole year) and a meter-year touches one small file.
    auto_compact_segments : int
        Compact a day partition when it holds this many segments (0: only on
        :meth:`compact`).
    background_compaction : bool
        Do that automatic compaction in a background thread instead of inside append.
    top_level : {"day", "month", "year"}
        Coarsest file a bucket's closed months/years are merged into by ``compact``.
        Files are sorted by (meter, type, time), so a meter-year reads one row group
        per file (12 with "month", 1 with "year") while a feeder-day decodes the
        feeder's rows of the whole file (a month with "month", a year with "year").
        Measured (bench/bench_store.py, 143 M reads): "month" 11 ms / 54 ms,
        "year" 2.6 ms / 870 ms for meter-year / feeder-day (1000 meters). The
        block sums of ``block_meters`` make feeder-days fast on year files too.
    block_meters : int
        Meters per block of the block-sum sidecar (``<file>.blocks``, a power of two;
        0: none) written beside each month/year file of reads: per (day, interval end,
        block of consecutive meters, reading type) the sum and count of the values, so
        ``feeder_interval_sum`` adds the block sums of its whole blocks and reads the
        rows of at most two partial blocks (:mod:`headend.store._blocks`). Smaller
        blocks: fewer raw rows per feeder-day, more sidecar bytes (docs/store.md).
    day_copies : bool
        Also keep a second copy of each day (``dcp-MMDD`` files, sorted by meter, type,
        time) when a closed month/year is merged, which ``feeder_interval_sum`` reads
        instead (a contiguous meter range of one small file): about twice the bytes,
        for stores that relied on them. Off by default: the block sums serve
        feeder-days; a store compacted with copies off drops its copies (and gets the
        block sums its month/year files lack) at its next compaction.
    close_grace_s : int
        A month (year) counts as closed this long after its end [s].
    lock_timeout_s : float
        How long a writer waits for a bucket lock held by another process [s].
    writer_threads : int
        Threads writing and fsync'ing segment files of one append in parallel.
    reader_threads : int
        Threads decoding the files of one query in parallel.
    """

    bucket_bits: int | None = None
    partitions: int | None = None
    index_cache_bytes: int = DEFAULT_INDEX_CACHE_BYTES
    zstd_level: int = 9
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    merge_rows: int = 8_000_000
    part_rows: int = 64_000_000
    auto_compact_segments: int = 64
    background_compaction: bool = True
    top_level: Literal["day", "month", "year"] = "year"
    block_meters: int = DEFAULT_BLOCK_METERS
    day_copies: bool = False
    close_grace_s: int = 2 * 86_400
    lock_timeout_s: float = 0.0
    writer_threads: int = 4
    reader_threads: int = 4

    def __post_init__(self) -> None:
        if self.bucket_bits is not None and not (
                MIN_BUCKET_BITS <= self.bucket_bits <= MAX_BUCKET_BITS):
            raise ConfigError(f"bucket_bits must be within {MIN_BUCKET_BITS}..{MAX_BUCKET_BITS}")
        if self.partitions is not None and not 1 <= self.partitions <= 4096:
            raise ConfigError("partitions must be within 1..4096")
        if self.top_level not in ("day", "month", "year"):
            raise ConfigError("top_level must be day, month or year")
        if self.part_rows < 0:
            raise ConfigError("part_rows must be >= 0")
        if self.row_group_rows < 1024 or self.merge_rows < self.row_group_rows:
            raise ConfigError("row_group_rows >= 1024 and merge_rows >= row_group_rows")
        if self.block_meters < 0 or self.block_meters & (self.block_meters - 1):
            raise ConfigError("block_meters must be 0 or a power of two")

    @property
    def block_bits(self) -> int:
        """``log2(block_meters)``: a meter's block is ``meter_idx >> block_bits``."""
        return max(0, self.block_meters.bit_length() - 1)

    @property
    def bits(self) -> int:
        """``bucket_bits`` once known (a store's config always has them: it takes them
        from the data directory's layout when it opens).

        Raises
        ------
        ConfigError
            ``bucket_bits`` is None: the config was not resolved against a store.
        """
        if self.bucket_bits is None:
            raise ConfigError("bucket_bits is not known before the store is opened (it "
                              "is read from the data directory's layout.json)")
        return self.bucket_bits

    @property
    def bucket_size(self) -> int:
        """Meters per bucket."""
        return 1 << self.bits

    def bucket_of(self, meter_idx: npt.NDArray[np.int32] | int) -> npt.NDArray[np.int32] | int:
        """Bucket of each meter (``meter_idx >> bucket_bits``)."""
        if isinstance(meter_idx, (int, np.integer)):
            return int(meter_idx) >> self.bits
        return np.right_shift(np.asarray(meter_idx, dtype=np.int32), self.bits)
