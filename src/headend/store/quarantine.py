"""The quarantine: rejected rows and frames, kept durably until released or removed.

Layout under ``<root>/quarantine/``::

    q-<time_ns>-<pid>-<uuid>.parquet     appended rows (model.schema.QUARANTINE)
    rm-<time_ns>-<pid>-<uuid>.parquet    tombstones: quarantine_id removed

Names are unique per process, so several processes may append at once without a
lock. Every file is published like the store's (temp, fsync, rename, fsync dir).
:meth:`QuarantineStore.compact` (under a short ``flock``) rewrites everything into one
file, deleting the old row files before the tombstones, so a crash at any point never
resurrects a removed row; a row present twice after a crash is listed once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from headend.errors import StorageError, ValidationError
from headend.model import schema as S
from headend.store import _fs

__all__ = ["QuarantineStore"]

_RM = pa.schema([pa.field("quarantine_id", pa.string(), nullable=False)])


class QuarantineStore:
    """Durable quarantine under ``<root>/quarantine``.

    Parameters
    ----------
    root : Path
        Data directory.
    compact_files : int
        :meth:`append` compacts once this many files accumulate (0: never).
    """

    def __init__(self, root: Path, *, compact_files: int = 256) -> None:
        self.dir = Path(root) / "quarantine"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = Path(root) / "locks" / "quarantine.lock"
        self.compact_files = compact_files
        _fs.remove_temp_files(self.dir, only_dead=True)

    def _name(self, prefix: str) -> Path:
        return self.dir / f"{prefix}-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"

    def _files(self, prefix: str) -> list[Path]:
        return sorted(p for p in self.dir.iterdir()
                      if p.name.startswith(prefix + "-") and p.suffix == ".parquet")

    def _write(self, path: Path, table: pa.Table) -> None:
        _fs.publish_path(path, lambda tmp: pq.write_table(table, str(tmp), compression="zstd"))

    def append(self, rows: pa.Table) -> int:
        """Durably add rows (``model.schema.QUARANTINE``); returns how many."""
        if len(rows) == 0:
            return 0
        try:
            t = rows.select(S.QUARANTINE.names).cast(S.QUARANTINE)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValidationError(f"quarantine rows do not fit the schema: {exc}") from exc
        self._write(self._name("q"), t)
        if self.compact_files and len(os.listdir(self.dir)) >= self.compact_files:
            self.compact()
        return len(t)

    def _read(self, files: list[Path], schema: pa.Schema) -> pa.Table:
        parts = []
        for p in files:
            try:
                parts.append(pq.read_table(p).cast(schema))
            except FileNotFoundError:  # compacted away meanwhile; its rows moved on
                continue
            except (OSError, pa.ArrowInvalid) as exc:
                raise StorageError(f"cannot read {p}: {exc}") from exc
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def _all(self) -> pa.Table:
        for _ in range(3):
            rm = self._read(self._files("rm"), _RM)
            qs = self._files("q")
            rows = self._read(qs, S.QUARANTINE)
            if all(p.exists() for p in qs):
                break
        ids = rows.column("quarantine_id")
        keep = pc.invert(pc.is_in(ids, value_set=rm.column("quarantine_id")))
        rows = rows.filter(keep)
        ids = rows.column("quarantine_id").combine_chunks()
        codes = pc.index_in(ids, value_set=pc.unique(ids)).to_numpy()
        _, first = np.unique(codes, return_index=True)
        return rows.take(pa.array(np.sort(first)))

    def list(self, reason: str | None = None, limit: int | None = None) -> pa.Table:
        """Quarantined rows, oldest first, optionally of one reason, at most ``limit``."""
        t = self._all()
        t = t.take(pc.sort_indices(t, sort_keys=[("received_at", "ascending")]))
        if reason is not None:
            t = t.filter(pc.equal(t.column("reason"), reason))
        return t if limit is None else t.slice(0, limit)

    def counts(self) -> dict[str, int]:
        """Rows per reason."""
        vc = pc.value_counts(self._all().column("reason"))
        return {str(r["values"]): int(r["counts"]) for r in vc.to_pylist()}

    def remove(self, ids: pa.Array | Sequence[str]) -> None:
        """Durably remove rows by ``quarantine_id`` (unknown ids are ignored)."""
        arr = ids.cast(pa.string()) if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
        if len(arr):
            self._write(self._name("rm"), pa.table([arr], schema=_RM))

    def compact(self) -> None:
        """Rewrite all rows (minus removed ones) into one file."""
        with _fs.locked(self._lock_path, what="quarantine"):
            qs, rms = self._files("q"), self._files("rm")
            if len(qs) + len(rms) <= 1:
                return
            t = self._all()
            self._write(self._name("q"), t)
            for p in qs:
                p.unlink(missing_ok=True)
            _fs.fsync_dir(self.dir)
            for p in rms:
                p.unlink(missing_ok=True)
            _fs.fsync_dir(self.dir)
