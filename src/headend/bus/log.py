"""Durable in-process bus: streams, durable consumer positions and key-value buckets
in one SQLite database on local disk (the embedded bus of ``headend serve``).

``file:///var/lib/headend/data/bus`` opens (or creates) the directory, which holds
``bus.sqlite3`` (with its WAL journal) and ``LOCK``. One process owns a directory: a
second :class:`LogBus` on it, in this process or another, raises ConfigError.

Durability
    :meth:`LogBus.publish` and :meth:`LogBus.publish_many` (one transaction for the
    batch) commit with ``synchronous=FULL``: on return the messages survive a crash of
    the process and of the machine. Acknowledgements, delivery counts and key-value
    writes commit with ``synchronous=NORMAL``: they survive a crash of the process
    (``kill -9``); a power loss may undo the last of them, and then the messages are
    delivered again (delivery is at-least-once anyway).

Durable consumers
    Each keeps its *floor* (every sequence up to it is acknowledged, filtered out or
    gone), the acknowledged sequences above the floor and the delivery count of each
    sequence above it. Reopened, a durable consumer delivers again from its floor,
    skipping what was acknowledged, with ``num_delivered`` counting on (so
    ``max_deliver`` also ends a message that kills the process every time). Ephemeral
    consumers live in memory only.

Retention
    ``max_age_s`` (wall clock, so it holds across restarts), ``max_msgs`` and
    ``max_bytes`` of each stream are applied on every publish, at open and, for the
    age, at most once a second while consumers fetch; the oldest messages go first.
    A removed message that a durable consumer's filter matches and that it had not
    acknowledged is counted in its :meth:`LogBus.dropped` (kept in the database).

Waiting fetchers are woken in-process on publish (a condition variable), as in
:mod:`headend.bus.memory`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Final

from headend.bus._local import fetch_first_of, matcher, message_size, wait_take
from headend.bus._logkv import LogKV
from headend.bus.base import Message, StreamSpec
from headend.errors import ConfigError, PublishError

__all__ = ["DB_FILE", "LOCK_FILE", "LogBus"]

DB_FILE: Final = "bus.sqlite3"
LOCK_FILE: Final = "LOCK"
#: rows read per query while a consumer looks for its next messages
_SCAN: Final = 512
#: age limits are checked at most this often while consumers fetch [s]
_AGE_CHECK_S: Final = 1.0
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SPEC_FIELDS: Final = frozenset(f.name for f in fields(StreamSpec))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams(name TEXT PRIMARY KEY, spec TEXT NOT NULL,
                                   last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS consumers(stream TEXT NOT NULL, durable TEXT NOT NULL,
    filter TEXT NOT NULL, ack_wait_s REAL NOT NULL, max_deliver INTEGER NOT NULL,
    floor INTEGER NOT NULL, dropped INTEGER NOT NULL, PRIMARY KEY(stream, durable));
CREATE TABLE IF NOT EXISTS deliveries(stream TEXT NOT NULL, durable TEXT NOT NULL,
    seq INTEGER NOT NULL, n INTEGER NOT NULL, acked INTEGER NOT NULL,
    PRIMARY KEY(stream, durable, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets(name TEXT PRIMARY KEY, ttl_s REAL NOT NULL,
                                   revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv(bucket TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    revision INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY(bucket, key)) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Stream:
    spec: StreamSpec
    table: str  # quoted name of its message table
    last_seq: int
    count: int = 0
    bytes: int = 0
    aged_at: float = 0.0  # monotonic time of the last age check


@dataclass(slots=True)
class _State:
    """A consumer's position. ``floor``, ``acked``, ``delivered`` and ``dropped`` are
    persisted for durables; ``next_seq`` and ``in_flight`` live in memory."""

    stream: str
    durable: str | None
    filter_subject: str
    ack_wait_s: float
    max_deliver: int
    floor: int
    next_seq: int
    acked: set[int] = field(default_factory=set)  # done above the floor
    delivered: dict[int, int] = field(default_factory=dict)  # seq -> deliveries so far
    in_flight: dict[int, float] = field(default_factory=dict)  # seq -> redelivery deadline
    dropped: int = 0

    def done(self, seq: int) -> bool:
        """Acknowledged, terminated, or passed over (not matching the filter)."""
        return seq <= self.floor or seq in self.acked or \
            (seq < self.next_seq and seq not in self.in_flight)

    def lowest_open(self) -> int:
        """The floor these in-memory facts allow: all below is done."""
        return (min(self.in_flight) if self.in_flight else self.next_seq) - 1


def _headers_text(headers: Mapping[str, str]) -> str:
    """Headers as one text column: names and values joined by NUL (which neither a
    NATS nor an HTTP header may contain)."""
    return "\0".join(f"{k}\0{v}" for k, v in headers.items())


def _headers(text: str) -> dict[str, str]:
    if not text:
        return {}
    items = text.split("\0")
    return dict(zip(items[::2], items[1::2], strict=True))


def _message(row: tuple[int, str, str, bytes, float], n: int, handle: object) -> Message:
    seq, subject, headers, data, stored_at = row
    return Message(subject, bytes(data), _headers(headers), seq, n, handle,
                   stored_at=stored_at)


class _LogConsumer:
    def __init__(self, bus: LogBus, state: _State) -> None:
        self._bus = bus
        self._state = state

    # ack handle protocol used by Message (and base.ack_all)
    def ack(self, msg: Message) -> None:
        self.ack_many([msg])

    def ack_many(self, msgs: Sequence[Message]) -> None:
        """Acknowledge ``msgs`` in one transaction."""
        bus, st = self._bus, self._state
        with bus._cond:
            stream = bus._open_stream(st.stream)
            seqs = [m.seq for m in msgs]
            with bus._tx() as db:
                for seq in seqs:
                    st.in_flight.pop(seq, None)
                    st.delivered.pop(seq, None)
                    if seq > st.floor:
                        st.acked.add(seq)
                if st.durable is not None:
                    db.executemany(
                        "INSERT INTO deliveries VALUES (?, ?, ?, 0, 1) ON CONFLICT DO "
                        "UPDATE SET acked = 1", [(st.stream, st.durable, s) for s in seqs])
                if stream.spec.work_queue:
                    bus._delete(stream, seqs)
                bus._advance(st)

    def in_progress(self, msg: Message) -> None:
        with self._bus._cond:
            if msg.seq in self._state.in_flight:
                self._state.in_flight[msg.seq] = self._bus._clock() + self._state.ack_wait_s

    def nak(self, msg: Message) -> None:
        with self._bus._cond:
            if msg.seq in self._state.in_flight:
                self._state.in_flight[msg.seq] = 0.0
            self._bus._cond.notify_all()

    def _take(self, max_messages: int) -> list[Message]:
        bus, st = self._bus, self._state
        stream = bus._open_stream(st.stream)
        now = bus._clock()
        if stream.spec.max_age_s > 0 and now - stream.aged_at >= _AGE_CHECK_S:
            with bus._tx():
                bus._trim(stream)
        due = sorted(s for s, deadline in st.in_flight.items() if deadline <= now)
        if not due and st.next_seq > stream.last_seq:
            return []  # nothing new, nothing due: no query
        with bus._tx() as db:
            ended = [s for s in due if 0 < st.max_deliver <= st.delivered.get(s, 0)]
            for s in ended:  # delivered max_deliver times: terminated, like an ack
                del st.in_flight[s]
                st.acked.add(s)
            redo = [s for s in due if s in st.in_flight][:max_messages]
            rows = bus._rows(stream, redo)
            for s in redo:
                if s not in rows:  # removed meanwhile (limits, work queue)
                    del st.in_flight[s]
            picked = list(rows.values())
            while len(picked) < max_messages and st.next_seq <= stream.last_seq:
                picked.extend(self._scan(stream, max_messages - len(picked)))
            out = []
            for row in picked:
                if 0 < st.max_deliver <= st.delivered.get(row[0], 0):
                    # delivered max_deliver times before a restart: terminated too
                    ended.append(row[0])
                    st.acked.add(row[0])
                    continue
                n = st.delivered.get(row[0], 0) + 1
                st.delivered[row[0]] = n
                st.in_flight[row[0]] = now + st.ack_wait_s
                out.append(_message(row, n, self))
            if st.durable is not None and (out or ended):
                db.executemany(
                    "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                    "SET n = excluded.n, acked = excluded.acked",
                    [(st.stream, st.durable, m.seq, m.num_delivered, 0) for m in out]
                    + [(st.stream, st.durable, s, st.delivered.pop(s, 0), 1) for s in ended])
            bus._advance(st)
        return out

    def _scan(self, stream: _Stream, n: int) -> list[tuple[int, str, str, bytes, float]]:
        """Up to ``n`` new matching messages from the cursor on (which moves past
        every row looked at)."""
        st = self._state
        where, args = self._bus._where(st.filter_subject)
        rows = self._bus._db.execute(
            f"SELECT seq, subject, headers, data, stored_at FROM {stream.table} "
            f"WHERE seq >= ? AND seq <= ?{where} ORDER BY seq LIMIT ?",
            (st.next_seq, stream.last_seq, *args, n)).fetchall()
        st.next_seq = rows[-1][0] + 1 if len(rows) == n else stream.last_seq + 1
        return [r for r in rows if r[0] not in st.acked]

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        return wait_take(self._bus, lambda: self._take(max_messages), timeout_s)

    fetch_first_of = staticmethod(fetch_first_of)

    def pending(self) -> int:
        bus, st = self._bus, self._state
        with bus._cond:
            stream = bus._open_stream(st.stream)
            where, args = bus._where(st.filter_subject)
            (n,) = bus._db.execute(
                f"SELECT count(*) FROM {stream.table} WHERE seq >= ?{where}",
                (st.next_seq, *args)).fetchone()
            return int(n) - sum(1 for s in st.acked if s >= st.next_seq)

    def close(self) -> None:
        return None  # durable state stays in the bus; ephemeral state goes with us


class LogBus:
    """The durable in-process :class:`~headend.bus.base.Bus` (see module docstring).

    Parameters
    ----------
    path : str or Path
        The bus directory (created if absent).
    clock : callable, optional
        Seconds, monotonic: acknowledgement deadlines.
    wall : callable, optional
        Unix seconds: ``stored_at``, age limits and key-value TTLs (persisted, so the
        wall clock).

    Raises
    ------
    ConfigError
        Another :class:`LogBus` (this process or another) has the directory open.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition()
        self._closed = False
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path / LOCK_FILE)
        try:
            self._db = sqlite3.connect(self.path / DB_FILE, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._full = True
            self._db.create_function("subject_matches", 2,
                                     lambda f, s: matcher(f)(s), deterministic=True)
            self._db.executescript(_SCHEMA)
            self._streams: dict[str, _Stream] = {}
            self._durables: dict[tuple[str, str], _State] = {}
            self._kvs: dict[str, LogKV] = {}
            self._last_stream: _Stream | None = None
            self._load()
            with self._tx(full=True):
                for st in self._streams.values():
                    self._trim(st)
        except BaseException as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            os.close(self._lock_fd)
            if isinstance(exc, sqlite3.Error):
                raise PublishError(f"cannot open the bus database in {self.path}: {exc}") \
                    from exc
            raise

    # ----------------------------------------------------------------- storage

    @contextlib.contextmanager
    def _tx(self, *, full: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (``full``: fsynced on commit). On failure the
        in-memory state is reloaded from the database and PublishError raised."""
        if self._closed:
            raise PublishError("bus closed")
        db = self._db
        if db.in_transaction:  # nested: part of the caller's transaction
            yield db
            return
        try:
            if full != self._full:
                db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
                self._full = full
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._load()  # what this transaction changed in memory is undone too
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise PublishError(f"bus database {self.path}: {exc}") from exc
            raise

    def _load(self) -> None:
        """(Re)build the in-memory state from the database, in place (consumer
        handles keep their state objects; what was in flight is delivered again)."""
        db = self._db
        streams = db.execute("SELECT name FROM streams").fetchall()
        for gone in set(self._streams) - {name for (name,) in streams}:
            del self._streams[gone]
        self._last_stream = None
        known = set(db.execute("SELECT stream, durable FROM consumers").fetchall())
        for key in set(self._durables) - known:
            del self._durables[key]
        for name, spec_json, last in db.execute("SELECT name, spec, last_seq FROM streams"):
            raw = json.loads(spec_json)
            raw["subjects"] = tuple(raw["subjects"])
            spec = StreamSpec(**{k: v for k, v in raw.items() if k in _SPEC_FIELDS})
            table = f'"m_{name}"'
            count, size = db.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM {table}").fetchone()
            st = self._streams.setdefault(name, _Stream(spec, table, last))
            st.last_seq, st.count, st.bytes = last, count, size
        for stream, durable, flt, wait, maxd, floor, dropped in db.execute(
                "SELECT * FROM consumers"):
            c = self._durables.setdefault(
                (stream, durable), _State(stream, durable, flt, wait, maxd, floor, floor + 1))
            c.floor, c.next_seq, c.dropped = floor, floor + 1, dropped
            c.acked.clear()
            c.delivered.clear()
            c.in_flight.clear()
        for stream, durable, seq, n, acked in db.execute("SELECT * FROM deliveries"):
            c = self._durables[(stream, durable)]
            if acked:
                c.acked.add(seq)
            else:
                c.delivered[seq] = n

    def _open_stream(self, name: str) -> _Stream:
        if self._closed:
            raise PublishError("bus closed")
        st = self._streams.get(name)
        if st is None:
            raise PublishError(f"no stream {name!r}")
        return st

    @staticmethod
    def _where(filter_subject: str) -> tuple[str, tuple[str, ...]]:
        if filter_subject == ">":
            return "", ()
        return " AND subject_matches(?, subject)", (filter_subject,)

    def _rows(self, stream: _Stream, seqs: Sequence[int]
              ) -> dict[int, tuple[int, str, str, bytes, float]]:
        out = {}
        for i in range(0, len(seqs), 500):
            part = seqs[i:i + 500]
            for row in self._db.execute(
                    f"SELECT seq, subject, headers, data, stored_at FROM {stream.table} "
                    f"WHERE seq IN ({','.join('?' * len(part))})", part):
                out[row[0]] = row
        return {s: out[s] for s in seqs if s in out}

    def _delete(self, stream: _Stream, seqs: Sequence[int]) -> None:
        for i in range(0, len(seqs), 500):
            part = seqs[i:i + 500]
            for (size,) in self._db.execute(
                    f"DELETE FROM {stream.table} WHERE seq IN ({','.join('?' * len(part))}) "
                    "RETURNING size", part).fetchall():
                stream.count -= 1
                stream.bytes -= size

    def _advance(self, st: _State) -> None:
        """Raise a consumer's floor as far as its in-memory facts allow; persist it."""
        floor = st.lowest_open()
        if floor <= st.floor:
            return
        st.floor = floor
        st.acked = {s for s in st.acked if s > floor}
        st.delivered = {s: n for s, n in st.delivered.items() if s > floor}
        if st.durable is not None:
            self._db.execute("UPDATE consumers SET floor = ? WHERE stream = ? AND durable = ?",
                             (floor, st.stream, st.durable))
            self._db.execute("DELETE FROM deliveries WHERE stream = ? AND durable = ? AND "
                             "seq <= ?", (st.stream, st.durable, floor))

    # ----------------------------------------------------------------- retention

    def _cut(self, st: _Stream) -> int:
        """Highest sequence the limits remove (0: none)."""
        spec, db, cut = st.spec, self._db, 0
        if 0 <= spec.max_msgs < st.count:
            (cut,) = db.execute(f"SELECT seq FROM {st.table} ORDER BY seq LIMIT 1 OFFSET ?",
                                (st.count - spec.max_msgs - 1,)).fetchone()
        if spec.max_age_s > 0:
            st.aged_at = self._clock()
            cutoff = self._wall() - spec.max_age_s
            cut = max(cut, self._oldest_until(st, lambda row: row[1] >= cutoff))
        if 0 <= spec.max_bytes < st.bytes:
            excess = st.bytes - spec.max_bytes
            total = 0

            def enough(row: tuple[int, float, int]) -> bool:
                nonlocal total
                total += row[2]
                return total - row[2] >= excess

            cut = max(cut, self._oldest_until(st, enough))
        return cut

    def _oldest_until(self, st: _Stream, stop: Callable[[tuple[int, float, int]], bool]
                      ) -> int:
        """The sequence before the first row, oldest first, for which ``stop`` holds
        (rows are ``(seq, stored_at, size)``); 0 if it holds for the oldest."""
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT seq, stored_at, size FROM {st.table} WHERE seq > ? ORDER BY seq "
                f"LIMIT {_SCAN}", (last,)).fetchall()
            for row in rows:
                if stop(row):
                    return last
                last = row[0]
            if len(rows) < _SCAN:
                return last

    def _trim(self, st: _Stream) -> None:
        """Apply the stream's limits (inside a transaction); count what durable
        consumers lose."""
        cut = self._cut(st)
        if cut <= 0:
            return
        owed = [c for c in self._durables.values() if c.stream == st.spec.name]
        late = [c for c in owed if c.floor < cut]
        if late:
            rows = self._db.execute(f"SELECT seq, subject FROM {st.table} WHERE seq <= ?",
                                    (cut,)).fetchall()
            for c in late:
                match = matcher(c.filter_subject)
                lost = sum(1 for seq, subject in rows if not c.done(seq) and match(subject))
                c.dropped += lost
                for seq in [s for s in c.in_flight if s <= cut]:
                    del c.in_flight[seq]
                c.next_seq = max(c.next_seq, cut + 1)
                self._db.execute("UPDATE consumers SET dropped = ? WHERE stream = ? AND "
                                 "durable = ?", (c.dropped, c.stream, c.durable))
                self._advance(c)
        (n, size) = self._db.execute(
            f"SELECT count(*), coalesce(sum(size), 0) FROM {st.table} WHERE seq <= ?",
            (cut,)).fetchone()
        self._db.execute(f"DELETE FROM {st.table} WHERE seq <= ?", (cut,))
        st.count -= n
        st.bytes -= size

    # ----------------------------------------------------------------- the port

    def ensure_stream(self, spec: StreamSpec) -> None:
        if not _NAME.match(spec.name):
            raise ConfigError(f"stream name {spec.name!r}: letters, digits, '_' and '-' only")
        with self._cond:
            if spec.name in self._streams:
                return
            table = f'"m_{spec.name}"'
            raw = asdict(spec)
            with self._tx(full=True) as db:
                db.execute(f"CREATE TABLE IF NOT EXISTS {table}(seq INTEGER PRIMARY KEY, "
                           "subject TEXT NOT NULL, headers TEXT NOT NULL, data BLOB NOT NULL, "
                           "stored_at REAL NOT NULL, size INTEGER NOT NULL)")
                db.execute("INSERT INTO streams VALUES (?, ?, 0)", (spec.name, json.dumps(raw)))
                self._streams[spec.name] = _Stream(spec, table, 0)

    def _stream_for(self, subject: str) -> _Stream:
        last = self._last_stream  # a batch mostly goes to one stream: try it first
        if last is not None and any(matcher(f)(subject) for f in last.spec.subjects):
            return last
        for st in self._streams.values():
            if any(matcher(f)(subject) for f in st.spec.subjects):
                self._last_stream = st
                return st
        raise PublishError(f"no stream captures subject {subject!r}")

    def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None = None) -> int:
        return self.publish_many([(subject, data, headers)])[0]

    def publish_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        """Store ``messages`` in one transaction, fsynced before return."""
        with self._cond:
            if self._closed:
                raise PublishError("bus closed")
            targets = [self._stream_for(subject) for subject, _, _ in messages]
            wall = self._wall()
            seqs = []
            with self._tx(full=True) as db:
                rows: dict[str, list[tuple[int, str, str, bytes, float, int]]] = {}
                for st, (subject, data, headers) in zip(targets, messages, strict=True):
                    h = dict(headers or {})
                    size = message_size(subject, data, h)
                    st.last_seq += 1
                    st.count += 1
                    st.bytes += size
                    seqs.append(st.last_seq)
                    rows.setdefault(st.spec.name, []).append(
                        (st.last_seq, subject, _headers_text(h), bytes(data), wall, size))
                for name, part in rows.items():
                    st = self._streams[name]
                    db.executemany(f"INSERT INTO {st.table} VALUES (?, ?, ?, ?, ?, ?)", part)
                    db.execute("UPDATE streams SET last_seq = ? WHERE name = ?",
                               (st.last_seq, name))
                    self._trim(st)
            self._cond.notify_all()
            return seqs

    def consumer(
        self,
        stream: str,
        durable: str | None,
        *,
        filter_subject: str = ">",
        start_seq: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
    ) -> _LogConsumer:
        with self._cond:
            st = self._open_stream(stream)
            state = self._durables.get((stream, durable)) if durable is not None else None
            if state is None:
                floor = st.last_seq if start_seq <= 0 else start_seq - 1
                state = _State(stream, durable, filter_subject, ack_wait_s, max_deliver,
                               floor, floor + 1)
                if durable is not None:
                    with self._tx() as db:
                        db.execute("INSERT INTO consumers VALUES (?, ?, ?, ?, ?, ?, 0)",
                                   (stream, durable, filter_subject, ack_wait_s, max_deliver,
                                    floor))
                        self._durables[(stream, durable)] = state
            return _LogConsumer(self, state)

    def kv(self, bucket: str, *, ttl_s: float, replicas: int = 1) -> LogKV:
        with self._cond:
            kv = self._kvs.get(bucket)
            if kv is None:
                with self._tx() as db:
                    db.execute("INSERT INTO buckets VALUES (?, ?, 0) ON CONFLICT DO NOTHING",
                               (bucket, ttl_s))
                    (ttl,) = db.execute("SELECT ttl_s FROM buckets WHERE name = ?",
                                        (bucket,)).fetchone()
                kv = self._kvs[bucket] = LogKV(self._cond, self._tx, self._wall, bucket, ttl)
            return kv

    def dropped(self) -> dict[tuple[str, str], int]:
        with self._cond:
            return {key: c.dropped for key, c in self._durables.items()}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            self._db.close()
            os.close(self._lock_fd)


def _lock(path: Path) -> int:
    """Hold ``path`` locked (flock) while the bus is open; refuse a second owner."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"the bus directory {path.parent} is in use by another process (pid {owner}); "
            "one headend serve process owns a data directory") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
