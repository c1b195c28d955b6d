"""Durable command store in ``<data>/commands/commands.sqlite`` (stdlib ``sqlite3``).

WAL journal with ``synchronous=FULL``: a call that returned is on disk, and a restart
(or ``kill -9``) loses nothing it returned. Each write is one transaction (``BEGIN
IMMEDIATE``), so the command and its audit record change together, and several processes
may share the file.

Layout, compact so that 1M commands with their whole audit log fit in well under 200 MB
(bench/bench_commands.py, docs/benchmarks.md):

* ``commands``: one row per command, keyed by an integer ``n`` (creation order); kind
  and state as their small codes, times as the creation time [ms] and offsets from it;
  the control code as its end-device type when it is the kind's standard code; a unique
  index on ``command_id`` (the idempotency key), an index on ``meter_id``, and a partial
  index on ``state`` over the commands not yet final (the ones a sender looks for).
* The audit log of a command is kept in its own row (``log``), one packed entry per
  state change, appended in the transaction of the change: offset from the creation
  [ms] (varint), state, reason (codes), actor (an id in the small ``actors`` table,
  varint) and detail (varint length + UTF-8). No second table, no second key per change.
* ``reads`` (schema version 2; added to a version 1 file when it is opened): what a
  read command brought, a JSON array ``[interval_reads, register_reads,
  first_interval_end, last_interval_end, first_read_time, last_read_time, uploads,
  [sources]]`` (times [s]), NULL while it brought nothing and for the other kinds. A
  partial index over the read commands sent or delivered answers :meth:`open_reads`,
  which is kept in memory until the file changes (``PRAGMA data_version``, and this
  connection's own writes but its :meth:`record_reads`).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from headend.commands.base import UnknownCommand
from headend.commands.lifecycle import (
    NO_READS,
    Command,
    HistoryEntry,
    ReadsBrought,
    advance,
    check_reason,
    history_entry,
)
from headend.errors import StorageError
from headend.model import commands as C

__all__ = ["SCHEMA_VERSION", "SqliteCommandStore", "command_store_path"]

SCHEMA_VERSION: Final = 2
_STATES: Final = tuple(C.COMMAND_STATES)
_STATE_CODE: Final = {s: i for i, s in enumerate(_STATES)}
#: the states not yet final are the first three codes; the partial index's condition,
#: repeated word for word in a query so that SQLite may use the index
_OPEN_SQL: Final = "state < 3"
assert {s for s, i in _STATE_CODE.items() if i < 3} == {"queued", "sent", "delivered"}
_KINDS: Final = {k.code: k for k in C.COMMAND_KINDS}
_KIND_CODE: Final = {k.name: k.code for k in C.COMMAND_KINDS}
_REASONS: Final = (None, *C.REASON_CODES)
_REASON_CODE: Final = {r: i for i, r in enumerate(_REASONS)}
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
        updated_d INTEGER NOT NULL,
        expires_d INTEGER NOT NULL,
        collector_id TEXT,
        ctl,
        log BLOB NOT NULL,
        reads TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS commands_id ON commands (command_id)",
    "CREATE INDEX IF NOT EXISTS commands_meter ON commands (meter_id)",
    f"CREATE INDEX IF NOT EXISTS commands_open ON commands (state) WHERE {_OPEN_SQL}",
    "CREATE TABLE IF NOT EXISTS actors (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
)
#: the read commands that take reads (kind read, state sent or delivered): this
#: condition word for word in the index and in its queries
_TAKING_SQL: Final = "kind = 0 AND state IN (1, 2)"
assert _KIND_CODE["read"] == 0 and (_STATE_CODE["sent"], _STATE_CODE["delivered"]) == (1, 2)
_DDL_V2: Final = (
    f"CREATE INDEX IF NOT EXISTS commands_taking_reads ON commands (n) WHERE {_TAKING_SQL}",
)
_COLS: Final = ("command_id, kind, meter_id, state, reason, detail, actor, created_ms, "
                "updated_d, expires_d, collector_id, ctl, reads")


def command_store_path(root: Path | str) -> Path:
    """The command store file of the data directory ``root``."""
    return Path(root) / "commands" / "commands.sqlite"


def _ctl(kind: str, code: str | None) -> int | str | None:
    """A control code as stored: its end-device type when it is the kind's standard
    code with that type, else the text."""
    if code is None:
        return None
    t, _, rest = code.partition(".")
    if t.isdigit() and rest == C.KIND_BY_NAME[kind].control:
        return int(t)
    return code


def _command(row: Sequence[Any]) -> Command:
    kind = _KINDS[row[1]]
    ctl = row[11]
    code = f"{ctl}.{kind.control}" if isinstance(ctl, int) else ctl
    return Command(row[0], kind.name, row[2], _STATES[row[3]], row[4], row[5], row[6],
                   row[7], row[7] + row[8], row[7] + row[9], row[10], code,
                   _reads(row[12]))


def _row(c: Command) -> tuple[Any, ...]:
    return (c.command_id, _KIND_CODE[c.kind], c.meter_id, _STATE_CODE[c.state], c.reason,
            c.detail, c.actor, c.created_ms, c.updated_ms - c.created_ms,
            c.expires_ms - c.created_ms, c.collector_id, _ctl(c.kind, c.control_code),
            _reads_text(c.reads))


def _reads(text: str | None) -> ReadsBrought | None:
    """A stored ``reads`` value (see the module docstring); None for NULL."""
    if text is None:
        return None
    v = json.loads(text)
    return ReadsBrought(v[0], v[1], v[2], v[3], v[4], v[5], v[6], tuple(v[7]))


def _reads_text(r: ReadsBrought | None) -> str | None:
    if r is None or r == NO_READS:
        return None
    nums = ",".join("null" if v is None else str(v) for v in (
        r.interval_reads, r.register_reads, r.first_interval_end, r.last_interval_end,
        r.first_read_time, r.last_read_time, r.uploads))
    return f"[{nums},{json.dumps(list(r.sources), separators=(',', ':'))}]"


def _varint(v: int, out: bytearray) -> None:
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _entry(h: HistoryEntry, created_ms: int, actor_id: int) -> bytes:
    """One packed audit entry (see the module docstring)."""
    out = bytearray()
    _varint(h.at_ms - created_ms, out)
    out.append(_STATE_CODE[h.state])
    out.append(_REASON_CODE[h.reason])
    _varint(actor_id, out)
    if h.detail is None:
        out.append(0)
    else:
        text = h.detail.encode()
        _varint(len(text) + 1, out)
        out += text
    return bytes(out)


def _entries(command_id: str, created_ms: int, log: bytes, actors: dict[int, str]
             ) -> Iterator[HistoryEntry]:
    i = seq = 0
    while i < len(log):
        d, i = _read_varint(log, i)
        state, reason = log[i], log[i + 1]
        actor, i = _read_varint(log, i + 2)
        n, i = _read_varint(log, i)
        detail = None
        if n:
            detail, i = log[i:i + n - 1].decode(), i + n - 1
        yield HistoryEntry(command_id, seq, created_ms + d, _STATES[state], _REASONS[reason],
                           actors[actor], detail)
        seq += 1


class SqliteCommandStore:
    """The :class:`~headend.commands.base.CommandStore` of a data directory.

    Parameters
    ----------
    path : Path
        The SQLite file (:func:`command_store_path`); its folder is created.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writes = 0  # this connection's committed writes (see open_reads)
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
                have = {r[1] for r in db.execute("PRAGMA table_info(commands)")}
                if "reads" not in have:  # a version 1 file
                    db.execute("ALTER TABLE commands ADD COLUMN reads TEXT")
                for ddl in _DDL_V2:
                    db.execute(ddl)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the command store {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._actors: dict[str, int] = {}
        self._open_reads: tuple[tuple[int, int], dict[str, tuple[str, ...]]] | None = None

    @contextmanager
    def _tx(self, *, states: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error. ``states``: it may change
        commands' states (the cached :meth:`open_reads` is then stale)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if states:
            self._writes += 1

    def _actor_id(self, db: sqlite3.Connection, name: str) -> int:
        """The id of ``name`` in ``actors`` (added if new; in the caller's transaction)."""
        got = self._actors.get(name)
        if got is None:
            row = db.execute("SELECT id FROM actors WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (db.execute("INSERT INTO actors (name) VALUES (?)", (name,)).lastrowid,)
            got = self._actors[name] = int(row[0])
        return got

    def _actor_names(self) -> dict[int, str]:
        return {int(i): n for i, n in self._db.execute("SELECT id, name FROM actors")}

    def put(self, commands: Sequence[Command]) -> list[Command]:
        for cmd in commands:
            check_reason(cmd.state, cmd.reason)
        if not commands:
            return []
        try:
            with self._lock, self._tx() as db:
                ids = list(dict.fromkeys(c.command_id for c in commands))
                have = self._by_ids(db, ids)
                new: dict[str, Command] = {}
                for c in commands:
                    if c.command_id not in have and c.command_id not in new:
                        new[c.command_id] = c
                if new:
                    rows = [(*_row(c), _entry(history_entry(c, 0, c.actor, c.detail),
                                              c.created_ms, self._actor_id(db, c.actor)))
                            for c in new.values()]
                    db.executemany(f"INSERT INTO commands ({_COLS}, log) VALUES "
                                   "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                    have.update(new)
        except sqlite3.Error as exc:
            self._actors.clear()  # ids of a rolled-back transaction are gone
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
        return self.transition_many([(command_id, to_state, actor, at_ms, reason,
                                      detail)])[0]

    def transition_many(self, moves: Sequence[tuple[str, str, str, int, str | None,
                                                    str | None]]) -> builtins.list[Command]:
        """Several :meth:`transition` calls, ``(command_id, to_state, actor, at_ms,
        reason, detail)`` each, in one transaction (one fsync): all are made, or none if
        one raises."""
        out = []
        try:
            with self._lock, self._tx() as db:
                for command_id, to_state, actor, at_ms, reason, detail in moves:
                    row = db.execute(f"SELECT n, {_COLS}, log FROM commands "
                                     "WHERE command_id = ?", (command_id,)).fetchone()
                    if row is None:
                        raise UnknownCommand(command_id)
                    n, cmd, log = row[0], _command(row[1:-1]), row[-1]
                    new = advance(cmd, to_state, at_ms=at_ms, reason=reason, detail=detail)
                    h = history_entry(new, 0, actor, detail)
                    entry = _entry(h, cmd.created_ms, self._actor_id(db, actor))
                    db.execute("UPDATE commands SET state = ?, reason = ?, detail = ?, "
                               "updated_d = ?, log = ? WHERE n = ?",
                               (_STATE_CODE[new.state], new.reason, new.detail,
                                new.updated_ms - new.created_ms, log + entry, n))
                    out.append(new)
        except sqlite3.Error as exc:
            self._actors.clear()
            raise StorageError(f"command store {self.path}: {exc}") from exc
        except BaseException:
            self._actors.clear()  # ids added by the rolled-back transaction are gone
            raise
        return out

    def list(self, *, state: str | None = None, meter_id: str | None = None,
             since_ms: int | None = None, limit: int | None = None) -> list[Command]:
        where: builtins.list[str] = []
        args: builtins.list[int | str] = []
        if state is not None:
            if state not in _STATE_CODE:
                return []
            if state not in C.TERMINAL_STATES:
                where.append(_OPEN_SQL)
            where.append("state = ?")
            args.append(_STATE_CODE[state])
        if meter_id is not None:
            where.append("meter_id = ?")
            args.append(meter_id)
        if since_ms is not None:
            where.append("created_ms + updated_d >= ?")
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
        q = "SELECT command_id, created_ms, log FROM commands"
        args: builtins.list[str] = []
        if command_id is not None:
            q += " WHERE command_id = ?"
            args.append(command_id)
        q += " ORDER BY n"
        try:
            with self._lock:
                actors = self._actor_names()
                return [h for cid, t0, log in self._db.execute(q, args)
                        for h in _entries(cid, t0, log, actors)]
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc

    def open_reads(self) -> Mapping[str, tuple[str, ...]]:
        try:
            with self._lock:
                version = (self._db.execute("PRAGMA data_version").fetchone()[0],
                           self._writes)
                if self._open_reads is not None and self._open_reads[0] == version:
                    return self._open_reads[1]
                by_meter: dict[str, tuple[str, ...]] = {}
                for meter_id, command_id in self._db.execute(
                        f"SELECT meter_id, command_id FROM commands WHERE {_TAKING_SQL} "
                        "ORDER BY n"):
                    by_meter[meter_id] = (*by_meter.get(meter_id, ()), command_id)
                self._open_reads = (version, by_meter)
                return by_meter
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc

    def record_reads(self, brought: Sequence[tuple[str, ReadsBrought]]) -> builtins.list[str]:
        if not brought:
            return []
        ids = list(dict.fromkeys(cid for cid, _ in brought))
        out = []
        try:
            with self._lock, self._tx(states=False) as db:
                have: dict[str, tuple[int, ReadsBrought]] = {}
                for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                    chunk = ids[i:i + 500]
                    have.update((cid, (n, _reads(text) or ReadsBrought())) for n, cid, text in
                                db.execute(f"SELECT n, command_id, reads FROM commands WHERE "
                                           f"{_TAKING_SQL} AND command_id IN "
                                           f"({','.join('?' * len(chunk))})", chunk))
                for cid, reads in brought:
                    if cid in have:
                        n, had = have[cid]
                        have[cid] = (n, had + reads)
                        out.append(cid)
                db.executemany("UPDATE commands SET reads = ? WHERE n = ?",
                               [(_reads_text(r), n) for n, r in have.values()])
        except sqlite3.Error as exc:
            raise StorageError(f"command store {self.path}: {exc}") from exc
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
