"""The command store port: where commands and their audit records live.

Contract of every adapter (:class:`~headend.commands.memory.MemoryCommandStore`,
:class:`~headend.commands.sqlite.SqliteCommandStore`; one conformance suite,
tests/commands/test_conformance.py, runs over both):

* **Idempotent on the command id.** :meth:`CommandStore.put` of a command whose id is
  stored already changes nothing and answers the stored command in its place.
* **Every state change is audited.** The creation and each :meth:`transition` append a
  :class:`~headend.commands.lifecycle.HistoryEntry` (who, when, state, reason, detail),
  in the same transaction as the change itself.
* **The lifecycle decides.** :meth:`transition` applies
  :func:`~headend.commands.lifecycle.advance` to the stored command and persists what it
  returns; what it refuses raises its :class:`~headend.commands.lifecycle.TransitionError`
  and changes nothing.
* **Durable on return** (the SQLite adapter: WAL, ``synchronous=FULL``): a restart loses
  no command and no audit record that a call returned. The memory adapter keeps them
  for the life of the object.
* **Order.** :meth:`list` and :meth:`history` answer in creation order (then ``seq``).
* **Reads of on-demand reads.** :meth:`open_reads` names the read commands that may
  take reads now (``sent`` or ``delivered``), cheaply enough to be asked at every
  stored batch (the SQLite adapter answers from memory until the file changed);
  :meth:`record_reads` adds to what such a command brought (:class:`~headend.commands.
  lifecycle.ReadsBrought`), and skips a command no longer sent or delivered. Recording
  reads is no state change: no audit record.
* Blocking calls, safe from several threads; the SQLite adapter also from several
  processes (SQLite's own locking).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Protocol

from headend.commands.lifecycle import Command, HistoryEntry, ReadsBrought
from headend.errors import HeadendError

__all__ = ["CommandStore", "UnknownCommand"]


class UnknownCommand(HeadendError, KeyError):
    """No command has this id."""

    def __init__(self, command_id: str) -> None:
        super().__init__(command_id)
        self.command_id = command_id

    def __str__(self) -> str:
        return f"unknown command {self.command_id!r}"


class CommandStore(Protocol):
    """Commands and their state changes (see the module docstring for the contract)."""

    def put(self, commands: Sequence[Command]) -> list[Command]:
        """Store new commands, each with its creation record (``seq`` 0, by its actor);
        answer the stored command for each, in order (the one stored before for an id
        seen already, including a repeat within ``commands``)."""
        ...

    def get(self, command_id: str) -> Command | None:
        """The command, or None."""
        ...

    def transition(self, command_id: str, to_state: str, *, actor: str, at_ms: int,
                   reason: str | None = None, detail: str | None = None) -> Command:
        """Move the command to ``to_state`` (:func:`~headend.commands.lifecycle.advance`)
        and record it; answer the command after the change. Raises
        :class:`UnknownCommand` or :class:`~headend.commands.lifecycle.TransitionError`
        (:class:`~headend.commands.lifecycle.RepeatedTransition` for a repeat)."""
        ...

    def transition_many(self, moves: Sequence[tuple[str, str, str, int, str | None,
                                                    str | None]]) -> builtins.list[Command]:
        """Several :meth:`transition` calls, ``(command_id, to_state, actor, at_ms,
        reason, detail)`` each, at once (the SQLite adapter: one transaction, one
        fsync): all are made, or none if one raises; answers the commands after their
        change, in order."""
        ...

    def list(self, *, state: str | None = None, meter_id: str | None = None,
             since_ms: int | None = None, limit: int | None = None) -> list[Command]:
        """Commands in creation order, filtered: in ``state``, of ``meter_id``, changed
        at or after ``since_ms`` [ms]; at most ``limit``."""
        ...

    def history(self, command_id: str | None = None) -> builtins.list[HistoryEntry]:
        """The audit records of one command, or of all, in creation order then ``seq``."""
        ...

    def open_reads(self) -> Mapping[str, tuple[str, ...]]:
        """The read commands ``sent`` or ``delivered`` now: meter id -> their command
        ids in creation order (empty when there are none). Treat it as read-only: an
        adapter may answer the same object again while nothing changed."""
        ...

    def record_reads(self, brought: Sequence[tuple[str, ReadsBrought]]) -> builtins.list[str]:
        """Add ``(command_id, reads)`` to what each read command brought, all in one
        write; commands no longer ``sent`` or ``delivered`` (or unknown, or of another
        kind) are skipped. Answers the ids it recorded for, in order."""
        ...

    def close(self) -> None:
        """Release the store; later calls are errors."""
        ...
