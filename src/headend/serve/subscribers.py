"""Third-party subscribers: credentials and scopes, stored under the data directory.

A subscriber has a **scope** (``{"feeder": "F1"}``; keys in
:data:`headend.serve.subjects.SCOPE_KEYS`), which is turned into exactly one subject
filter (:func:`~headend.serve.subjects.scope_filter`). Every channel enforces it:

* NATS: a broker user ``sub_<name>`` whose subscribe permission is the filter (live,
  core NATS) and whose publish permission only reaches its own pre-created durable
  consumer (:attr:`Subscriber.durable`) of the ``HEADEND_OUT`` stream (created by headend with the
  scoped filter, so the subscriber cannot widen it) - see :func:`nats_authorization`;
* HTTP (SSE, webhooks): a bearer token; the server filters with the same subject filter;
* MQTT: a Mosquitto ACL (``topic read`` of the filter as an MQTT topic filter).

Stored in ``<data>/subscribers.json`` (mode 0600): secrets are kept in clear because
the broker configuration is generated from them; protect the data directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headend.errors import ConfigError
from headend.serve.subjects import scope_filter, to_mqtt_filter

__all__ = ["Subscriber", "SubscriberStore", "mosquitto_acl", "nats_authorization"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OUT_STREAM = "HEADEND_OUT"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One registered third party."""

    name: str
    scope: dict[str, str]
    token: str
    nats_password: str
    webhook: str | None = None
    secret: str = ""
    max_attempts: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def filter_subject(self) -> str:
        """The one subject filter this subscriber may see."""
        return scope_filter(self.scope)

    @property
    def nats_user(self) -> str:
        return f"sub_{self.name}"

    @property
    def durable(self) -> str:
        """Name of its durable consumer on ``HEADEND_OUT``: ``sub_<name>_<hash of the
        filter>``, so a subscriber registered again with another scope gets a new
        consumer (a durable consumer keeps the filter it was created with)."""
        digest = hashlib.sha256(self.filter_subject.encode()).hexdigest()[:8]
        return f"sub_{self.name}_{digest}"


class SubscriberStore:
    """The subscribers of one data directory (``<data>/subscribers.json``)."""

    def __init__(self, root: Path | str) -> None:
        self.path = Path(root) / "subscribers.json"
        self._lock = threading.Lock()
        self._fine: tuple[Any, tuple[frozenset[str], frozenset[str]]] | None = None

    def _load(self) -> dict[str, Subscriber]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {k: Subscriber(**v) for k, v in raw.items()}

    def _save(self, subs: dict[str, Subscriber]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({k: asdict(v) for k, v in sorted(subs.items())}, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def fine_scopes(self) -> tuple[frozenset[str], frozenset[str]]:
        """(meter ids, transformer ids) some subscriber is scoped to, for
        :class:`~headend.serve.streams.StreamPublisher` ``fine``; re-read only when the
        file changed."""
        try:
            st = self.path.stat()
            mt = (st.st_ino, st.st_mtime_ns)  # replaced on each write: a new inode
        except FileNotFoundError:
            return frozenset(), frozenset()
        with self._lock:
            if self._fine is None or self._fine[0] != mt:
                subs = self._load().values()
                self._fine = (mt, (frozenset(s.scope["meter"] for s in subs
                                             if "meter" in s.scope),
                                   frozenset(s.scope["transformer"] for s in subs
                                             if "transformer" in s.scope
                                             and "meter" not in s.scope)))
            return self._fine[1]

    def add(self, name: str, scope: dict[str, str], *, webhook: str | None = None,
            max_attempts: int = 8) -> Subscriber:
        """Register (or replace) a subscriber; new credentials are generated."""
        if not _NAME.match(name):
            raise ConfigError(f"subscriber name {name!r}: 1-64 of [A-Za-z0-9_-]")
        scope_filter(scope)  # validates the keys
        sub = Subscriber(name, dict(scope), secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                         webhook, secrets.token_hex(32), max_attempts)
        with self._lock:
            subs = self._load()
            subs[name] = sub
            self._save(subs)
        return sub

    def remove(self, name: str) -> bool:
        with self._lock:
            subs = self._load()
            found = subs.pop(name, None) is not None
            self._save(subs)
        return found

    def list(self) -> list[Subscriber]:
        return list(self._load().values())

    def get(self, name: str) -> Subscriber | None:
        return self._load().get(name)

    def by_token(self, token: str) -> Subscriber | None:
        for s in self._load().values():
            if secrets.compare_digest(s.token, token):
                return s
        return None


def _q(s: str) -> str:
    return json.dumps(s)


def nats_authorization(subs: list[Subscriber], *, service_user: str, service_password: str,
                       stream: str = OUT_STREAM) -> str:
    """nats-server ``authorization`` block: the service user plus one user per subscriber.

    Include it in the server configuration (``include "headend-auth.conf"``).
    """
    lines = ["authorization {", "  users = ["]
    lines.append(f"    {{user: {_q(service_user)}, password: {_q(service_password)}}}")
    for s in subs:
        d = s.durable
        pub = [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{d}", f"$JS.API.CONSUMER.INFO.{stream}.{d}",
               f"$JS.ACK.{stream}.{d}.>"]
        sub = [s.filter_subject, f"_INBOX_{s.nats_user}.>"]
        lines.append(
            f"    {{user: {_q(s.nats_user)}, password: {_q(s.nats_password)}, permissions: {{"
            f" publish: {{allow: [{', '.join(map(_q, pub))}]}},"
            f" subscribe: {{allow: [{', '.join(map(_q, sub))}]}} }}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def mosquitto_acl(subs: list[Subscriber], *, service_user: str) -> str:
    """A Mosquitto ``acl_file``: the service user may write ``headend/#``; each
    subscriber may only read its scope's topic filter."""
    out = [f"user {service_user}", "topic readwrite headend/#", ""]
    for s in subs:
        out += [f"user {s.nats_user}", f"topic read {to_mqtt_filter(s.filter_subject)}", ""]
    return "\n".join(out)
