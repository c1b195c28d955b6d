"""Durable command store in ``<data>/commands/commands.sqlite`` (stdlib ``sqlite3``).

WAL journal with ``synchronous=FULL``: a call that returned is on disk, and a restart
(or ``kill -9``) loses nothing it returned. Each write is one transaction (``BEGIN
IMMEDIATE``), so the command and its audit record change together, and several processes
may share the file.

Layout (compact, so that 1M commands fit in well under 200 MB, bench/bench_commands.py):

* ``commands``: one row per command, keyed by an integer ``n`` (creation order); kind
  and state as their small codes, times in ms; a unique index on ``command_id`` (the
  idempotency key), and indexes on ``meter_id`` and ``state``.
* ``history``: one row per state change, ``(n, seq)`` as its clustered key
  (``WITHOUT ROWID``): no second index, and a command's records are contiguous.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from headend.commands.base import UnknownCommand
from headend.commands.lifecycle import (
    Command,
    HistoryEntry,
    advance,
    check_reason,
    history_entry,
)
from headend.errors import StorageError
from headend.model import commands as C

__all__ = ["SCHEMA_VERSION", "SqliteCommandStore", "command_store_path"]

SCHEMA_VERSION: Final = 1
_STATES: Final = tuple(C.COMMAND_STATES)
_STATE_CODE: Final = {s: i for i, s in enumerate(_STATES)}
_KINDS: Final = {k.code: k.name for k in C.COMMAND_KINDS}
_KIND_CODE: Final = {k.name: k.code for k in C.COMMAND_KINDS}
#: how long a writer waits for another process's transaction [s]
BUSY_TIMEOUT_S: Final = 30.0

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS commands (
        n INTEGER PRIMARY KEY,
        command_id TEXT NOT NULL,
        kind INTEGER NOT NULL,
        meter_id TEXT NOT NULL,
        state INTEGER NOT NULL,
        reason TEXT,
        detail TEXT,
        actor TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        collector_id TEXT,
        control_code TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS commands_id ON commands (command_id)",
    "CREATE INDEX IF NOT EXISTS commands_meter ON commands (meter_id)",
    "CREATE INDEX IF NOT EXISTS commands_state ON commands (state)",
    """CREATE TABLE IF NOT EXISTS history (
        n INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        state INTEGER NOT NULL,
        reason TEXT,
        actor TEXT NOT NULL,
        detail TEXT,
        PRIMARY KEY (n, seq)) WITHOUT ROWID""",
)
_COLS: Final = ("command_id, kind, meter_id, state, reason, detail, actor, created_ms, "
                "updated_ms, expires_ms, collector_id, control_code")


def command_store_path(root: Path | str) -> Path:
    """The command store file of the data directory ``root``."""
    return Path(root) / "commands" / "commands.sqlite"


def _command(row: Sequence[Any]) -> Command:
    return Command(row[0], _KINDS[row[1]], row[2], _STATES[row[3]], row[4], row[5], row[6],
                   row[7], row[8], row[9], row[10], row[11])


def _row(c: Command) -> tuple[Any, ...]:
    return (c.command_id, _KIND_CODE[c.kind], c.meter_id, _STATE_CODE[c.state], c.reason,
            c.detail, c.actor, c.created_ms, c.updated_ms, c.expires_ms, c.collector_id,
            c.control_code)


class SqliteCommandStore:
    """The :class:`~headend.commands.base.CommandStore` of a data directory.

    Parameters
    ----------
    path : Path
        The SQLite file (:func:`command_store_path`); its folder is created.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._tx() as db:
                for ddl in _DDL:
                    db.execute(ddl)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the command store {self.path}: {exc}") from exc
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def put(self, commands: Sequence[Command]) -> list[Command]:
        for cmd in commands:
            check_reason(cmd.state, cmd.reason)
        if not commands:
            return []
        try:
            with self._lock, self._tx() as db:
                ids = list(dict.fromkeys(c.command_id for c in commands))
                have = self._by_ids(db, ids)
                new = {}
                for c in commands:
                    if c.command_id not in have and c.command_id not in new:
                        new[c.command_id] = c
                if new:
                    db.executemany(f"INSERT INTO commands ({_COLS}) VALUES "
                                   "(?,?,?,?,?,?,?,?,?,?,?,?)", map(_row, new.values()))
                    n_of = self._n_of(db, list(new))
                    db.executemany(
                        "INSERT INTO history (n, seq, at_ms, state, reason, actor, detail) "
                        "VALUES (?,0,?,?,?,?,?)",
                        ((n_of[c.command_id], c.created_ms, _STATE_CODE[c.state], c.reason,
                          c.actor, c.detail) for c in new.values()))
                    have.update(new)
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc
        return [have[c.command_id] for c in commands]

    @staticmethod
    def _by_ids(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Command]:
        out: dict[str, Command] = {}
        for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[i:i + 500]
            q = (f"SELECT {_COLS} FROM commands WHERE command_id IN "
                 f"({','.join('?' * len(chunk))})")
            out.update((r[0], _command(r)) for r in db.execute(q, chunk))
        return out

    @staticmethod
    def _n_of(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = f"SELECT command_id, n FROM commands WHERE command_id IN ({','.join('?' * len(chunk))})"
            out.update(db.execute(q, chunk))
        return out

    def get(self, command_id: str) -> Command | None:
        try:
            with self._lock:
                row = self._db.execute(f"SELECT {_COLS} FROM commands WHERE command_id = ?",
                                       (command_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc
        return None if row is None else _command(row)

    def transition(self, command_id: str, to_state: str, *, actor: str, at_ms: int,
                   reason: str | None = None, detail: str | None = None) -> Command:
        try:
            with self._lock, self._tx() as db:
                row = db.execute(f"SELECT n, {_COLS} FROM commands WHERE command_id = ?",
                                 (command_id,)).fetchone()
                if row is None:
                    raise UnknownCommand(command_id)
                n, cmd = row[0], _command(row[1:])
                new = advance(cmd, to_state, at_ms=at_ms, reason=reason, detail=detail)
                db.execute("UPDATE commands SET state = ?, reason = ?, detail = ?, "
                           "updated_ms = ? WHERE n = ?",
                           (_STATE_CODE[new.state], new.reason, new.detail, new.updated_ms, n))
                seq = db.execute("SELECT MAX(seq) FROM history WHERE n = ?", (n,)).fetchone()[0]
                h = history_entry(new, seq + 1, actor, detail)
                db.execute("INSERT INTO history (n, seq, at_ms, state, reason, actor, detail) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (n, h.seq, h.at_ms, _STATE_CODE[h.state], h.reason, h.actor,
                            h.detail))
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc
        return new

    def list(self, *, state: str | None = None, meter_id: str | None = None,
             since_ms: int | None = None, limit: int | None = None) -> list[Command]:
        where: builtins.list[str] = []
        args: builtins.list[int | str] = []
        if state is not None:
            if state not in _STATE_CODE:
                return []
            where.append("state = ?")
            args.append(_STATE_CODE[state])
        if meter_id is not None:
            where.append("meter_id = ?")
            args.append(meter_id)
        if since_ms is not None:
            where.append("updated_ms >= ?")
            args.append(since_ms)
        q = f"SELECT {_COLS} FROM commands"
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY n"
        if limit is not None:
            q += " LIMIT ?"
            args.append(limit)
        try:
            with self._lock:
                return [_command(r) for r in self._db.execute(q, args)]
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc

    def history(self, command_id: str | None = None) -> builtins.list[HistoryEntry]:
        q = ("SELECT c.command_id, h.seq, h.at_ms, h.state, h.reason, h.actor, h.detail "
             "FROM history h JOIN commands c ON c.n = h.n")
        args: builtins.list[str] = []
        if command_id is not None:
            q += " WHERE c.command_id = ?"
            args.append(command_id)
        q += " ORDER BY h.n, h.seq"
        try:
            with self._lock:
                return [HistoryEntry(r[0], r[1], r[2], _STATES[r[3]], r[4], r[5], r[6])
                        for r in self._db.execute(q, args)]
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
