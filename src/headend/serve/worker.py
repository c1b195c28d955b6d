"""Ingest workers: consume partitions of the ingest queue, store, then acknowledge.

Scale-out design (docs/scaling.md): the uplink stage splits each upload by store meter
bucket into partitions (:mod:`headend.serve.router`) published on the work-queue stream
``HEADEND_INGEST`` (subject ``headend-ingest.<p>``). Each partition has one durable pull
consumer ``ingest-<p>``, fetched only by the worker that holds the partition's
**lease**: a key ``p.<p>`` in the key-value bucket ``headend_leases`` whose TTL is the
lease time. Workers heartbeat (key ``w.<id>``), count the living, and each aims at
``ceil(P / workers)`` partitions: a new worker takes partitions others release, a dead
worker's leases expire and the living take them; its unacknowledged messages are
redelivered by JetStream after ``ack_wait``. A message is acknowledged only after
:meth:`Ingestor.ingest_bytes` returned (durable), so a crash loses nothing; the store's
dedup makes the redelivery harmless.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Final

from headend.bus import Bus, Consumer, Message, StreamSpec, ack_all
from headend.serve.subjects import INGEST_PREFIX, RESULT_PREFIX, ingest_subject

__all__ = [
    "INGEST_STREAM",
    "LEASE_BUCKET",
    "REGISTRY_BUCKET",
    "RESULT_STREAM",
    "IngestWorker",
    "WorkerConfig",
    "ensure_streams",
]

log = logging.getLogger(__name__)

INGEST_STREAM: Final = "HEADEND_INGEST"
RESULT_STREAM: Final = "HEADEND_RESULTS"
LEASE_BUCKET: Final = "headend_leases"
REGISTRY_BUCKET: Final = "headend_registry"
H_REPLY: Final = "Headend-Reply"
H_UPLOAD: Final = "Headend-Upload"
H_SOURCE: Final = "Headend-Source"
H_CT: Final = "Content-Type"
#: fetch wait of a partition once the round already has messages [s]
_BUSY_WAIT_S: Final = 0.001


def ensure_streams(bus: Bus, replicas: int = 1) -> None:
    """Create the ingest queue and the results stream (idempotent)."""
    bus.ensure_stream(StreamSpec(INGEST_STREAM, (f"{INGEST_PREFIX}.>",), replicas=replicas,
                                 work_queue=True))
    bus.ensure_stream(StreamSpec(RESULT_STREAM, (f"{RESULT_PREFIX}.>",), replicas=replicas,
                                 max_age_s=300.0))


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Worker settings.

    Attributes
    ----------
    partitions : int
        Ingest partitions P (same value for every worker and the uplink).
    lease_ttl_s : float
        A partition lease expires this long after its last refresh [s].
    ack_wait_s : float
        JetStream redelivers a message not acknowledged within this [s]; must exceed
        the longest ingest of one fetch.
    batch : int
        Most messages fetched per round, over all owned partitions (ingested as one
        batch).
    idle_fetch_s : float
        Total time a round waits for messages when everything is idle [s]; bounds the
        added latency of the first message after a quiet spell.
    replicas : int
        Copies of the streams and key-value buckets (3 on a 3-node cluster).
    linger_s : float
        Once a round has messages, keep fetching for up to this long [s] to ingest
        bigger batches (fewer store appends and fsyncs at moderate rates, at the cost
        of this much latency). Under load batches grow by themselves (messages queue
        while the previous batch is ingested), so the default is 0.
    """

    partitions: int = 8
    lease_ttl_s: float = 6.0
    ack_wait_s: float = 30.0
    batch: int = 512
    idle_fetch_s: float = 0.04
    replicas: int = 1
    linger_s: float = 0.0


class IngestWorker:
    """One ingest worker on a bus.

    Parameters
    ----------
    bus : Bus
    ingest : callable
        ``(data, source, content_type) -> IngestResult``; returns once durable.
    refresh : callable
        Reload the registry (meters or collector keys were loaded elsewhere).
    on_release : callable
        Called after partitions were given up or lost, before others may take them:
        release the store's bucket locks (reopen the store). The bucket lock is also
        the fence: a worker whose lease lapsed while it was alive cannot write a
        bucket the new owner holds (its append fails, its message is redelivered).
    lock : context manager, optional
        Held around each ingest (an Ingestor shared with other threads).
    on_result : callable, optional
        ``(result, messages, redelivered)`` after each acknowledged ingest (metrics).
    """

    def __init__(
        self,
        bus: Bus,
        ingest: Callable[[bytes, str, str | None], Any],
        *,
        refresh: Callable[[], None] = lambda: None,
        on_release: Callable[[], None] = lambda: None,
        config: WorkerConfig = WorkerConfig(),
        worker_id: str | None = None,
        lock: AbstractContextManager[Any] | None = None,
        on_result: Callable[[Any, int, int], None] | None = None,
    ) -> None:
        self.bus = bus
        self.ingest = ingest
        self.refresh = refresh
        self.on_release = on_release
        self.config = config
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._lock = lock or nullcontext()
        self._on_result = on_result
        ensure_streams(bus, config.replicas)
        self.leases = bus.kv(LEASE_BUCKET, ttl_s=config.lease_ttl_s, replicas=config.replicas)
        self.registry_kv = bus.kv(REGISTRY_BUCKET, ttl_s=0, replicas=config.replicas)
        self.owned: dict[int, int] = {}  # partition -> lease revision
        self._consumers: dict[int, Consumer] = {}
        self._hb_rev: int | None = None
        self._last_lease = 0.0
        self._registry_rev: int | None = None
        self._rr = 0
        self._stop = threading.Event()
        rv = self.registry_kv.get("version")
        self._registry_rev = None if rv is None else rv[1]

    # ----------------------------------------------------------------- leases

    def _lease_round(self) -> None:
        kv, me = self.leases, self.worker_id.encode()
        hb = f"w.{self.worker_id}"
        rev = None if self._hb_rev is None else kv.update(hb, me, self._hb_rev)
        self._hb_rev = rev if rev is not None else kv.create(hb, me)
        workers = [k for k in kv.keys() if k.startswith("w.")]  # noqa: SIM118 - KV, not a dict
        target = math.ceil(self.config.partitions / max(len(workers), 1))
        lost = False
        for p, rev in list(self.owned.items()):
            new = kv.update(f"p.{p}", me, rev)
            if new is None:
                log.warning("worker %s lost the lease of partition %d", self.worker_id, p)
                self._drop(p)
                lost = True
            else:
                self.owned[p] = new
        extra = sorted(self.owned)[target:] if len(self.owned) > target else []
        for p in extra:
            self._drop(p)
        if lost or extra:
            # give the store's bucket locks back before anyone may take the partition
            with self._lock:
                self.on_release()
        for p in extra:
            kv.delete(f"p.{p}")
        if len(self.owned) < target:
            start = zlib.crc32(me) % self.config.partitions
            for i in range(self.config.partitions):
                p = (start + i) % self.config.partitions
                if p in self.owned:
                    continue
                got = kv.create(f"p.{p}", me)
                if got is not None:
                    self.owned[p] = got
                    self._bind(p)
                    if len(self.owned) >= target:
                        break

    def _bind(self, p: int) -> None:
        old = self._consumers.pop(p, None)
        if old is not None:
            old.close()
        self._consumers[p] = self.bus.consumer(
            INGEST_STREAM, f"ingest-{p}", filter_subject=ingest_subject(p),
            ack_wait_s=self.config.ack_wait_s)

    def _drop(self, p: int) -> None:
        self.owned.pop(p, None)
        c = self._consumers.pop(p, None)
        if c is not None:
            c.close()

    def release_all(self) -> None:
        """Give every lease back at once (clean shutdown: others take over now)."""
        owned = list(self.owned)
        for p in owned:
            self._drop(p)
        if owned:
            with self._lock:
                self.on_release()
        for p in owned:
            self.leases.delete(f"p.{p}")
        self.leases.delete(f"w.{self.worker_id}")

    # ----------------------------------------------------------------- work

    def _check_registry(self) -> None:
        rv = self.registry_kv.get("version")
        rev = None if rv is None else rv[1]
        if rev != self._registry_rev:
            self._registry_rev = rev
            with self._lock:
                self.refresh()

    def step(self) -> int:
        """One round: leases (every lease_ttl/3), registry check, fetch and ingest.

        Every owned partition is fetched; what the round got is ingested as **one
        batch** (frames concatenated: one decode, one store append per bucket, one
        third-party publish), then acknowledged at once. While everything is empty the
        round waits ``idle_fetch_s`` in all, spread over the partitions, for a first
        message (returned as soon as it arrives); then every partition is asked for
        what it holds without waiting.

        Returns the number of messages acknowledged.
        """
        now = time.monotonic()
        if now - self._last_lease >= self.config.lease_ttl_s / 3:
            self._lease_round()
            self._check_registry()
            self._last_lease = now
        if not self._consumers:
            time.sleep(self.config.idle_fetch_s)
            return 0
        idle_wait = max(self.config.idle_fetch_s / len(self._consumers), 0.002)
        # probe: ask each partition for one message until one has some (a pull for
        # one message returns as soon as it arrives); then collect what every owned
        # partition holds without waiting
        msgs = self._fetch_round(idle_wait, 1, probe=True)
        if msgs:
            end = time.monotonic() + self.config.linger_s
            while True:
                got = self._fetch_round(_BUSY_WAIT_S, self.config.batch - len(msgs))
                msgs.extend(got)
                if not got or len(msgs) >= self.config.batch or time.monotonic() >= end:
                    break
        for p in set(self.owned) - set(self._consumers):
            try:
                self._bind(p)
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.debug("partition %d: bind failed: %s", p, exc)
        return self._process(msgs) if msgs else 0

    def _fetch_round(self, wait: float, room: int, *, probe: bool = False) -> list[Message]:
        """Fetch up to ``room`` messages from the owned partitions, each waiting at most
        ``wait`` [s]; a probe stops at the first partition that had a message. The
        starting partition rotates each round (no partition starves under backlog)."""
        out: list[Message] = []
        items = list(self._consumers.items())
        self._rr = (self._rr + 1) % max(len(items), 1)
        for p, consumer in items[self._rr:] + items[:self._rr]:
            if room - len(out) <= 0 or (probe and out):
                break
            try:
                got = consumer.fetch(room - len(out), wait)
            except Exception as exc:  # noqa: BLE001 - e.g. consumer offline after a node loss
                log.warning("partition %d: fetch failed (%s); re-binding its consumer", p, exc)
                try:
                    self._bind(p)
                except Exception:  # noqa: BLE001 - next round tries again
                    self._consumers.pop(p, None)
                    self._last_lease = 0.0
                continue
            out.extend(got)
        return out

    def _process(self, msgs: list[Message]) -> int:
        redelivered = sum(1 for m in msgs if m.num_delivered > 1)
        replies = [m for m in msgs if H_REPLY in m.headers]
        frames = [m for m in msgs if H_REPLY not in m.headers
                  and m.headers.get(H_CT, "").startswith("application/octet-stream")]
        others = [m for m in msgs if H_REPLY not in m.headers and m not in frames]
        try:
            if frames:  # frames concatenate: one ingest, one store append per bucket;
                # the batch carries the source of its oldest upload
                res = self._ingest(b"".join(m.data for m in frames),
                                   frames[0].headers.get(H_SOURCE, "uplink"),
                                   "application/octet-stream")
                ack_all(frames)  # after the append returned: durable
                self._report(res, len(frames), redelivered)
            for m in others:
                res = self._ingest(m.data, m.headers.get(H_SOURCE, "uplink"),
                                   m.headers.get(H_CT))
                m.ack()
                self._report(res, 1, 0)
            for m in replies:
                res = self._ingest(m.data, m.headers.get(H_SOURCE, "upload"),
                                   m.headers.get(H_CT))
                body = json.dumps(res.to_dict() if hasattr(res, "to_dict") else res).encode()
                # result first, then ack: a lost ack costs a redelivery (counted as
                # duplicates, the waiter already has its answer), never a lost answer
                self.bus.publish(m.headers[H_REPLY], body, {H_UPLOAD: m.headers.get(H_UPLOAD, "")})
                m.ack()
                self._report(res, 1, 0)
        except Exception:
            log.exception("ingest failed; unacknowledged messages will be redelivered")
            return 0
        return len(msgs)

    def _ingest(self, data: bytes, source: str, content_type: str | None) -> Any:
        with self._lock:
            return self.ingest(data, source, content_type)

    def _report(self, res: Any, n: int, redelivered: int) -> None:
        if self._on_result is not None:
            self._on_result(res, n, redelivered)

    def lag(self) -> int:
        """Messages waiting in the partitions this worker owns."""
        return sum(c.pending() for c in list(self._consumers.values()))

    def run(self) -> None:
        """Work until :meth:`stop`; then give the leases back."""
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("worker %s round failed; retrying", self.worker_id)
                    self._stop.wait(0.5)
        finally:
            try:
                self.release_all()
            except Exception:  # noqa: BLE001 - the bus may be gone; leases then expire
                log.warning("could not release leases; they expire after the TTL")

    def stop(self) -> None:
        self._stop.set()
