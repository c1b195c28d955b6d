"""The VEE version store: every value VEE or a person ever gave an interval, kept.

Layout: ``<root>/vee/part-<created_ns>-<uuid>.parquet`` in
:data:`headend.model.schema.VEE_VERSIONS`. Files are published with temp file + fsync
+ rename + directory fsync and never rewritten; an append takes a short ``flock`` on
``<root>/vee/.lock`` so that version numbers stay unique per key.

Versions
--------
Version 0 of a key is the read as stored by ingest (the store is never modified);
versions 1, 2, ... are appended here, each with its method (``validate``,
``interpolation``, ``like_day``, ``prorated`` or ``edit``), author, reason and
creation time. The *current* value of a key is its highest version, or the stored
read if it has none.

Reads that passed validation
----------------------------
A read that passes every check only gains the *validated* bit (3.0.1); VEE does not
write a version for it. Instead it records what it covered in
``<root>/vee/coverage.parquet`` (:class:`Coverage`: per meter and reading type, the
spans of interval ends VEE ran over, merged) and :func:`current_reads` adds the bit to
every covered read without a version. Versions are written only for what VEE changed
beyond that: suspect reads, estimates, a late read replacing its estimate.

Contract: appends are durable on return and idempotent in effect (VEE appends a
version only when value or quality differ from the current one); readers may run
concurrently with one writer.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from headend._grouping import unique_inverse
from headend.errors import StorageError, ValidationError
from headend.model import codes
from headend.model.schema import READS, TS, VEE_VERSIONS, read_key
from headend.store.fs import fsync_dir, locked, publish_path, remove_temp_files

__all__ = ["COVERAGE", "EDITED", "VALIDATED", "Coverage", "VersionStore", "current_reads"]

EDITED = np.uint32(1 << codes.QUALITY_BY_NAME["edited"].bit)
VALIDATED = np.uint32(1 << codes.QUALITY_BY_NAME["validated"].bit)
#: spans of interval ends ``[start, end)`` VEE has run over, per meter and reading type
COVERAGE = pa.schema([
    pa.field("meter_idx", pa.int32(), nullable=False),
    pa.field("reading_type", pa.uint8(), nullable=False),
    pa.field("start", TS, nullable=False),
    pa.field("end", TS, nullable=False),
])
_KEY_COLS = ["meter_idx", "reading_type", "interval_end"]
#: meters per coverage file (an add rewrites the files of the meters it brings)
COVER_METERS = 1 << 16


def _keys(t: pa.Table) -> npt.NDArray[np.uint64]:
    return read_key(t.column("meter_idx").to_numpy(), t.column("reading_type").to_numpy(),
                    t.column("interval_end").cast(pa.int64()).to_numpy())


def _last_per_key(t: pa.Table) -> pa.Table:
    """Rows holding each key's highest version, sorted by key."""
    if t.num_rows == 0:
        return t
    k = _keys(t)
    order = np.lexsort((t.column("version").to_numpy(), k))
    ks = k[order]
    last = np.r_[ks[1:] != ks[:-1], True]
    return t.take(pa.array(order[last]))


class VersionStore:
    """Versions of interval reads under ``<root>/vee/``.

    Parameters
    ----------
    root : Path
        The data directory (``--data``).
    """

    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / "vee"

    # ------------------------------------------------------------------ reading
    def _files(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(str(p) for p in self.dir.glob("part-*.parquet"))

    def versions(self, *, meters: npt.NDArray[np.int32] | None = None, start: int | None = None,
                 end: int | None = None, reading_types: npt.NDArray[np.uint8] | None = None
                 ) -> pa.Table:
        """Every version with ``start <= interval_end < end``, sorted by key and version."""
        files = self._files()
        if not files:
            return VEE_VERSIONS.empty_table()
        flt: Any = None

        def both(a: Any, b: Any) -> Any:
            return b if a is None else a & b

        if meters is not None:
            ms = np.asarray(meters, np.int32)
            if len(ms):  # a range first: row-group statistics skip other meters' files
                flt = both(flt, (pc.field("meter_idx") >= pa.scalar(int(ms.min()), pa.int32()))
                           & (pc.field("meter_idx") <= pa.scalar(int(ms.max()), pa.int32())))
            flt = both(flt, pc.field("meter_idx").isin(pa.array(ms, pa.int32())))
        if reading_types is not None:
            flt = both(flt, pc.field("reading_type").isin(pa.array(reading_types, pa.uint8())))
        if start is not None:
            flt = both(flt, pc.field("interval_end") >= pa.scalar(start, TS))
        if end is not None:
            flt = both(flt, pc.field("interval_end") < pa.scalar(end, TS))
        try:
            t = ds.dataset(files, schema=VEE_VERSIONS, format="parquet").to_table(filter=flt)
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageError(f"cannot read VEE versions in {self.dir}: {exc}") from exc
        t = t.sort_by([*((c, "ascending") for c in _KEY_COLS), ("version", "ascending")])
        if t.num_rows > 1:  # a crash inside compact() may leave a row in two files
            k = _keys(t)
            ver = t.column("version").to_numpy()
            dup = np.r_[False, (k[1:] == k[:-1]) & (ver[1:] == ver[:-1])]
            if dup.any():
                t = t.filter(pa.array(~dup))
        return t

    def compact(self) -> int:
        """Merge every part file into one (all versions kept); returns the files merged.

        The merged file is published before the old ones are removed, so a crash in
        between leaves duplicates that :meth:`versions` drops, never a loss.
        """
        if not self.dir.is_dir():
            return 0
        with locked(self.dir / ".lock", what="VEE version store"):
            files = self._files()
            if len(files) < 2:
                return 0
            t = self.versions()
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            publish_path(self.dir / name, lambda p: pq.write_table(t, p, compression="zstd"))
            for f in files:
                Path(f).unlink()
            fsync_dir(self.dir)
        return len(files)

    def latest(self, **kw: Any) -> pa.Table:
        """Each key's current (highest) version; same filters as :meth:`versions`."""
        return _last_per_key(self.versions(**kw))

    # ------------------------------------------------------------------ writing
    def append(self, rows: pa.Table, *, method: str | pa.Array, author: str, reason: str,
               created_at: datetime | None = None) -> pa.Table:
        """Append new versions of the keys in ``rows`` (READS columns).

        Each row becomes version ``current + 1`` of its key. Returns the rows written
        (VEE_VERSIONS). Rows must have distinct keys.
        """
        if rows.num_rows == 0:
            return VEE_VERSIONS.empty_table()
        rows = rows.select(READS.names).cast(READS)
        created = created_at or datetime.now(UTC)
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".lock", what="VEE version store"):
            meters = np.unique(rows.column("meter_idx").to_numpy())
            t = rows.column("interval_end").cast(pa.int64()).to_numpy()
            cur = self.latest(meters=meters, start=int(t.min()), end=int(t.max()) + 1)
            version = np.ones(rows.num_rows, dtype=np.int32)
            if cur.num_rows:
                ck = _keys(cur)
                k = _keys(rows)
                pos = np.clip(np.searchsorted(ck, k), 0, len(ck) - 1)
                hit = ck[pos] == k
                version[hit] = cur.column("version").to_numpy()[pos[hit]] + 1
            n = rows.num_rows
            meth = (method.cast(pa.string()) if isinstance(method, pa.Array)
                    else pa.array([method] * n, pa.string()))
            out = pa.table(
                {
                    **{c: rows.column(c) for c in READS.names if c in _KEY_COLS},
                    "version": pa.array(version, pa.int32()),
                    "value": rows.column("value"),
                    "quality": rows.column("quality"),
                    "method": meth,
                    "author": pa.array([author] * n, pa.string()),
                    "reason": pa.array([reason] * n, pa.string()),
                    "created_at": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
                }
            ).select(VEE_VERSIONS.names).cast(VEE_VERSIONS)
            remove_temp_files(self.dir, only_dead=True)
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            publish_path(self.dir / name, lambda p: pq.write_table(out, p, compression="zstd"))
        return out

    def edit(self, meter_idx: int, reading_type: int, interval_end: int, value: int, *,
             reason: str, author: str, created_at: datetime | None = None) -> int:
        """Record a manual edit; returns its version number.

        Parameters
        ----------
        meter_idx, reading_type : int
            The key (registry index, reading type code).
        interval_end : int
            Interval end [Unix s, UTC].
        value : int
            New value in the reading type's resolution (1 Wh for kWh types).
        reason, author : str
            Why and who; ``reason`` must not be empty.

        Raises
        ------
        ValidationError
            Empty reason or author, or a value outside ``int32``.
        """
        if not reason.strip() or not author.strip():
            raise ValidationError("an edit needs a reason and an author")
        if not -(2**31) <= value < 2**31:
            raise ValidationError(f"edited value {value} out of range")
        row = pa.table({"meter_idx": [meter_idx], "reading_type": [reading_type],
                        "interval_end": pa.array([interval_end], pa.int64()).cast(TS),
                        "value": [value], "quality": [int(EDITED)]})
        out = self.append(row, method="edit", author=author, reason=reason,
                          created_at=created_at)
        return int(out.column("version")[0].as_py())


class Coverage:
    """The spans VEE has validated, merged per key, in a file per :data:`COVER_METERS`
    meters (``<root>/vee/coverage/m=<meter_idx // COVER_METERS>.parquet``).

    An add rewrites (temp file + fsync + rename) only the files of the meters it brings,
    under the version store's lock, so that its cost is that of those meters, not of the
    fleet's coverage; a steady stream of VEE runs over adjacent windows keeps one span
    per key. A single ``<root>/vee/coverage.parquet`` (the layout before) is read too
    and split into the per-meter files at the next add.
    """

    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / "vee"
        self.path = self.dir / "coverage.parquet"  # the single file of the layout before
        self.parts = self.dir / "coverage"

    def exists(self) -> bool:
        """Whether VEE has recorded any span."""
        return self.path.exists() or (self.parts.is_dir()
                                      and any(self.parts.glob("m=*.parquet")))

    def _part(self, bucket: int) -> Path:
        return self.parts / f"m={bucket:06d}.parquet"

    @staticmethod
    def _read(path: Path) -> pa.Table | None:
        try:
            return pq.read_table(path).cast(COVERAGE)
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    def table(self, meters: npt.NDArray[np.int32] | None = None) -> pa.Table:
        """Every span (of the files holding ``meters``), sorted by key and start."""
        if meters is None:
            paths = sorted(self.parts.glob("m=*.parquet")) if self.parts.is_dir() else []
        else:
            paths = [self._part(int(b)) for b in
                     np.unique(np.asarray(meters, np.int64) // COVER_METERS)]
        got = [t for t in (self._read(p) for p in paths) if t is not None]
        old = self._read(self.path) if self.path.exists() else None
        if old is None:  # per-meter files in meter order: sorted already
            return pa.concat_tables(got) if got else COVERAGE.empty_table()
        return _merge_spans(pa.concat_tables([old, *got]))

    def add(self, spans: pa.Table) -> None:
        """Merge ``spans`` (:data:`COVERAGE`) into the coverage, durably."""
        if spans.num_rows == 0:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".lock", what="VEE version store"):
            new = spans.select(COVERAGE.names).cast(COVERAGE)
            old = self._read(self.path) if self.path.exists() else None
            if old is not None:  # the layout before: split it into the per-meter files
                new = pa.concat_tables([old, new])
            b = new.column("meter_idx").to_numpy().astype(np.int64) // COVER_METERS
            order = np.argsort(b, kind="stable")
            b = b[order]
            new = new.take(pa.array(order))
            edges = np.flatnonzero(np.r_[True, b[1:] != b[:-1], True])
            for i, j in itertools.pairwise(edges):
                path = self._part(int(b[i]))
                cur = self._read(path)
                part = new.slice(i, j - i)
                out = _merge_spans(part if cur is None else pa.concat_tables([cur, part]))
                publish_path(path, functools.partial(_write_spans, out), sync_dir=False)
            fsync_dir(self.parts)
            if old is not None:
                self.path.unlink()
                fsync_dir(self.dir)

    def covered(self, meter_idx: npt.NDArray[np.int32], reading_type: npt.NDArray[np.uint8],
                interval_end: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Whether each key lies in a span VEE has run over."""
        t = self.table(meter_idx)
        if t.num_rows == 0 or len(meter_idx) == 0:
            return np.zeros(len(meter_idx), bool)
        start = read_key(t.column("meter_idx").to_numpy(), t.column("reading_type").to_numpy(),
                         t.column("start").cast(pa.int64()).to_numpy())
        end = t.column("end").cast(pa.int64()).to_numpy()
        q = read_key(meter_idx, reading_type, interval_end)
        pos = np.searchsorted(start, q, side="right") - 1
        ok = pos >= 0
        p = np.maximum(pos, 0)
        same = (t.column("meter_idx").to_numpy()[p] == meter_idx) & (
            t.column("reading_type").to_numpy()[p] == reading_type)
        out: npt.NDArray[np.bool_] = ok & same & (interval_end < end[p])
        return out


def _write_spans(t: pa.Table, path: Path) -> None:
    pq.write_table(t, path, compression="zstd")


def _merge_spans(t: pa.Table) -> pa.Table:
    """:data:`COVERAGE` spans as the union of intervals per key, sorted by key and start."""
    g = (t.column("meter_idx").to_numpy().astype(np.int64) << 8) | t.column(
        "reading_type").to_numpy()
    a = t.column("start").cast(pa.int64()).to_numpy()
    b = t.column("end").cast(pa.int64()).to_numpy()
    o = np.lexsort((a, g))
    g, a, b = g[o], a[o], b[o]
    # union of intervals per key: a merged span starts where a span begins
    # after every earlier span of its key has ended
    end_so_far = _running_max_per_group(g, b)
    new = np.r_[True, (g[1:] != g[:-1]) | (a[1:] > end_so_far[:-1])]
    last = np.r_[new[1:], True]
    return pa.table({
        "meter_idx": pa.array((g[new] >> 8).astype(np.int32)),
        "reading_type": pa.array((g[new] & 0xFF).astype(np.uint8)),
        "start": pa.array(a[new], pa.int64()).cast(TS),
        "end": pa.array(end_so_far[last], pa.int64()).cast(TS),
    }, schema=COVERAGE)


def _running_max_per_group(g: npt.NDArray[np.int64], b: npt.NDArray[np.int64]
                           ) -> npt.NDArray[np.int64]:
    """Running maximum of ``b`` restarting at each new ``g`` (rows sorted by ``g``)."""
    if len(b) == 0:
        return b
    lo = int(b.min())
    span = int(b.max()) - lo + 1
    # offset each group above the previous one so one accumulate serves all groups
    grp = np.cumsum(np.r_[0, g[1:] != g[:-1]])
    out: npt.NDArray[np.int64] = np.maximum.accumulate(grp * span + (b - lo)) - grp * span + lo
    return out


def current_reads(root: Path | str, raw: pa.Table, registry: object | None = None, *,
                  start: int | None = None, end: int | None = None) -> pa.Table:
    """Overlay the current VEE version of every key onto ``raw`` (a store scan).

    Parameters
    ----------
    root : Path
        The data directory.
    raw : pyarrow.Table
        Reads as scanned from the store (:data:`READS`), one row per key.
    registry : MeterRegistry, optional
        Unused today; accepted so that callers pass what the export has.
    start, end : int, optional
        The scan's window [Unix s]. Estimated rows (keys with no stored read) are added
        for the meters and reading types of ``raw`` within ``[start, end)``; without a
        window, within each (meter, reading type)'s first and last row of ``raw``.

    Returns
    -------
    pyarrow.Table
        :data:`READS`, sorted by key: ``raw`` with values and quality replaced by their
        latest version, plus the rows VEE estimated for missing intervals.
    """
    del registry
    vs = VersionStore(root)
    cov = Coverage(root)
    if raw.num_rows == 0 or not (vs._files() or cov.exists()):
        return raw
    raw = raw.select(READS.names).cast(READS)
    rm = raw.column("meter_idx").to_numpy()
    rrt = raw.column("reading_type").to_numpy()
    t = raw.column("interval_end").cast(pa.int64()).to_numpy()
    value = raw.column("value").to_numpy()
    # reads VEE ran over and left without a version passed validation
    quality = np.where(cov.covered(rm, rrt, t), raw.column("quality").to_numpy() | VALIDATED,
                       raw.column("quality").to_numpy()).astype(np.uint32)
    lo = int(t.min()) if start is None else start
    hi = int(t.max()) + 1 if end is None else end
    cur = (vs.latest(meters=np.unique(rm), start=lo, end=hi, reading_types=np.unique(rrt))
           if vs._files() else VEE_VERSIONS.empty_table())
    if cur.num_rows == 0:
        return pa.table({"meter_idx": raw.column("meter_idx"),
                         "reading_type": raw.column("reading_type"),
                         "interval_end": raw.column("interval_end"), "value": value,
                         "quality": quality}, schema=READS)
    rk = _keys(raw)
    order = np.argsort(rk, kind="stable")
    rk_sorted = rk[order]
    ck = _keys(cur)
    pos = np.clip(np.searchsorted(rk_sorted, ck), 0, len(rk_sorted) - 1)
    hit = rk_sorted[pos] == ck
    value = value.copy()
    value[order[pos[hit]]] = cur.column("value").to_numpy()[hit]
    quality[order[pos[hit]]] = cur.column("quality").to_numpy()[hit]
    out = pa.table({"meter_idx": raw.column("meter_idx"), "reading_type": raw.column("reading_type"),
                    "interval_end": raw.column("interval_end"), "value": value,
                    "quality": quality}, schema=READS)
    extra = cur.filter(pa.array(~hit))
    if extra.num_rows and start is None and end is None:
        # keep only keys inside each (meter, reading type)'s span of raw rows
        grp = raw.column("meter_idx").to_numpy().astype(np.int64) * 256 + raw.column("reading_type").to_numpy()
        ug, inv = unique_inverse(grp)
        first = np.full(len(ug), np.iinfo(np.int64).max)
        last = np.full(len(ug), np.iinfo(np.int64).min)
        np.minimum.at(first, inv, t)
        np.maximum.at(last, inv, t)
        eg = extra.column("meter_idx").to_numpy().astype(np.int64) * 256 + extra.column("reading_type").to_numpy()
        et = extra.column("interval_end").cast(pa.int64()).to_numpy()
        gi = np.clip(np.searchsorted(ug, eg), 0, len(ug) - 1)
        inside = (ug[gi] == eg) & (et >= first[gi]) & (et <= last[gi])
        extra = extra.filter(pa.array(inside))
    if extra.num_rows:
        out = pa.concat_tables([out, extra.select(READS.names).cast(READS)])
        out = out.take(pa.array(np.argsort(_keys(out), kind="stable")))
    return out
