"""The bus port: durable streams, durable consumers with acknowledgement, leases.

Contract shared by every adapter (checked by ``tests/bus/test_conformance.py``):

* :meth:`Bus.publish` is **durable on return**: the message is stored in the stream
  whose subjects match (replicated if the stream is), and the call returns its stream
  sequence number. It raises :class:`~headend.errors.PublishError` otherwise, and the
  caller must not acknowledge its own input.
* A **durable consumer** (``durable`` given) keeps its position across reconnects and
  processes: messages fetched and not acknowledged within ``ack_wait_s`` are delivered
  again (to whoever fetches next), with ``num_delivered`` incremented. An ephemeral
  consumer (``durable=None``) starts at ``start_seq`` (1 = from the start, 0 = only
  messages published from now on) and forgets.
* Per consumer, messages are delivered in stream order (redeliveries may interleave).
* Everything is **blocking** and thread-safe; :meth:`Consumer.fetch` waits at most
  ``timeout_s`` and returns an empty list when nothing came.
* :class:`KeyValue` offers compare-and-set with a per-bucket TTL: the lease primitive
  for partition ownership (see ``docs/scaling.md``).
* Streams are bounded by age, count and size (:class:`StreamSpec`); what the limits
  remove before a durable consumer acknowledged it is **counted** per consumer
  (:meth:`Bus.dropped`), never dropped silently.

Subjects are NATS-style: tokens separated by ``.``; filters may use ``*`` (one token)
and ``>`` (one or more trailing tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Bus",
    "Consumer",
    "KeyValue",
    "Message",
    "StreamSpec",
    "ack_all",
    "fetch_each",
    "fetch_first",
    "subject_matches",
]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream: a durable, ordered log of the messages published on ``subjects``.

    Attributes
    ----------
    name : str
        Stream name (``HEADEND_INGEST``).
    subjects : tuple of str
        Subject filters the stream captures.
    replicas : int
        Copies kept (JetStream cluster: 3 survives one node down). Ignored in process.
    max_age_s : float
        Messages older than this are dropped [s]; 0 keeps them until ``max_msgs``.
    max_msgs : int
        Most messages kept; older ones are dropped first; -1 for no limit.
    max_bytes : int
        Most bytes kept (subject, headers and payload of each message) [bytes]; older
        messages are dropped first; -1 for no limit.
    work_queue : bool
        Messages are removed once acknowledged (ingest queues) instead of kept for
        replay (third-party streams).
    """

    name: str
    subjects: tuple[str, ...]
    replicas: int = 1
    max_age_s: float = 0.0
    max_msgs: int = -1
    work_queue: bool = False
    max_bytes: int = -1


@dataclass(slots=True)
class Message:
    """A delivered message. ``seq`` is its stream sequence (1-based); ``stored_at`` the
    wall-clock time the stream stored it [Unix s] (0.0 if the adapter does not know)."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    num_delivered: int = 1
    _ack: object = None  # adapter handle
    _raw: object = None  # adapter's own message
    stored_at: float = 0.0

    def ack(self) -> None:
        """Acknowledge: the consumer will not deliver it again. Blocking."""
        ack = self._ack
        if ack is not None:
            ack.ack(self)  # type: ignore[attr-defined]

    def nak(self) -> None:
        """Negative acknowledgement: deliver again soon."""
        ack = self._ack
        if ack is not None:
            ack.nak(self)  # type: ignore[attr-defined]

    def in_progress(self) -> None:
        """Still being worked on: restart the consumer's ``ack_wait`` for this message,
        so a short ``ack_wait`` (fast redelivery after a worker dies) does not redeliver
        a batch that a live worker is busy storing. Blocking."""
        ack = self._ack
        if ack is not None:
            ack.in_progress(self)  # type: ignore[attr-defined]


def ack_all(messages: list[Message]) -> None:
    """Acknowledge many messages: one call per adapter handle when the adapter offers
    ``ack_many`` (NATS: one trip to the event loop, not one per message), else one
    :meth:`Message.ack` each. Blocking; same contract as :meth:`Message.ack`."""
    by_handle: dict[int, tuple[object, list[Message]]] = {}
    for m in messages:
        if m._ack is not None:
            by_handle.setdefault(id(m._ack), (m._ack, []))[1].append(m)
    for handle, msgs in by_handle.values():
        many = getattr(handle, "ack_many", None)
        if many is not None:
            many(msgs)
        else:
            for m in msgs:
                m.ack()


def fetch_first(consumers: Sequence[Consumer], timeout_s: float) -> list[Message]:
    """Wait at most ``timeout_s`` [s] for a message on **any** of ``consumers``; returns
    as soon as one has some (at least one message, possibly a few from several
    consumers), or ``[]``. Adapters that can wait on several consumers at once offer
    ``fetch_first_of`` on their consumer class (NATS: one pull request each, answered
    by the first message); otherwise the consumers are asked in turn, each waiting
    ``timeout_s / len(consumers)``. Messages are returned in each consumer's order and
    are owed an acknowledgement like any fetched message."""
    if not consumers:
        return []
    native = _native(consumers, "fetch_first_of")
    if native is not None:
        return native(consumers, timeout_s)  # type: ignore[no-any-return]
    wait = timeout_s / len(consumers)
    for c in consumers:
        got = c.fetch(1, wait)
        if got:
            return got
    return []


def fetch_each(requests: Sequence[tuple[Consumer, int]], timeout_s: float
               ) -> list[list[Message] | Exception]:
    """Fetch from several consumers at once: up to ``n`` messages from each
    ``(consumer, n)``, each waiting at most ``timeout_s`` [s]. Returns, per request,
    its messages or the exception its fetch raised (the others are not affected).
    Adapters offer ``fetch_each_of`` to run the requests concurrently (one round trip
    for all); otherwise they run in turn."""
    native = _native([c for c, _ in requests], "fetch_each_of")
    if native is not None:
        return native(requests, timeout_s)  # type: ignore[no-any-return]
    out: list[list[Message] | Exception] = []
    for c, n in requests:
        try:
            out.append(c.fetch(n, timeout_s))
        except Exception as exc:  # noqa: BLE001 - reported per request, as documented
            out.append(exc)
    return out


def _native(consumers: Sequence[object], name: str) -> Any:
    kinds = {type(c) for c in consumers}
    if len(kinds) != 1:
        return None
    return getattr(kinds.pop(), name, None)


@runtime_checkable
class Consumer(Protocol):
    """A consumer of one stream, filtered by one subject filter."""

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` [s]."""
        ...

    def pending(self) -> int:
        """Messages not yet delivered to this consumer (its lag)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class KeyValue(Protocol):
    """A key-value bucket with compare-and-set; entries expire after the bucket TTL."""

    def get(self, key: str) -> tuple[bytes, int] | None:
        """``(value, revision)`` or ``None`` if absent or expired."""
        ...

    def create(self, key: str, value: bytes) -> int | None:
        """Set if absent; the new revision, or ``None`` if the key exists."""
        ...

    def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Set if the current revision is ``revision``; the new one, or ``None``."""
        ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> list[str]: ...


@runtime_checkable
class Bus(Protocol):
    """The event backbone (see module docstring for the contract)."""

    def ensure_stream(self, spec: StreamSpec) -> None:
        """Create the stream if absent; idempotent (an existing stream is kept as is,
        so a process started with other settings never downgrades it)."""
        ...

    def publish(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None = None
    ) -> int:
        """Store ``data`` durably on ``subject``; returns the stream sequence."""
        ...

    def publish_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        """Publish several messages, pipelined; durable (all of them) on return."""
        ...

    def consumer(
        self,
        stream: str,
        durable: str | None,
        *,
        filter_subject: str = ">",
        start_seq: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
    ) -> Consumer:
        """A durable (named) or ephemeral consumer; see module docstring."""
        ...

    def kv(self, bucket: str, *, ttl_s: float, replicas: int = 1) -> KeyValue:
        """The key-value bucket ``bucket`` (created if absent) with entry TTL [s]
        (0: no expiry), kept in ``replicas`` copies."""
        ...

    def dropped(self) -> dict[tuple[str, str], int]:
        """Per durable consumer ``(stream, durable)``: messages matching its filter
        that the stream's limits (``max_age_s``, ``max_msgs``, ``max_bytes``) removed
        before it acknowledged them, since the consumer was created. Adapters that
        cannot know (JetStream keeps no such count) return an empty mapping."""
        ...

    def close(self) -> None: ...


def subject_matches(filter_subject: str, subject: str) -> bool:
    """True if ``subject`` matches the NATS filter (``*`` one token, ``>`` the rest)."""
    ftoks = filter_subject.split(".")
    stoks = subject.split(".")
    for i, ft in enumerate(ftoks):
        if ft == ">":
            return len(stoks) > i
        if i >= len(stoks):
            return False
        if ft != "*" and ft != stoks[i]:
            return False
    return len(ftoks) == len(stoks)
