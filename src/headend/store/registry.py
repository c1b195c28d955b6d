"""The meter registry (``meters.parquet``), the intervals learned from the reads
(``intervals.parquet``) and the collectors' HMAC keys (``collectors.parquet``).

Meters get a dense ``meter_idx`` (0, 1, 2, ...) when first loaded, in topology order
(substation, feeder, transformer, collector, meter id) within each load, so that the
meters of a feeder loaded together form a contiguous index range. A meter keeps its
index forever; its attributes and topology may change with later loads.

Intervals
---------
A meter's interval is known, never assumed: ``interval_s`` in ``meters.parquet`` is the
*declared* interval (0: the meters CSV did not declare one). Undeclared intervals are
learned from the reads (:mod:`headend.vee.intervals`) per (meter, reading type) and kept
as a small history in ``intervals.parquet`` (:data:`~headend.model.schema.INTERVALS`):
an interval holds from its ``effective_from`` on, so a meter reprogrammed from 15 to 5
minutes keeps its 15-minute history. A declared interval wins over any learned one.
:meth:`MeterRegistry.intervals` answers "which interval at time t" for many reads at once.

The files are written like the store's: temp file, fsync, atomic rename, fsync dir,
under a short-lived ``flock`` on ``<root>/locks/<name>.lock`` so that several processes
may load meters. Readers reload when the file's (inode, size, mtime) changed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from headend.errors import StorageError, ValidationError
from headend.model import schema as S
from headend.store import _fs
from headend.store._hash import U64Map
from headend.store.intervals import RT_SLOTS, IntervalHistory

__all__ = ["COLLECTORS", "CollectorKeys", "IntervalHistory", "MeterRegistry", "serial_of"]

_MAX_U64: Final = "18446744073709551615"
_TOPO: Final = ("substation_id", "feeder_id", "transformer_id", "collector_id", "meter_id")
_INPUT: Final = [f for f in S.METERS if f.name not in ("meter_idx", "serial")]

COLLECTORS: Final = pa.schema([
    pa.field("collector_id", pa.uint32(), nullable=False),
    pa.field("hmac_key", pa.binary(), nullable=False),
])


def serial_of(meter_id: pa.Array) -> npt.NDArray[np.uint64]:
    """Frame serial of each meter id: ``int(meter_id)`` if all digits and ``< 2**64``, else 0."""
    ids = pc.cast(meter_id, pa.string())
    n = pc.utf8_length(ids)
    fits = pc.fill_null(pc.and_(
        pc.ascii_is_decimal(ids),  # non-empty, ASCII 0-9 only
        pc.or_(pc.less(n, 20), pc.and_(pc.equal(n, 20), pc.less_equal(ids, _MAX_U64)))),
        False)
    if pc.all(fits).as_py():
        return pc.cast(ids, pa.uint64()).to_numpy()  # type: ignore[no-any-return]
    fits_np = fits.to_numpy(zero_copy_only=False)
    out = np.zeros(len(ids), np.uint64)
    if fits_np.any():
        out[fits_np] = pc.cast(ids.filter(fits), pa.uint64()).to_numpy()
    return out


def _with_defaults(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """``t`` with the columns of ``schema`` it lacks added as zeros (false), in schema
    order: a file written before a column existed (``critical_care``, ``switch_state``)
    reads as if every row had the default."""
    missing = [f for f in schema if f.name not in t.schema.names]
    for f in missing:
        t = t.append_column(f.name, pa.array(np.zeros(t.num_rows, np.uint8)).cast(f.type))
    return t.select(schema.names) if missing else t


class _Watched:
    """A Parquet file re-read when it changed.

    The cheap check is ``(inode, size, mtime)``; because inodes are reused and mtimes
    are coarse, a file changed within the last 2 s is also checked by the generation
    number kept in its footer. Writers always reload under their lock.
    """

    def __init__(self, path: Path, schema: pa.Schema, on_load: Callable[[pa.Table], None]
                 ) -> None:
        self.path = path
        self.schema = schema
        self._on_load = on_load
        self._sig: tuple[int, int, int] | None = None
        self.generation = 0
        self._mutex = threading.RLock()
        self.refresh()

    @staticmethod
    def _generation(md: pq.FileMetaData) -> int:
        kv = md.metadata or {}
        return int(kv.get(b"headend.generation", b"0"))

    def refresh(self, *, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            sig = (0, 0, 0)
        if sig == self._sig and not force:
            if sig == (0, 0, 0) or time.time_ns() - sig[2] > 2_000_000_000:
                return
            try:
                if self._generation(pq.read_metadata(self.path)) == self.generation:
                    return
            except (OSError, pa.ArrowInvalid):
                pass
        with self._mutex:
            if sig == (0, 0, 0):
                t, gen = self.schema.empty_table(), 0
            else:
                try:
                    pf = pq.ParquetFile(self.path)
                    gen = self._generation(pf.metadata)
                    t = _with_defaults(pf.read(), self.schema).cast(self.schema)
                except (OSError, pa.ArrowInvalid) as exc:
                    raise StorageError(f"cannot read {self.path}: {exc}") from exc
            self._on_load(t)
            self._sig, self.generation = sig, gen

    def save(self, table: pa.Table) -> None:
        """Publish ``table`` as the new version (caller holds the write lock)."""
        gen = self.generation + 1
        table = table.replace_schema_metadata({"headend.generation": str(gen)})

        def write(tmp: Path) -> None:
            pq.write_table(table, str(tmp), compression="zstd")

        _fs.publish_path(self.path, write)
        self.refresh(force=True)


class MeterRegistry:
    """Meters of one data dir: ``meter_idx`` assignment, lookups and topology.

    Parameters
    ----------
    root : Path
        Data directory; the registry lives in ``<root>/meters.parquet``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        _fs.remove_temp_files(self.root, only_dead=True)
        self._table = S.REGISTRY.empty_table()
        self._serial_map = U64Map(np.empty(0, np.uint64), np.empty(0, np.int32))
        self._id_is_serial = np.empty(0, np.bool_)
        self._file = _Watched(self.root / "meters.parquet", S.REGISTRY, self._load)
        self._learned = S.INTERVALS.empty_table()
        self._ivl_file = _Watched(self.root / "intervals.parquet", S.INTERVALS,
                                  self._load_intervals)
        self._switches = S.SWITCH_HISTORY.empty_table()
        self._switch_file = _Watched(self.root / "switch_history.parquet", S.SWITCH_HISTORY,
                                     self._load_switches)
        self._history: tuple[tuple[int, int], IntervalHistory] | None = None
        self._effective: tuple[tuple[int, int], pa.Table] | None = None

    def _load_intervals(self, t: pa.Table) -> None:
        self._learned = t

    def _load(self, t: pa.Table) -> None:
        t = t.sort_by("meter_idx")
        idx = t.column("meter_idx").to_numpy()
        if len(idx) and not np.array_equal(idx, np.arange(len(idx))):
            raise StorageError(f"{self.root / 'meters.parquet'}: meter_idx not dense")
        serial = t.column("serial").to_numpy()
        has = serial != 0
        self._serial_map = U64Map(serial[has], idx[has].astype(np.int32))
        self._table = t

    def _t(self) -> pa.Table:
        self._file.refresh()
        return self._table

    def __len__(self) -> int:
        return len(self._t())

    def table(self) -> pa.Table:
        """The registry (``model.schema.REGISTRY``), ordered by ``meter_idx``, with
        ``interval_s`` the interval in effect now: declared, else learned (the shortest
        over the meter's reading types), else 0 (unknown)."""
        t = self._t()
        h = self.intervals()
        sig = (id(t), id(h))
        if self._effective is None or self._effective[0] != sig:
            cur, _src = h.current()
            i = t.schema.get_field_index("interval_s")
            eff = t.set_column(i, t.schema.field(i), pa.array(cur[: len(t)], pa.int32()))
            self._effective = (sig, eff)
        return self._effective[1]

    def declared(self) -> pa.Table:
        """The registry as loaded: ``interval_s`` is the declared interval (0: none)."""
        return self._t()

    def intervals(self) -> IntervalHistory:
        """The declared and learned intervals (:class:`IntervalHistory`), cached until
        either file changes."""
        t = self._t()
        self._ivl_file.refresh()
        sig = (id(t), id(self._learned))
        if self._history is None or self._history[0] != sig:
            self._history = (sig, IntervalHistory(t.column("interval_s").to_numpy(),
                                                   self._learned))
        return self._history[1]

    def interval_source(self, meter_idx: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
        """Where each meter's current interval comes from: :data:`UNKNOWN` (0),
        :data:`DECLARED` (1) or :data:`LEARNED` (2)."""
        return self.intervals().current()[1][np.asarray(meter_idx, np.int64)]

    def learn_intervals(self, entries: pa.Table) -> int:
        """Record learned intervals (:data:`~headend.model.schema.INTERVALS` rows),
        durably; returns how many entries the history grew by.

        An entry equal to the interval already in effect at its time is dropped, one
        with the same key and time replaces the old one.
        """
        if entries.num_rows == 0:
            return 0
        try:
            new = entries.select(S.INTERVALS.names).cast(S.INTERVALS)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"intervals table does not fit: {exc}") from exc
        with _fs.locked(self.root / "locks" / "intervals.lock", what="learned intervals"):
            self._ivl_file.refresh(force=True)
            old = self._learned
            cur = IntervalHistory(np.zeros(0, np.int32), old)
            m = new.column("meter_idx").to_numpy()
            rt = new.column("reading_type").to_numpy()
            eff = new.column("effective_from").cast(pa.int64()).to_numpy()
            ivl = new.column("interval_s").to_numpy()
            has, _ = cur.segments(m, rt, eff)
            add = new.filter(pa.array(has != ivl))
            if add.num_rows == 0:
                return 0
            both = pa.concat_tables([old, add])
            k = S.read_key(both.column("meter_idx").to_numpy(),
                           both.column("reading_type").to_numpy(),
                           both.column("effective_from").cast(pa.int64()).to_numpy())
            order = np.argsort(k, kind="stable")
            ks = k[order]
            order = order[np.r_[ks[1:] != ks[:-1], True]]  # a later entry of a key wins
            merged = both.take(pa.array(order))
            grp = (merged.column("meter_idx").to_numpy().astype(np.int64) * RT_SLOTS
                   + merged.column("reading_type").to_numpy())
            ivl_m = merged.column("interval_s").to_numpy()
            same = np.r_[False, (grp[1:] == grp[:-1]) & (ivl_m[1:] == ivl_m[:-1])]
            merged = merged.filter(pa.array(~same))
            if merged.equals(old):
                return 0
            self._ivl_file.save(merged)
        return int(merged.num_rows - old.num_rows)

    def set_switch_states(self, meter_idx: npt.NDArray[np.int32],
                          state: npt.NDArray[np.uint8], at_s: npt.NDArray[np.int64],
                          command_id: Sequence[str]) -> int:
        """Record service switch states (:data:`~headend.model.commands.SWITCH_STATES`
        codes) set by completed commands, durably: appended to
        ``<root>/switch_history.parquet`` (every version kept) and set as the registry's
        ``switch_state`` where newer than the meter's last recorded one. Returns how
        many meters changed state."""
        n = len(meter_idx)
        if n == 0:
            return 0
        rows = pa.table({"meter_idx": pa.array(np.asarray(meter_idx, np.int32)),
                         "switch_state": pa.array(np.asarray(state, np.uint8)),
                         "at": pa.array(np.asarray(at_s, np.int64)).cast(S.TS),
                         "command_id": pa.array(list(command_id), pa.string())},
                        schema=S.SWITCH_HISTORY)
        with _fs.locked(self.root / "locks" / "meters.lock", what="meter registry"):
            self._file.refresh(force=True)
            hist = self._switch_history()
            both = pa.concat_tables([hist, rows]) if hist.num_rows else rows
            self._switch_file.save(both)
            # the state in effect: each meter's latest entry (by time, then order)
            m = both.column("meter_idx").to_numpy()
            t = both.column("at").cast(pa.int64()).to_numpy()
            order = np.lexsort((np.arange(len(m)), t, m))
            last = order[np.r_[m[order][1:] != m[order][:-1], True]]
            old = self._table
            switch = old.column("switch_state").to_numpy().copy()
            sel = last[m[last] < len(switch)]
            before = switch[m[sel]].copy()
            switch[m[sel]] = both.column("switch_state").to_numpy()[sel]
            changed = int((before != switch[m[sel]]).sum())
            if changed:
                i = old.schema.get_field_index("switch_state")
                self._file.save(old.set_column(i, old.schema.field(i), pa.array(switch)))
        return changed

    def switch_history(self) -> pa.Table:
        """Every switch state recorded (:data:`~headend.model.schema.SWITCH_HISTORY`)."""
        return self._switch_history()

    def _switch_history(self) -> pa.Table:
        self._switch_file.refresh()
        return self._switches

    def _load_switches(self, t: pa.Table) -> None:
        self._switches = t

    # ------------------------------------------------------------------ lookups

    def idx_for_serial(self, serial: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
        """``meter_idx`` of each frame serial (``-1``: unknown)."""
        self._file.refresh()
        return self._serial_map.get(np.asarray(serial, dtype=np.uint64))

    def idx_for_id(self, meter_id: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.int32]:
        """``meter_idx`` of each meter id string (``-1``: unknown)."""
        t = self._t()
        if isinstance(meter_id, pa.ChunkedArray):
            meter_id = meter_id.combine_chunks()
        q = pc.cast(meter_id, pa.string())
        out = self._serial_map.get(serial_of(q))
        # a serial hit counts only where the stored id is the very same string
        hit = out >= 0
        if hit.any():
            same = pc.equal(t.column("meter_id").take(pa.array(np.where(hit, out, 0))), q)
            hit &= pc.fill_null(same, False).to_numpy(zero_copy_only=False)
            out[~hit] = -1
        rest = np.flatnonzero(~hit)
        if len(rest) and len(t):
            pos = pc.index_in(q.take(pa.array(rest)), value_set=t.column("meter_id"))
            p = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            idx = t.column("meter_idx").to_numpy()
            out[rest] = np.where(p >= 0, idx[np.maximum(p, 0)], -1)
        return out

    def _take(self, column: str, meter_idx: npt.NDArray[np.int32]) -> pa.Array:
        t = self._t()
        m = np.asarray(meter_idx, dtype=np.int64)
        if len(m) and (m.min() < 0 or m.max() >= len(t)):
            raise ValidationError("meter_idx not in the registry")
        return t.column(column).take(pa.array(m)).combine_chunks()

    def ids(self, meter_idx: npt.NDArray[np.int32]) -> pa.StringArray:
        """``meter_id`` of each index."""
        return self._take("meter_id", meter_idx)

    def interval_s(self, meter_idx: npt.NDArray[np.int32], *, unknown: int = 900
                   ) -> npt.NDArray[np.int32]:
        """Interval of each meter now [s]: declared, else learned, else ``unknown``
        (default 900 s, the basis of the per-interval physical limits)."""
        m = np.asarray(meter_idx)
        if len(m) and (int(m.min()) < 0 or int(m.max()) >= len(self._t())):
            raise ValidationError("meter_idx not in the registry")
        cur = self.intervals().current()[0]
        eff = np.where(cur > 0, cur, unknown).astype(np.int32)
        out: npt.NDArray[np.int32] = eff[m]
        return out

    def commodity(self, meter_idx: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
        """``codes.Commodity`` of each meter."""
        return self._take("commodity", meter_idx).to_numpy()  # type: ignore[no-any-return]

    def attribute(self, column: str, meter_idx: npt.NDArray[np.int32]) -> pa.Array:
        """Any registry column for each meter (e.g. ``feeder_id``)."""
        if column not in S.REGISTRY.names:
            raise ValidationError(f"no registry column {column!r}")
        return self._take(column, meter_idx)

    def feeder_of(self, meter_idx: npt.NDArray[np.int32]) -> pa.StringArray:
        return self._take("feeder_id", meter_idx)

    def transformer_of(self, meter_idx: npt.NDArray[np.int32]) -> pa.StringArray:
        return self._take("transformer_id", meter_idx)

    def substation_of(self, meter_idx: npt.NDArray[np.int32]) -> pa.StringArray:
        return self._take("substation_id", meter_idx)

    def collector_of(self, meter_idx: npt.NDArray[np.int32]) -> pa.StringArray:
        return self._take("collector_id", meter_idx)

    def meters_of(self, *, feeder: str | None = None, transformer: str | None = None,
                  substation: str | None = None, collector: str | None = None
                  ) -> npt.NDArray[np.int32]:
        """Indexes (ascending) of the meters matching every given topology id."""
        t = self._t()
        mask = np.ones(len(t), np.bool_)
        for col, val in (("feeder_id", feeder), ("transformer_id", transformer),
                         ("substation_id", substation), ("collector_id", collector)):
            if val is not None:
                eq = pc.fill_null(pc.equal(t.column(col), val), False)
                mask &= eq.to_numpy(zero_copy_only=False)
        return np.flatnonzero(mask).astype(np.int32)

    def feeder_range(self, feeder: str) -> tuple[int, int] | None:
        """``(lo, hi)`` (hi exclusive) if the feeder's meters are one contiguous range."""
        m = self.meters_of(feeder=feeder)
        if len(m) == 0 or int(m[-1]) - int(m[0]) + 1 != len(m):
            return None
        return int(m[0]), int(m[-1]) + 1

    # ------------------------------------------------------------------ updates

    def upsert(self, meters: pa.Table) -> npt.NDArray[np.int32]:
        """Add new meters and update known ones (durably); returns each row's meter_idx.

        Parameters
        ----------
        meters : pa.Table
            Columns ``meter_id, commodity, technology, two_way, collector_id,
            transformer_id, feeder_id, substation_id, interval_s`` (parsed), and
            optionally ``critical_care`` (bool; null or absent: a known meter keeps its
            flag, a new one gets false). When a meter id repeats, its last row wins.
            A meter's ``switch_state`` is kept (new meters: 0, unknown).
        """
        try:
            inp = meters.select([f.name for f in _INPUT]).cast(pa.schema(_INPUT))
            care_in = (meters.column("critical_care").cast(pa.bool_())
                       if "critical_care" in meters.schema.names
                       else pa.nulls(meters.num_rows, pa.bool_()))
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"meters table does not fit: {exc}") from exc
        inp = inp.append_column("critical_care", care_in)
        with _fs.locked(self.root / "locks" / "meters.lock", what="meter registry"):
            self._file.refresh(force=True)
            old = self._table
            n_old = len(old)
            ids = inp.column("meter_id").combine_chunks()
            if pc.count_distinct(ids).as_py() == len(ids):
                u = inp
            else:  # last row per meter id wins: keep the last occurrence of each id
                rev = pa.array(np.arange(len(inp))[::-1])
                _, first_rev = np.unique(
                    pc.index_in(ids.take(rev), value_set=pc.unique(ids)).to_numpy(),
                    return_index=True)
                u = inp.take(pa.array(np.sort(len(inp) - 1 - first_rev)))
            uidx = self.idx_for_id(u.column("meter_id"))
            new = np.flatnonzero(uidx < 0)
            if len(new):
                newt = u.take(pa.array(new))
                order = pc.sort_indices(newt, sort_keys=[(c, "ascending") for c in _TOPO]
                                        ).to_numpy()  # nulls sort last
                uidx[new[order]] = np.arange(n_old, n_old + len(new), dtype=np.int32)
            full_inp = pa.concat_tables([old.select([f.name for f in _INPUT]),
                                         u.select([f.name for f in _INPUT])])
            # row of full_inp that holds each meter's final attributes
            src = np.arange(n_old + len(new), dtype=np.int64)
            src[uidx] = n_old + np.arange(len(u))
            t = full_inp.take(pa.array(src))
            # a load without interval_minutes keeps an interval declared before
            ivl = t.column("interval_s").to_numpy().copy()
            before = np.zeros(len(t), np.int32)
            before[:n_old] = old.column("interval_s").to_numpy()
            kept = (ivl == 0) & (before > 0)
            if kept.any():
                ivl[kept] = before[kept]
                t = t.set_column(t.schema.get_field_index("interval_s"), "interval_s",
                                 pa.array(ivl, pa.int32()))
            # critical_care not given (null) keeps the flag before (false if new);
            # switch_state is never loaded, always kept
            care_all = pa.concat_arrays([old.column("critical_care").combine_chunks(),
                                         u.column("critical_care").combine_chunks()])
            care_t = care_all.take(pa.array(src))
            care = np.zeros(len(t), np.bool_)
            care[:n_old] = old.column("critical_care").to_numpy()
            given = care_t.is_valid().to_numpy(zero_copy_only=False)
            care[given] = care_t.filter(care_t.is_valid()).to_numpy(zero_copy_only=False)
            switch = np.zeros(len(t), np.uint8)
            switch[:n_old] = old.column("switch_state").to_numpy()
            ser = serial_of(t.column("meter_id").combine_chunks())
            cols = {f.name: t.column(f.name) for f in _INPUT}
            cols["meter_idx"] = pa.chunked_array(
                [pa.array(np.arange(len(t), dtype=np.int32))])
            cols["serial"] = pa.chunked_array([pa.array(ser, pa.uint64())])
            cols["critical_care"] = pa.chunked_array([pa.array(care)])
            cols["switch_state"] = pa.chunked_array([pa.array(switch)])
            out = pa.table([cols[f.name] for f in S.REGISTRY], schema=S.REGISTRY)
            self._file.save(out)
        # answer for every input row (repeated ids share their index)
        return self.idx_for_id(meters.column("meter_id"))


class CollectorKeys:
    """HMAC-SHA256 key of each collector (``<root>/collectors.parquet``).

    Usable as ``key_for`` of :func:`headend.wire.frame.decode_frame` (call or ``get``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._keys: dict[int, bytes] = {}
        self._file = _Watched(self.root / "collectors.parquet", COLLECTORS, self._load)

    def _load(self, t: pa.Table) -> None:
        self._keys = dict(zip(t.column("collector_id").to_pylist(),
                              t.column("hmac_key").to_pylist(), strict=True))

    def get(self, collector_id: int) -> bytes | None:
        """The collector's key, or None if unknown."""
        self._file.refresh()
        return self._keys.get(int(collector_id))

    __call__ = get

    def __len__(self) -> int:
        self._file.refresh()
        return len(self._keys)

    def table(self) -> pa.Table:
        self._file.refresh()
        ids = sorted(self._keys)
        return pa.table([pa.array(ids, pa.uint32()),
                         pa.array([self._keys[i] for i in ids], pa.binary())], schema=COLLECTORS)

    def upsert(self, collectors: pa.Table) -> None:
        """Add or replace keys (columns ``collector_id`` uint32, ``hmac_key`` binary)."""
        try:
            t = collectors.select(COLLECTORS.names).cast(COLLECTORS)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"collectors table does not fit: {exc}") from exc
        with _fs.locked(self.root / "locks" / "collectors.lock", what="collector keys"):
            self._file.refresh(force=True)
            keys = dict(self._keys)
            keys.update(zip(t.column("collector_id").to_pylist(),
                            t.column("hmac_key").to_pylist(), strict=True))
            ids = sorted(keys)
            self._file.save(pa.table([pa.array(ids, pa.uint32()),
                                      pa.array([keys[i] for i in ids], pa.binary())],
                                     schema=COLLECTORS))
