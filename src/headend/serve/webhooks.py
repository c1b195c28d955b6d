"""Webhook delivery: scoped, signed, retried with exponential backoff, dead-lettered.

Each subscriber with a webhook URL has a durable consumer (``wh_<name>_<hash>``) on the
third-party stream, filtered by its scope, so delivery resumes where it stopped after a
restart. A message is POSTed as is (JSON lines) with headers

* ``X-Headend-Signature: sha256=<hex>`` - HMAC-SHA256 of the body with the subscriber's
  secret (``headend subscribers show NAME``); receivers must verify it;
* ``X-Headend-Subject``, ``X-Headend-Seq`` (stream sequence: receivers deduplicate on
  it, delivery is at-least-once), ``X-Headend-Attempt``.

A non-2xx answer or a connection error is retried after ``base_delay_s * 2**(k-1)``
(capped at ``max_delay_s``), in order (later messages wait); after ``max_attempts``
the message is appended to ``<data>/dead-letter/<name>.jsonl`` and acknowledged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from headend.bus import Bus, Message, subject_matches
from headend.serve.streams import OUT_STREAM
from headend.serve.subscribers import Subscriber

__all__ = ["WebhookDelivery", "dead_letters", "sign"]

log = logging.getLogger(__name__)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Headend-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dead_letters(root: Path | str, name: str) -> list[dict[str, Any]]:
    """Dead-lettered messages of subscriber ``name`` (oldest first)."""
    path = Path(root) / "dead-letter" / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class WebhookDelivery:
    """Delivers one subscriber's scope to its webhook (run in a thread)."""

    def __init__(
        self,
        bus: Bus,
        sub: Subscriber,
        root: Path | str,
        *,
        base_delay_s: float = 0.5,
        max_delay_s: float = 60.0,
        timeout_s: float = 5.0,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        if not sub.webhook:
            raise ValueError(f"subscriber {sub.name} has no webhook")
        self.sub = sub
        self.root = Path(root)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._on_outcome = on_outcome
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout_s)
        self._consumer = bus.consumer(OUT_STREAM, "wh" + sub.durable[3:],
                                      filter_subject=sub.filter_subject, ack_wait_s=3600.0)

    def _outcome(self, what: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(self.sub.name, what)

    def _post(self, m: Message, attempt: int) -> bool:
        headers = {
            "Content-Type": m.headers.get("Content-Type", "application/x-ndjson"),
            "X-Headend-Signature": sign(self.sub.secret, m.data),
            "X-Headend-Subject": m.subject,
            "X-Headend-Seq": str(m.seq),
            "X-Headend-Attempt": str(attempt),
        }
        try:
            r = self._client.post(self.sub.webhook or "", content=m.data, headers=headers)
        except httpx.HTTPError as exc:
            log.info("webhook %s attempt %d: %s", self.sub.name, attempt, exc)
            return False
        return 200 <= r.status_code < 300

    def deliver(self, m: Message) -> bool:
        """Deliver one message with retries; True if delivered, False if dead-lettered."""
        if not subject_matches(self.sub.filter_subject, m.subject):  # defence in depth
            m.ack()
            return False
        for attempt in range(1, self.sub.max_attempts + 1):
            if self._post(m, attempt):
                m.ack()
                self._outcome("delivered")
                return True
            self._outcome("retry")
            if attempt < self.sub.max_attempts:
                delay = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
                if self._stop.wait(delay):
                    return False  # stopping: not acked, redelivered after restart
        self._dead_letter(m)
        m.ack()
        self._outcome("dead_letter")
        return False

    def _dead_letter(self, m: Message) -> None:
        d = self.root / "dead-letter"
        d.mkdir(parents=True, exist_ok=True)
        rec = {"subject": m.subject, "seq": m.seq, "attempts": self.sub.max_attempts,
               "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "body_b64": base64.b64encode(m.data).decode()}
        with (d / f"{self.sub.name}.jsonl").open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # durable before the message is acknowledged

    def step(self, timeout_s: float = 0.5) -> int:
        n = 0
        for m in self._consumer.fetch(32, timeout_s):
            if self._stop.is_set():
                break
            self.deliver(m)
            n += 1
        return n

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("webhook delivery %s", self.sub.name)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self._client.close()
        self._consumer.close()
