"""Daily rollups of interval reads: one row per (meter, reading type, day).

Compaction writes, beside every month and year file of reads (and each of its parts),
a **rollup sidecar** ``<file>.daily`` (Parquet, :data:`DAILY`): per meter, reading type
and UTC day, the sum of the values (integers in the resolution), a 24-bit mask of the
hours that have a read, and the number of reads. A read belongs to the day of the
hour in which it ends (``hour = ceil(t / 3600)``; day ``(hour - 1) // 24``, bit
``(hour - 1) % 24``), as hourly analytics count it, so a day whose mask is full
(:data:`FULL_DAY`) is a complete day of 24 hourly values.

A sidecar is published before its data file and deleted with it
(:func:`unlink_data`, which also deletes the block-sum sidecar of
:mod:`headend.store._blocks`); a sidecar whose data file is gone is deleted by the
bucket's owner. A data file without a sidecar (older stores, segments, day files) is rolled up
from its rows when read (:func:`rollup`), so readers never depend on one existing.

Whole-history tasks that need only days (anomaly detection of a day against the
household's history) read the sidecars: 24 times fewer rows than hourly reads, and the
values are already summed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from headend.store import _blocks, _fs

__all__ = ["DAILY", "FULL_DAY", "SIDECARS", "SUFFIX", "read_sidecar", "rollup", "sidecar_of",
           "sidecars_of", "unlink_data", "write_sidecar"]

SUFFIX: Final = ".daily"
FULL_DAY: Final = (1 << 24) - 1

#: schema of a rollup (sorted by meter, reading type, day)
DAILY: Final = pa.schema([
    pa.field("meter_idx", pa.int32(), nullable=False),
    pa.field("reading_type", pa.uint8(), nullable=False),
    pa.field("day", pa.int32(), nullable=False),  # days since 1970-01-01 (UTC)
    pa.field("value", pa.int64(), nullable=False),  # sum, in the type's resolution
    pa.field("hours", pa.uint32(), nullable=False),  # bit k: the hour ending k+1 h after 00:00
    pa.field("reads", pa.int32(), nullable=False),
])


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def rollup(meter: npt.NDArray[np.int32], rt: npt.NDArray[np.uint8],
           t: npt.NDArray[np.int64], value: npt.NDArray[np.integer]) -> pa.Table:
    """The :data:`DAILY` rows of reads sorted by (meter, reading type, time)."""
    if len(meter) == 0:
        return DAILY.empty_table()
    hour = (t + 3599) // 3600 - 1  # hours since the epoch, of the hour ending the read
    day = hour // 24
    bit = np.left_shift(np.uint32(1), (hour - day * 24).astype(np.uint32))
    new = np.empty(len(meter), bool)
    new[0] = True
    np.not_equal(meter[1:], meter[:-1], out=new[1:])
    new[1:] |= rt[1:] != rt[:-1]
    new[1:] |= day[1:] != day[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(meter)])
    return pa.table({
        "meter_idx": pa.array(meter[starts], pa.int32()),
        "reading_type": pa.array(rt[starts], pa.uint8()),
        "day": pa.array(day[starts].astype(np.int32)),
        "value": pa.array(np.add.reduceat(value.astype(np.int64), starts)),
        "hours": pa.array(np.bitwise_or.reduceat(bit, starts), pa.uint32()),
        "reads": pa.array(counts.astype(np.int32)),
    }, schema=DAILY)


def write_sidecar(data_path: Path, pieces: list[pa.Table]) -> None:
    """Publish the rollup of a data file from its rollup pieces (in file order; a
    (meter, type, day) cut between two pieces is merged)."""
    t = pa.concat_tables(pieces) if pieces else DAILY.empty_table()
    if len(pieces) > 1 and t.num_rows:
        t = _merge_runs(t)
    _fs.publish_path(sidecar_of(data_path), lambda tmp: pq.write_table(
        t, str(tmp), compression="zstd", row_group_size=1 << 20, write_statistics=["meter_idx"]),
        sync_dir=False)


def _merge_runs(t: pa.Table) -> pa.Table:
    m = t.column("meter_idx").to_numpy()
    rt = t.column("reading_type").to_numpy()
    day = t.column("day").to_numpy()
    new = np.empty(len(m), bool)
    new[0] = True
    new[1:] = (m[1:] != m[:-1]) | (rt[1:] != rt[:-1]) | (day[1:] != day[:-1])
    if new.all():
        return t
    s = np.flatnonzero(new)
    return pa.table({
        "meter_idx": pa.array(m[s], pa.int32()), "reading_type": pa.array(rt[s], pa.uint8()),
        "day": pa.array(day[s], pa.int32()),
        "value": pa.array(np.add.reduceat(t.column("value").to_numpy(), s)),
        "hours": pa.array(np.bitwise_or.reduceat(t.column("hours").to_numpy(), s), pa.uint32()),
        "reads": pa.array(np.add.reduceat(t.column("reads").to_numpy(), s).astype(np.int32)),
    }, schema=DAILY)


def read_sidecar(data_path: Path) -> pa.Table | None:
    """The rollup of a data file, or None when it has none (or it cannot be read)."""
    p = sidecar_of(data_path)
    try:
        return pq.read_table(p, memory_map=True)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None


#: suffixes of every sidecar a data file may have (rollups, block sums)
SIDECARS: Final = (SUFFIX, _blocks.SUFFIX)


def sidecars_of(path: Path) -> list[Path]:
    """Every sidecar path a data file may have (existing or not)."""
    return [path.with_name(path.name + s) for s in SIDECARS]


def unlink_data(path: Path) -> None:
    """Delete a data file and its sidecars (rollup, block sums)."""
    path.unlink(missing_ok=True)
    for side in sidecars_of(path):
        side.unlink(missing_ok=True)


def remove_orphans(directory: Path) -> int:
    """Delete sidecars whose data file is gone; returns how many."""
    n = 0
    try:
        names = {e.name for e in directory.iterdir()}
    except FileNotFoundError:
        return 0
    for name in names:
        for suffix in SIDECARS:
            if name.endswith(suffix) and name[:-len(suffix)] not in names:
                (directory / name).unlink(missing_ok=True)
                n += 1
    return n
