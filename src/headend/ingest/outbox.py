"""The outbox: stored batches a listener could not take, kept until it can.

The store makes a batch durable before any listener sees it. If a listener then fails
(the bus is down, a broker refuses), the data must not reach the store and be lost to
the listener: the ingest is acknowledged (the data *is* durable), and the batch goes to
``<data>/outbox/<listener>/<seq>/`` (one Arrow IPC file per table, published atomically),
to be handed to the listener again, in order, before its next batch. Delivery to
listeners is therefore at least once across listener failures; a crash between the
durable append and the listener call is covered on the bus by the redelivery of the
unacknowledged upload (``Ingestor.ingest_bytes(redelivery=True)``), not in the
embedded default (see ``docs/ingest.md``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyarrow import ipc

from headend.model import schema
from headend.store.fs import fsync_dir

_TABLES = (("reads", schema.READS), ("registers", schema.REGISTERS), ("events", schema.EVENTS))


class Outbox:
    """Per-listener queues of undelivered batches under ``<root>/outbox``."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "outbox"
        self._known_empty: set[str] = set()

    def put(self, listener: str, source: str, tables: dict[str, pa.Table]) -> Path:
        """Keep one batch for ``listener``, durably; returns its folder."""
        qdir = self.dir / listener
        qdir.mkdir(parents=True, exist_ok=True)
        seq = 1 + max((int(p.name) for p in qdir.iterdir() if p.name.isdigit()), default=0)
        tmp = qdir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for name, sch in _TABLES:
            with pa.OSFile(str(tmp / f"{name}.arrow"), "wb") as f, \
                    ipc.new_file(f, sch) as w:
                w.write_table(tables.get(name, sch.empty_table()))
            fd = os.open(tmp / f"{name}.arrow", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        (tmp / "source").write_text(source)
        fsync_dir(tmp)
        final = qdir / f"{seq:012d}"
        os.replace(tmp, final)
        fsync_dir(qdir)
        self._known_empty.discard(listener)
        return final

    def pending(self, listener: str) -> Iterator[tuple[Path, str, dict[str, pa.Table]]]:
        """The kept batches of ``listener``, oldest first."""
        if listener in self._known_empty:
            return
        qdir = self.dir / listener
        entries = sorted(p for p in qdir.iterdir() if p.name.isdigit()) if qdir.exists() else []
        if not entries:
            self._known_empty.add(listener)
            return
        for p in entries:
            tables = {name: ipc.open_file(pa.memory_map(str(p / f"{name}.arrow"))).read_all()
                      for name, _ in _TABLES}
            yield p, (p / "source").read_text(), tables

    def done(self, path: Path) -> None:
        """The listener took the batch at ``path``: forget it."""
        shutil.rmtree(path)
        fsync_dir(path.parent)

    def count(self, listener: str) -> int:
        qdir = self.dir / listener
        return sum(1 for p in qdir.iterdir() if p.name.isdigit()) if qdir.exists() else 0
