"""In-memory command store: the reference adapter of :class:`~headend.commands.base.
CommandStore`, for tests and examples (nothing survives the object)."""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Mapping, Sequence

from headend.commands.base import UnknownCommand
from headend.commands.lifecycle import (
    TAKING_READS,
    Command,
    HistoryEntry,
    ReadsBrought,
    advance,
    check_reason,
    history_entry,
)
from headend.errors import StorageError

__all__ = ["MemoryCommandStore"]


class MemoryCommandStore:
    """Commands in dicts, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: dict[str, Command] = {}  # insertion order = creation order
        self._history: dict[str, list[HistoryEntry]] = {}
        self._closed = False
        self._open_reads: dict[str, tuple[str, ...]] | None = None  # cache, None: stale

    def _check(self) -> None:
        if self._closed:
            raise StorageError("command store is closed")

    def put(self, commands: Sequence[Command]) -> list[Command]:
        for cmd in commands:
            check_reason(cmd.state, cmd.reason)
        out = []
        with self._lock:
            self._check()
            for cmd in commands:
                have = self._commands.get(cmd.command_id)
                if have is None:
                    self._commands[cmd.command_id] = have = cmd
                    self._open_reads = None
                    self._history[cmd.command_id] = [history_entry(cmd, 0, cmd.actor, cmd.detail)]
                out.append(have)
        return out

    def get(self, command_id: str) -> Command | None:
        with self._lock:
            self._check()
            return self._commands.get(command_id)

    def transition(self, command_id: str, to_state: str, *, actor: str, at_ms: int,
                   reason: str | None = None, detail: str | None = None) -> Command:
        with self._lock:
            self._check()
            cmd = self._commands.get(command_id)
            if cmd is None:
                raise UnknownCommand(command_id)
            new = advance(cmd, to_state, at_ms=at_ms, reason=reason, detail=detail)
            hist = self._history[command_id]
            hist.append(history_entry(new, len(hist), actor, detail))
            self._commands[command_id] = new
            self._open_reads = None
            return new

    def transition_many(self, moves: Sequence[tuple[str, str, str, int, str | None,
                                                    str | None]]) -> builtins.list[Command]:
        with self._lock:
            self._check()
            now = dict(self._commands)  # all or nothing: apply once every move passed
            added: dict[str, list[HistoryEntry]] = {}
            out = []
            for command_id, to_state, actor, at_ms, reason, detail in moves:
                cmd = now.get(command_id)
                if cmd is None:
                    raise UnknownCommand(command_id)
                new = advance(cmd, to_state, at_ms=at_ms, reason=reason, detail=detail)
                seq = len(self._history[command_id]) + len(added.get(command_id, ()))
                added.setdefault(command_id, []).append(history_entry(new, seq, actor, detail))
                now[command_id] = new
                out.append(new)
            self._commands = now
            self._open_reads = None
            for command_id, entries in added.items():
                self._history[command_id].extend(entries)
            return out

    def list(self, *, state: str | None = None, meter_id: str | None = None,
             since_ms: int | None = None, limit: int | None = None) -> list[Command]:
        with self._lock:
            self._check()
            out = [c for c in self._commands.values()
                   if (state is None or c.state == state)
                   and (meter_id is None or c.meter_id == meter_id)
                   and (since_ms is None or c.updated_ms >= since_ms)]
        return out if limit is None else out[:limit]

    def history(self, command_id: str | None = None) -> builtins.list[HistoryEntry]:
        with self._lock:
            self._check()
            if command_id is not None:
                return list(self._history.get(command_id, ()))
            return [h for hs in self._history.values() for h in hs]

    def open_reads(self) -> Mapping[str, tuple[str, ...]]:
        with self._lock:
            self._check()
            if self._open_reads is None:
                by_meter: dict[str, tuple[str, ...]] = {}
                for c in self._commands.values():
                    if c.kind == "read" and c.state in TAKING_READS:
                        by_meter[c.meter_id] = (*by_meter.get(c.meter_id, ()), c.command_id)
                self._open_reads = by_meter
            return self._open_reads

    def record_reads(self, brought: Sequence[tuple[str, ReadsBrought]]) -> builtins.list[str]:
        out = []
        with self._lock:
            self._check()
            for command_id, reads in brought:
                cmd = self._commands.get(command_id)
                if cmd is None or cmd.kind != "read" or cmd.state not in TAKING_READS:
                    continue
                self._commands[command_id] = dataclasses.replace(
                    cmd, reads=(cmd.reads or ReadsBrought()) + reads)
                out.append(command_id)
        return out

    def close(self) -> None:
        self._closed = True
