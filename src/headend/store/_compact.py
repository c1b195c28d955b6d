"""Compaction of one bucket-year directory: merge sorted files, streamed in meter ranges.

Day files merge a day's segments; month (year) files merge every live file of a closed
month (year). Inputs are merged ``merge_rows`` rows at a time (meter sub-ranges found
from the row-group statistics), so memory stays bounded whatever the partition size.
The new file is published atomically with a larger seq, which makes its inputs
obsolete (the live-file rule); they are deleted afterwards.

Month/year files of reads get two sidecars, published just before the file: the
daily rollup (:mod:`headend.store._rollup`) and the block sums that answer feeder-days
(:mod:`headend.store._blocks`), both streamed from the merged meter ranges.

With ``StoreConfig.day_copies``, every day about to be absorbed by a month/year merge
first gets a day copy (``dcp-MMDD``, see :mod:`headend.store._layout`): a hard link to
its day file when that file holds all of the day's rows (no extra write), else the
merge of the day's previous copy and its newer day files. The copy is published (and
its directory fsync'ed) before the month/year file, so a crash leaves either the old
files or a valid copy next to them.
"""

from __future__ import annotations

import calendar
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from headend.store import _blocks, _fs, _rollup
from headend.store._keys import Kind
from headend.store._layout import (
    FileEntry,
    MetaCache,
    file_name,
    list_dir,
    newest_copies,
    part_name,
    read_meter_range,
    read_segment,
    split_live,
)
from headend.store.config import StoreConfig

_DELTA = "DELTA_BINARY_PACKED"
#: Parquet key-value metadata of month/year files whose days all have day copies
COPIES_KEY: Final = b"headend.day_copies"


def parquet_options(kind: Kind, config: StoreConfig) -> dict[str, Any]:
    """Writer options: zstd; delta encoding for sorted/smooth integer columns,
    dictionaries for small code columns."""
    enc = {c: _DELTA for c in kind.schema.names if c in ("meter_idx", kind.time_col, "value")}
    if kind.name == "reads":
        # interval values are noisy: byte-stream-split + zstd beats delta by ~10 %
        # (0.64 vs 0.71 bytes/read measured on synthetic load profiles; bench_store.py)
        enc["value"] = "BYTE_STREAM_SPLIT"
    dict_cols = [c for c in kind.schema.names if c not in enc]
    return {
        "compression": "zstd",
        "compression_level": config.zstd_level,
        "use_dictionary": dict_cols,
        "column_encoding": enc,
        "write_statistics": ["meter_idx", kind.time_col],  # time: extents of planned scans
        "data_page_size": 1 << 20,
    }


def _closed(year: int, month: int | None, grace_s: int, now: float) -> bool:
    if month is None:
        end = calendar.timegm((year + 1, 1, 1, 0, 0, 0))
    else:
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        end = calendar.timegm((ny, nm, 1, 0, 0, 0))
    return end + grace_s <= now


def compact_dir(
    kind: Kind, d: Path, year: int, *, config: StoreConfig, now: float, metas: MetaCache,
    next_seq: Callable[[], int], days_only: bool,
) -> int:
    """Compact a bucket-year directory the caller owns; returns files written.

    Then (reads, not ``days_only``) give every live month/year file that lacks one its
    block-sum sidecar (files of older stores, or of stores that had ``block_meters=0``).
    """
    written = _merge_levels(kind, d, year, config=config, now=now, metas=metas,
                            next_seq=next_seq, days_only=days_only)
    if kind.name == "reads" and config.block_meters and not days_only:
        live, _ = split_live(list_dir(d, year))
        missing = [f for f in live if f.level in ("mon", "year")
                   and not _blocks.sidecar_of(f.path).exists()]
        for f in missing:
            _blocks.backfill(f.path, metas.get(f), config.merge_rows, config.block_bits,
                             config.zstd_level)
        if missing:
            _fs.fsync_dir(d)
    return written


def _merge_levels(
    kind: Kind, d: Path, year: int, *, config: StoreConfig, now: float, metas: MetaCache,
    next_seq: Callable[[], int], days_only: bool,
) -> int:
    written = 0
    copies = config.day_copies and kind.name == "reads"  # only feeder sums read copies
    entries = list_dir(d, year)
    live, dead = split_live(entries)
    for f in dead:
        _rollup.unlink_data(f.path)
    if not days_only and not copies:  # copy-less merges would make them stale
        for f in entries:
            if f.is_copy:
                f.path.unlink(missing_ok=True)
    # 1. segments of a day -> day file
    days = sorted({f.scope for f in live if f.is_segment})
    if not days_only and not copies and config.top_level != "day":
        # days of a closed month (year) go straight into its file below: a bulk load of
        # the past is written once, not as day files first
        grace = config.close_grace_s
        whole = config.top_level == "year" and _closed(year, None, grace, now)
        days = [x for x in days if not (whole or _closed(year, int(x[:2]), grace, now))]
    for mmdd in days:
        inputs = [f for f in live if f.scope == mmdd]
        merge_files(kind, inputs, d / file_name("day", mmdd, next_seq()), config, metas)
        written += 1
    if days_only or config.top_level == "day":
        return written
    live, _ = split_live(list_dir(d, year))
    year_closed = _closed(year, None, config.close_grace_s, now)
    # 2. closed months -> month file (skipped when the year merges at once)
    for mm in sorted({f.scope[:2] for f in live if f.scope}):
        if config.top_level == "year" and year_closed:
            break
        if not _closed(year, int(mm), config.close_grace_s, now):
            continue
        inputs = [f for f in live if f.scope[:2] == mm and f.scope]
        if _one_file(inputs, "mon") and not _oversized(inputs, config, metas):
            continue
        marked = copies and make_day_copies(
            kind, d, year, inputs, live, config=config, metas=metas, next_seq=next_seq)
        merge_files(kind, inputs, d / file_name("mon", mm, next_seq()), config, metas,
                    marked=marked, part_rows=config.part_rows, rollups=True)
        written += 1
    if config.top_level != "year" or not year_closed:
        return written
    # 3. closed year -> year file
    live, _ = split_live(list_dir(d, year))
    if live and not (_one_file(live, "year") and not _oversized(live, config, metas)):
        marked = copies and make_day_copies(
            kind, d, year, live, live, config=config, metas=metas, next_seq=next_seq)
        merge_files(kind, live, d / file_name("year", "", next_seq()), config, metas,
                    marked=marked, part_rows=config.part_rows, rollups=True)
        written += 1
    return written


def _one_file(files: list[FileEntry], level: str) -> bool:
    """Whether ``files`` are one ``level`` file (or the parts of one)."""
    return (all(f.level == level for f in files)
            and len({f.seq for f in files}) == 1 and len(files) == max(1, files[0].part_n))


def _oversized(files: list[FileEntry], config: StoreConfig, metas: MetaCache) -> bool:
    """An unsplit file of more than twice ``part_rows`` rows (written before parts were
    configured): compaction re-splits it."""
    return (config.part_rows > 0 and len(files) == 1 and not files[0].part_n
            and metas.get(files[0]).rows > 2 * config.part_rows)


def make_day_copies(
    kind: Kind, d: Path, year: int, inputs: list[FileEntry], live: list[FileEntry], *,
    config: StoreConfig, metas: MetaCache, next_seq: Callable[[], int],
) -> bool:
    """Publish a day copy for each day whose segment/day files are among ``inputs``
    and newer than the day's newest copy; returns whether every day ``inputs`` may
    hold now has a valid copy (the merge of ``inputs`` may then be marked).

    A day with no copy gets one only when no live month/year file may hold its rows
    (else its copy would miss them; feeder queries then use the month/year file).
    Month/year files merged with copies on are marked (``COPIES_KEY`` in the Parquet
    key-value metadata): every day they hold has a copy, so they never block one.
    """
    copies, old = newest_copies(list_dir(d, year))
    upper = {f.scope for f in live if f.level in ("mon", "year")
             and not (metas.get(f).file.metadata.metadata or {}).get(COPIES_KEY)}
    complete = not any(f.level in ("mon", "year") and f.scope in upper for f in inputs)
    written = 0
    for mmdd in sorted({f.scope for f in inputs if f.level in ("seg", "day")}):
        day_files = [f for f in live if f.scope == mmdd and f.level in ("seg", "day")]
        prev = copies.get(mmdd)
        if prev is not None and not any(f.seq > prev.seq for f in day_files):
            continue
        if prev is None and (mmdd[:2] in upper or "" in upper):
            complete = False
            continue
        out = d / file_name("dcp", mmdd, next_seq())
        if prev is not None:
            newer = [f for f in day_files if f.seq > prev.seq]
            merge_files(kind, [prev, *newer], out, config, metas, delete_inputs=False)
            old.append(prev)
        elif len(day_files) == 1 and day_files[0].level == "day":
            os.link(day_files[0].path, out)  # same bytes: a second name, no extra write
        else:
            merge_files(kind, day_files, out, config, metas, delete_inputs=False)
        written += 1
    if written:
        _fs.fsync_dir(d)  # copies durable before the merge that absorbs their days
    for f in old:
        f.path.unlink(missing_ok=True)
    return complete


def _rows_and_range(f: FileEntry, metas: MetaCache, seg: dict[FileEntry, pa.Table]
                    ) -> tuple[int, int, int]:
    if f.is_segment:
        t = read_segment(f)
        seg[f] = t
        m = t.column("meter_idx").to_numpy()
        return len(t), int(m[0]) if len(m) else 0, int(m[-1]) if len(m) else -1
    meta = metas.get(f)
    if meta.rows == 0:
        return 0, 0, -1
    return meta.rows, int(meta.rg_lo.min()), int(meta.rg_hi.max())


def merge_files(kind: Kind, inputs: list[FileEntry], out: Path, config: StoreConfig,
                metas: MetaCache, *, delete_inputs: bool = True, marked: bool = False,
                part_rows: int = 0, rollups: bool = False) -> None:
    """Merge sorted ``inputs`` (older first wins on a repeated key) into ``out``
    (published durably), then delete the inputs unless told not to.

    ``marked``: tag the file with ``COPIES_KEY`` (its days all have day copies).
    ``part_rows`` > 0: write ``ceil(rows / part_rows)`` parts split by meter range
    (:func:`~headend.store._layout.part_name`), committed together by one directory
    fsync after the last rename.
    ``rollups`` (reads only): publish each file's daily rollup sidecar
    (:mod:`~headend.store._rollup`) just before the file itself.
    """
    rollups = rollups and kind.name == "reads"
    inputs = sorted(inputs, key=lambda f: f.seq)
    seg: dict[FileEntry, pa.Table] = {}
    info = [_rows_and_range(f, metas, seg) for f in inputs]
    total = sum(i[0] for i in info)
    lo = min((i[1] for i in info if i[0]), default=0)
    hi = max((i[2] for i in info if i[0]), default=-1)
    n_parts = 1 if part_rows <= 0 or total <= part_rows else math.ceil(total / part_rows)
    n_parts = max(1, min(n_parts, hi - lo + 1))
    pedges = np.linspace(lo, hi + 1, n_parts + 1).astype(np.int64).tolist()
    opts = parquet_options(kind, config)
    schema = kind.schema.with_metadata({COPIES_KEY: b"1"}) if marked else kind.schema

    def writer(p_lo: int, p_hi: int, final: Path) -> Callable[[Path], None]:
        n_chunks = max(1, math.ceil(total / n_parts / config.merge_rows))
        edges = np.linspace(p_lo, p_hi + 1, n_chunks + 1).astype(np.int64)

        def write(tmp: Path) -> None:
            days: list[pa.Table] = []
            blocks = (_blocks.BlockWriter(final, config.block_bits, config.zstd_level)
                      if rollups and config.block_meters else None)
            try:
                with pq.ParquetWriter(str(tmp), schema, **opts) as w:
                    for a, b in zip(edges[:-1].tolist(), (edges[1:] - 1).tolist(),
                                    strict=True):
                        t = _merged_range(kind, inputs, seg, metas, a, b) if b >= a else None
                        if t is not None:
                            w.write_table(t, row_group_size=config.row_group_rows)
                            if rollups:
                                days.append(_rollup_of(t))
                            if blocks is not None:
                                blocks.add(t)
                if rollups:  # before the file: a published file has its sidecars
                    _rollup.write_sidecar(final, days)
                if blocks is not None:
                    blocks.commit()
            except BaseException:
                if blocks is not None:
                    blocks.abort()
                raise
        return write

    if n_parts == 1:
        _fs.publish_path(out, writer(lo, hi, out))
    else:
        for k in range(n_parts):
            p_lo, p_hi = pedges[k], pedges[k + 1] - 1
            pth = part_name(out, k, n_parts, p_lo, p_hi)
            _fs.publish_path(pth, writer(p_lo, p_hi, pth), sync_dir=False)
        _fs.fsync_dir(out.parent)  # <- commit: the set is complete and durable
    if not delete_inputs:
        return
    for f in inputs:
        if not f.shared:  # a multi-day segment goes once all its days are obsolete
            _rollup.unlink_data(f.path)
    _fs.fsync_dir(out.parent)


def _rollup_of(t: pa.Table) -> pa.Table:
    return _rollup.rollup(t.column("meter_idx").to_numpy(),
                          t.column("reading_type").to_numpy(),
                          t.column("interval_end").cast(pa.int64()).to_numpy(),
                          t.column("value").to_numpy())


def _merged_range(kind: Kind, inputs: list[FileEntry], seg: dict[FileEntry, pa.Table],
                  metas: MetaCache, a: int, b: int) -> pa.Table | None:
    """Rows of meters ``a..b`` of every input, sorted by key, first input wins."""
    pieces = []
    for f in inputs:
        if f.is_segment:
            t = seg[f]
            m = t.column("meter_idx").to_numpy()
            i0, i1 = np.searchsorted(m, [a, b + 1])
            t = t.slice(int(i0), int(i1 - i0))
        else:
            r = read_meter_range(f, metas, a, b)
            if r is None:
                continue
            m = r.column("meter_idx").to_numpy()
            i0, i1 = np.searchsorted(m, [a, b + 1])  # sorted by meter
            t = r.slice(int(i0), int(i1 - i0))
        if len(t):
            pieces.append(kind.coerce(t))
    if not pieces:
        return None
    t = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
    if len(pieces) > 1:
        keys = kind.keys(t)
        order = np.argsort(keys, kind="stable")
        ks = keys[order]
        keep = np.r_[True, ks[1:] != ks[:-1]]  # defensive: never two rows a key
        t = t.take(order[keep])
    return t
