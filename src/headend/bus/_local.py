"""Helpers of the in-process adapters (:mod:`headend.bus.memory`, :mod:`headend.bus.log`):
blocking waits on the bus condition, message sizes as the size limits count them."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from headend.bus.base import Message
from headend.errors import PublishError

__all__ = ["POLL_S", "LocalConsumer", "fetch_first_of", "matcher", "message_size",
           "wait_take"]

#: longest single wait on the bus condition [s]: redelivery deadlines pass without a
#: notification, so waiters look again at least this often
POLL_S = 0.05


class _LocalBus(Protocol):
    @property
    def _cond(self) -> threading.Condition: ...

    @property
    def _closed(self) -> bool: ...


class LocalConsumer(Protocol):
    """A consumer of an in-process adapter: takes what is due under the bus lock."""

    @property
    def _bus(self) -> _LocalBus: ...

    def _take(self, max_messages: int) -> list[Message]: ...


def wait_take(bus: _LocalBus, take: Callable[[], list[Message]], timeout_s: float
              ) -> list[Message]:
    """Call ``take`` (under the bus condition) until it returns messages or
    ``timeout_s`` [s] passed; woken by publishes and naks (``notify_all``). Raises
    PublishError once the bus is closed."""
    deadline = time.monotonic() + timeout_s
    cond = bus._cond
    with cond:
        while True:
            if bus._closed:
                raise PublishError("bus closed")
            out = take()
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            cond.wait(min(left, POLL_S))


def fetch_first_of(consumers: Sequence[LocalConsumer], timeout_s: float) -> list[Message]:
    """:func:`headend.bus.base.fetch_first`: one wait on the bus for all of them."""
    bus = consumers[0]._bus
    if any(c._bus is not bus for c in consumers):
        raise ValueError("consumers of different buses")

    def take() -> list[Message]:
        for c in consumers:
            out = c._take(1)
            if out:
                return out
        return []

    return wait_take(bus, take, timeout_s)


def message_size(subject: str, data: bytes, headers: Mapping[str, str]) -> int:
    """Bytes a message counts against ``StreamSpec.max_bytes``: subject, header names
    and values, payload (as JetStream counts them, less its fixed overhead)."""
    return len(subject) + len(data) + sum(len(k) + len(v) for k, v in headers.items())


@functools.lru_cache(maxsize=1024)
def matcher(filter_subject: str) -> Callable[[str], bool]:
    """``subject -> bool`` of a NATS subject filter, compiled once (a regular
    expression: :func:`~headend.bus.base.subject_matches` at C speed, for per-message
    checks)."""
    toks = filter_subject.split(".")
    parts = []
    for i, t in enumerate(toks):
        if t == ">" and i == len(toks) - 1:
            parts.append(".+")
        elif t == "*":
            parts.append("[^.]+")
        else:
            parts.append(re.escape(t))
    rx = re.compile(r"\.".join(parts))
    return lambda subject: rx.fullmatch(subject) is not None
