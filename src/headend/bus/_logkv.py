"""Key-value buckets of the durable in-process bus (:mod:`headend.bus.log`): rows of
its SQLite database, one revision counter per bucket, TTL on the wall clock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

__all__ = ["LogKV"]

#: opens one write transaction of the bus database
Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


class LogKV:
    """A :class:`~headend.bus.base.KeyValue` bucket kept in the bus database.

    Entries expire ``ttl_s`` [s] after their last write (wall clock, so leases written
    before a restart expire on time after it); 0 keeps them. Revisions grow per
    bucket, across restarts. Writes survive a crash of the process (the bus's
    ``synchronous=NORMAL`` transactions).
    """

    def __init__(self, lock: threading.Condition, tx: Transaction,
                 wall: Callable[[], float], bucket: str, ttl_s: float) -> None:
        self._lock = lock
        self._tx = tx
        self._wall = wall
        self.bucket = bucket
        self.ttl_s = ttl_s

    def _expire(self, db: sqlite3.Connection) -> None:
        if self.ttl_s > 0:
            db.execute("DELETE FROM kv WHERE bucket = ? AND at <= ?",
                       (self.bucket, self._wall() - self.ttl_s))

    def _current(self, db: sqlite3.Connection, key: str) -> tuple[bytes, int] | None:
        self._expire(db)
        row = db.execute("SELECT value, revision FROM kv WHERE bucket = ? AND key = ?",
                         (self.bucket, key)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def _put(self, db: sqlite3.Connection, key: str, value: bytes) -> int:
        (rev,) = db.execute("UPDATE buckets SET revision = revision + 1 WHERE name = ? "
                            "RETURNING revision", (self.bucket,)).fetchone()
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                   (self.bucket, key, bytes(value), rev, self._wall()))
        return int(rev)

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self._lock, self._tx() as db:
            return self._current(db, key)

    def create(self, key: str, value: bytes) -> int | None:
        with self._lock, self._tx() as db:
            return None if self._current(db, key) is not None else self._put(db, key, value)

    def update(self, key: str, value: bytes, revision: int) -> int | None:
        with self._lock, self._tx() as db:
            cur = self._current(db, key)
            if cur is None or cur[1] != revision:
                return None
            return self._put(db, key, value)

    def delete(self, key: str) -> None:
        with self._lock, self._tx() as db:
            db.execute("DELETE FROM kv WHERE bucket = ? AND key = ?", (self.bucket, key))

    def keys(self) -> list[str]:
        with self._lock, self._tx() as db:
            self._expire(db)
            return sorted(k for (k,) in db.execute("SELECT key FROM kv WHERE bucket = ?",
                                                   (self.bucket,)))
