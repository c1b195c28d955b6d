"""The one registry of ingest listeners: what reacts to newly stored data.

A listener factory takes the opened :class:`~headend.store.DataDir` and returns a
:class:`~headend.ingest.pipeline.Listener`. Verbs and services choose listeners by
name from :data:`LISTENERS` instead of wiring them by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headend.ingest.pipeline import IngestConfig, Ingestor, Listener, SideCsv
from headend.ingest.result import BaseListener, StoredBatch
from headend.store import DataDir

if TYPE_CHECKING:
    from headend.commands import CommandStore
    from headend.commands.reads import OpenReads


def _rules(data: DataDir) -> Listener:
    from headend.rules import RuleEngine

    return RuleEngine.open(data.root, data.registry)


def _intervals(data: DataDir) -> Listener:
    from headend.vee.intervals import IntervalLearner

    return IntervalLearner(data.registry, data.root)


def _vee(data: DataDir) -> Listener:
    from headend.vee import VeeListener

    # the ingestor's registry (its intervals), a store of the run's own
    return VeeListener(data.root, registry=data.registry)


class CommandReads(BaseListener):
    """Records on each open on-demand ``read`` command the new reads of its meter
    (:mod:`headend.commands.reads`).

    Parameters
    ----------
    open_store : callable
        Answers the command store, or None while there is none (called at each batch
        until it answers one: ``headend ingest`` opens ``<data>/commands/`` only once it
        exists).
    registry : callable
        The meter registry now (``idx_for_id``).
    owned : bool
        Whether :meth:`close` closes the store (it opened it).

    At every stored batch it asks :meth:`~headend.commands.base.CommandStore.open_reads`
    (from memory while the store did not change) and returns at once when no read
    command is open; else one ``isin`` over the batch's meter column.
    """

    name = "command_reads"

    def __init__(self, open_store: Callable[[], CommandStore | None],
                 registry: Callable[[], Any], *, owned: bool) -> None:
        self._store: CommandStore | None = None
        self._open_store = open_store
        self._registry = registry
        self._open: OpenReads | None = None
        self._owned = owned

    def _command_store(self) -> CommandStore | None:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_reads(self, by_meter: Mapping[str, tuple[str, ...]]) -> OpenReads:
        from headend.commands.reads import OpenReads

        if self._open is None or self._open.by_meter is not by_meter:
            idx = self._registry().idx_for_id(pa.array(list(by_meter), pa.string()))
            self._open = OpenReads(by_meter, idx)
        return self._open

    def on_stored(self, batch: StoredBatch) -> None:
        store = self._command_store()
        if store is None or (batch.reads.num_rows == 0 and batch.registers.num_rows == 0):
            return
        by_meter = store.open_reads()
        if not by_meter:
            return
        from headend.commands.reads import reads_brought

        brought = reads_brought(self._open_reads(by_meter), batch.reads, batch.registers,
                                source=batch.source)
        if brought:
            store.record_reads(brought)

    def close(self) -> None:
        if self._owned and self._store is not None:
            self._store.close()
            self._store = None


def _command_reads(data: DataDir) -> Listener:
    from headend.commands.sqlite import SqliteCommandStore, command_store_path

    path = command_store_path(data.root)

    def open_store() -> CommandStore | None:
        return SqliteCommandStore(path) if path.exists() else None

    return CommandReads(open_store, lambda: data.registry, owned=True)


#: name -> factory. ``intervals`` learns undeclared meter intervals from every batch
#: (always on, first, so that VEE sees them); ``command_reads`` records the reads of
#: on-demand read commands (always on); ``rules`` runs the real-time rule engine in
#: event time; ``vee`` validates and estimates what an ingest call stored.
LISTENERS: dict[str, Callable[[DataDir], Listener]] = {
    "intervals": _intervals,
    "command_reads": _command_reads,
    "rules": _rules,
    "vee": _vee,
}


def open_ingestor(
    root: Path | str,
    *,
    rules: bool = True,
    vee: bool = True,
    extra: Sequence[Listener] = (),
    store_config: Any = None,
    config: IngestConfig | None = None,
) -> Ingestor:
    """Open an :class:`Ingestor` on ``root`` with the standard listeners."""
    data = DataDir.open(Path(root), config=store_config)
    listeners: list[Listener] = []
    names = [n for n, on in (("intervals", True), ("command_reads", True), ("rules", rules),
                             ("vee", vee)) if on]
    for name in names:
        listeners.append(LISTENERS[name](data))
    listeners.extend(extra)
    # stage names in seconds_by_stage; the extras are named by their outbox name
    return Ingestor(data, listeners=listeners, config=config, stages=names,
                    side_csv=side_csv(root))


def side_csv(root: Path | str) -> dict[tuple[str, ...], SideCsv]:
    """The CSV kinds an ingestor hands to a handler instead of the store: the
    commands' ``command_responses`` (applied to ``<root>/commands/``)."""
    from headend.commands.apply import responses_handler
    from headend.model.commands import COMMAND_RESPONSE_HEADER

    return {COMMAND_RESPONSE_HEADER: responses_handler(root)}
