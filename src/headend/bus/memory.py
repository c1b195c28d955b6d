"""In-process bus: the embedded default (no server) and the test kit of the port.

Streams live in memory (bounded by ``max_msgs``, ``max_age_s`` and ``max_bytes``;
what the limits remove before a durable consumer acknowledged it is counted in
:meth:`MemoryBus.dropped`); durability is that of the process. Semantics otherwise follow :mod:`headend.bus.base`: durable consumers
redeliver what is not acknowledged within ``ack_wait_s``, key-value entries expire.
The clock is injectable (``clock``) so tests can drive expiry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from headend.bus._local import fetch_first_of, message_size, wait_take
from headend.bus.base import Message, StreamSpec, subject_matches
from headend.errors import PublishError

__all__ = ["MemoryBus"]


@dataclass(slots=True)
class _Entry:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    at: float
    wall: float  # Unix s, for Message.stored_at
    size: int  # bytes counted against StreamSpec.max_bytes


@dataclass(slots=True)
class _Stream:
    spec: StreamSpec
    entries: dict[int, _Entry] = field(default_factory=dict)
    last_seq: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _ConsumerState:
    stream: str
    filter_subject: str
    next_seq: int
    ack_wait_s: float
    max_deliver: int
    # seq -> (redelivery deadline, deliveries so far)
    in_flight: dict[int, tuple[float, int]] = field(default_factory=dict)
    dropped: int = 0  # removed by the stream's limits before acknowledged

    def owes(self, entry: _Entry) -> bool:
        """True if ``entry`` matches and was not acknowledged yet."""
        return (entry.seq >= self.next_seq or entry.seq in self.in_flight) and \
            subject_matches(self.filter_subject, entry.subject)


class _MemoryConsumer:
    def __init__(self, bus: MemoryBus, state: _ConsumerState, durable: str | None) -> None:
        self._bus = bus
        self._state = state
        self._durable = durable

    # ack handle protocol used by Message
    def ack(self, msg: Message) -> None:
        with self._bus._cond:
            self._state.in_flight.pop(msg.seq, None)
            stream = self._bus._streams.get(self._state.stream)
            if stream is not None and stream.spec.work_queue:
                entry = stream.entries.pop(msg.seq, None)
                stream.bytes -= entry.size if entry is not None else 0

    def in_progress(self, msg: Message) -> None:
        with self._bus._cond:
            if msg.seq in self._state.in_flight:
                _, n = self._state.in_flight[msg.seq]
                self._state.in_flight[msg.seq] = (self._bus._clock() + self._state.ack_wait_s, n)

    def nak(self, msg: Message) -> None:
        with self._bus._cond:
            if msg.seq in self._state.in_flight:
                _, n = self._state.in_flight[msg.seq]
                self._state.in_flight[msg.seq] = (0.0, n)
            self._bus._cond.notify_all()

    def _take(self, max_messages: int) -> list[Message]:
        bus, st = self._bus, self._state
        stream = bus._streams[st.stream]
        now = bus._clock()
        out: list[Message] = []
        for seq, (deadline, n) in sorted(st.in_flight.items()):
            if len(out) >= max_messages:
                return out
            entry = stream.entries.get(seq)
            if entry is None:
                del st.in_flight[seq]
                continue
            if deadline <= now:
                if 0 < st.max_deliver <= n:
                    del st.in_flight[seq]
                    continue
                st.in_flight[seq] = (now + st.ack_wait_s, n + 1)
                out.append(Message(entry.subject, entry.data, dict(entry.headers), seq, n + 1, self,
                                   stored_at=entry.wall))
        while len(out) < max_messages and st.next_seq <= stream.last_seq:
            seq = st.next_seq
            st.next_seq += 1
            entry = stream.entries.get(seq)
            if entry is None or not subject_matches(st.filter_subject, entry.subject):
                continue
            st.in_flight[seq] = (now + st.ack_wait_s, 1)
            out.append(Message(entry.subject, entry.data, dict(entry.headers), seq, 1, self,
                               stored_at=entry.wall))
        return out

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        return wait_take(self._bus, lambda: self._take(max_messages), timeout_s)

    fetch_first_of = staticmethod(fetch_first_of)

    def pending(self) -> int:
        with self._bus._cond:
            stream = self._bus._streams[self._state.stream]
            return sum(
                1 for s, e in stream.entries.items()
                if s >= self._state.next_seq and subject_matches(self._state.filter_subject, e.subject)
            )

    def close(self) -> None:
        if self._durable is None:
            with self._bus._cond:
                self._bus._consumers.pop(id(self._state), None)


class _MemoryKV:
    def __init__(self, bus: MemoryBus, ttl_s: float) -> None:
        self._bus = bus
        self._ttl = ttl_s
        self._data: dict[str, tuple[bytes, int, float]] = {}
        self._rev = 0

    def _live(self, key: str) -> tuple[bytes, int, float] | None:
        item = self._data.get(key)
        if item is not None and self._ttl > 0 and self._bus._clock() - item[2] >= self._ttl:
            del self._data[key]
            return None
        return item

    def _put(self, key: str, value: bytes) -> int:
        self._rev += 1
        self._data[key] = (value, self._rev, self._bus._clock())
        return self._rev

    def get(self, key: str) -> tuple[bytes, int] | None:
        with self._bus._cond:
            item = self._live(key)
            return None if item is None else (item[0], item[1])

    def create(self, key: str, value: bytes) -> int | None:
        with self._bus._cond:
            return None if self._live(key) is not None else self._put(key, value)

    def update(self, key: str, value: bytes, revision: int) -> int | None:
        with self._bus._cond:
            item = self._live(key)
            if item is None or item[1] != revision:
                return None
            return self._put(key, value)

    def delete(self, key: str) -> None:
        with self._bus._cond:
            self._data.pop(key, None)

    def keys(self) -> list[str]:
        with self._bus._cond:
            return sorted(k for k in list(self._data) if self._live(k) is not None)


class MemoryBus:
    """The in-process :class:`~headend.bus.base.Bus`.

    Parameters
    ----------
    clock : callable, optional
        Seconds, monotonic; drives ack deadlines, retention and TTLs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._streams: dict[str, _Stream] = {}
        self._durables: dict[tuple[str, str], _ConsumerState] = {}
        self._consumers: dict[int, _ConsumerState] = {}
        self._kvs: dict[str, _MemoryKV] = {}
        self._closed = False

    def ensure_stream(self, spec: StreamSpec) -> None:
        with self._cond:
            if spec.name not in self._streams:
                self._streams[spec.name] = _Stream(spec)

    def _stream_for(self, subject: str) -> _Stream:
        for st in self._streams.values():
            if any(subject_matches(f, subject) for f in st.spec.subjects):
                return st
        raise PublishError(f"no stream captures subject {subject!r}")

    def _trim(self, st: _Stream) -> None:
        spec = st.spec
        cutoff = self._clock() - spec.max_age_s if spec.max_age_s > 0 else None
        owed = [c for (name, _), c in self._durables.items() if name == spec.name]
        while st.entries:
            first = st.entries[next(iter(st.entries))]
            if not (0 <= spec.max_msgs < len(st.entries)
                    or 0 <= spec.max_bytes < st.bytes
                    or (cutoff is not None and first.at < cutoff)):
                break
            del st.entries[first.seq]
            st.bytes -= first.size
            for c in owed:
                c.dropped += c.owes(first)

    def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None = None) -> int:
        with self._cond:
            if self._closed:
                raise PublishError("bus closed")
            st = self._stream_for(subject)
            st.last_seq += 1
            h = dict(headers or {})
            size = message_size(subject, data, h)
            st.entries[st.last_seq] = _Entry(
                st.last_seq, subject, bytes(data), h, self._clock(), time.time(), size)
            st.bytes += size
            self._trim(st)
            self._cond.notify_all()
            return st.last_seq

    def publish_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        return [self.publish(s, d, h) for s, d, h in messages]

    def consumer(
        self,
        stream: str,
        durable: str | None,
        *,
        filter_subject: str = ">",
        start_seq: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
    ) -> _MemoryConsumer:
        with self._cond:
            if stream not in self._streams:
                raise PublishError(f"no stream {stream!r}")
            if durable is not None and (stream, durable) in self._durables:
                state = self._durables[(stream, durable)]
            else:
                first = self._streams[stream].last_seq + 1 if start_seq <= 0 else start_seq
                state = _ConsumerState(stream, filter_subject, first, ack_wait_s, max_deliver)
                if durable is not None:
                    self._durables[(stream, durable)] = state
                else:
                    self._consumers[id(state)] = state
            return _MemoryConsumer(self, state, durable)

    def kv(self, bucket: str, *, ttl_s: float, replicas: int = 1) -> _MemoryKV:
        with self._cond:
            kv = self._kvs.get(bucket)
            if kv is None:
                kv = self._kvs[bucket] = _MemoryKV(self, ttl_s)
            return kv

    def dropped(self) -> dict[tuple[str, str], int]:
        with self._cond:
            return {key: c.dropped for key, c in self._durables.items()}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
