"""The event backbone: a small bus port and its adapters (in-process, NATS JetStream).

Adapters are chosen by URL through :func:`open_bus` (one registry, no if/else chains
elsewhere): ``file:///path/to/dir`` for the durable in-process bus on local disk (the
embedded default of ``headend serve``), ``memory://`` for the in-process bus in memory
(tests), ``nats://h:p[,nats://h2:p2]`` for JetStream. Kafka or RabbitMQ Streams adapters register a scheme in :data:`ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headend.bus.base import (
    Bus,
    Consumer,
    KeyValue,
    Message,
    StreamSpec,
    ack_all,
    fetch_each,
    fetch_first,
    subject_matches,
)
from headend.errors import ConfigError

__all__ = [
    "ADAPTERS",
    "Bus",
    "Consumer",
    "KeyValue",
    "Message",
    "StreamSpec",
    "ack_all",
    "fetch_each",
    "fetch_first",
    "open_bus",
    "subject_matches",
]


def _memory(url: str, **kw: Any) -> Bus:
    from headend.bus.memory import MemoryBus

    return MemoryBus()


def _file(url: str, **kw: Any) -> Bus:
    from headend.bus.log import LogBus

    path = url.split("://", 1)[1]
    if not path:
        raise ConfigError(f"bus URL {url!r} names no directory (file:///path/to/dir)")
    return LogBus(path, **kw)


def _nats(url: str, **kw: Any) -> Bus:
    from headend.bus.nats import NatsBus

    return NatsBus(url, **kw)


#: URL scheme -> factory(url, **options)
ADAPTERS: dict[str, Callable[..., Bus]] = {"file": _file, "memory": _memory, "nats": _nats}


def open_bus(url: str = "memory://", **options: Any) -> Bus:
    """Open the bus adapter named by the URL scheme (``file://``, ``memory://``,
    ``nats://...``)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    factory = ADAPTERS.get(scheme)
    if factory is None:
        raise ConfigError(f"unknown bus URL {url!r}; schemes: {sorted(ADAPTERS)}")
    return factory(url, **options)
