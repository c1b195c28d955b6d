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

``ack_wait`` is short (4 s): while a batch is worked, a heartbeat thread sends
:meth:`Message.in_progress` every ``ack_wait / 4`` (:class:`~headend.serve.leases.InProgress`),
so a live worker keeps its batch however long it takes and a dead worker's batch is
delivered again within seconds. With the 4 s lease the partition of a worker killed
mid-batch is acknowledged by another worker within about 6 s (docs/scaling.md).

**Poison messages.** When a round's concatenated ingest fails (not for want of the
store or the bus: :data:`ENVIRONMENT_ERRORS`), its messages are ingested one by one, so
the good ones are stored and acknowledged in that round. A message that fails alone is
left for redelivery; once it has been delivered ``max_deliveries`` times it is ingested
alone again and, if it still fails, goes to the quarantine (reason ``ingest_failed``,
the error in ``detail``, the message in ``payload``) and is acknowledged, so the
partition moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Final

from headend.bus import Bus, Consumer, Message, StreamSpec, ack_all, fetch_each, fetch_first
from headend.errors import PublishError, ServiceUnavailable, StorageError
from headend.ingest.result import IngestResult
from headend.model.reasons import INGEST_FAILED
from headend.serve.leases import InProgress, LeaseKeeper, PartitionLeases, work_until
from headend.serve.subjects import INGEST_PREFIX, RESULT_PREFIX, ingest_subject

__all__ = [
    "ENVIRONMENT_ERRORS",
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
#: assumed size of a partition's messages before one was seen [bytes]
_FIRST_SIZE_GUESS: Final = 64 * 1024
#: failures of the store or the bus, not of a message: never a reason to quarantine one
ENVIRONMENT_ERRORS: Final = (StorageError, PublishError, ServiceUnavailable, OSError)


def _partition_of(subject: str) -> int:
    tail = subject.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else -1


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
        A partition lease expires this long after its last refresh [s] (refreshed every
        third of it). With ``ack_wait_s`` it bounds the failover: a dead worker's
        partitions are taken within ``lease_ttl_s * 4/3`` of its death.
    ack_wait_s : float
        JetStream redelivers a message not acknowledged within this [s] after its
        delivery or its last in-progress heartbeat (sent every ``ack_wait_s / 4``
        while the batch is worked), so it need not exceed the longest ingest.
    max_deliveries : int
        A message delivered this many times is ingested alone and, if that fails
        (other than by :data:`ENVIRONMENT_ERRORS`), quarantined and acknowledged.
    batch : int
        Most messages fetched per round, over all owned partitions (ingested as one
        batch).
    batch_bytes : int
        Most payload bytes asked for per round [bytes] (pull requests are sized from
        the largest message seen in each partition). Keeps a round's ingest short
        (well within ``ack_wait_s``) and the data in flight to this client below the
        server's per-client limit: nats-server closes a connection whose unsent data
        exceeds ``max_pending`` (64 MiB by default) as a *slow consumer*, and every
        message in flight on it then waits ``ack_wait_s`` to be redelivered.
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
    lease_ttl_s: float = 4.0
    ack_wait_s: float = 4.0
    max_deliveries: int = 5
    batch: int = 512
    batch_bytes: int = 16 * 1024 * 1024
    idle_fetch_s: float = 0.04
    replicas: int = 1
    linger_s: float = 0.0


class IngestWorker:
    """One ingest worker on a bus.

    Parameters
    ----------
    bus : Bus
    ingest : callable
        ``(data, source, content_type) -> IngestResult``; returns once durable. For a
        message the bus delivers again it is called with ``redelivery=True`` too
        (:meth:`Ingestor.ingest_bytes <headend.ingest.pipeline.Ingestor.ingest_bytes>`).
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
    quarantine : QuarantineStore, optional
        Where poison messages go (``append(rows)``). Without one, a poison message is
        logged at every delivery and never acknowledged (the partition stalls, loudly,
        rather than drop it).
    """

    def __init__(
        self,
        bus: Bus,
        ingest: Callable[..., IngestResult],
        *,
        refresh: Callable[[], None] = lambda: None,
        on_release: Callable[[], None] = lambda: None,
        config: WorkerConfig = WorkerConfig(),
        worker_id: str | None = None,
        lock: AbstractContextManager[Any] | None = None,
        on_result: Callable[[IngestResult, int, int], None] | None = None,
        quarantine: Any = None,
    ) -> None:
        self.bus = bus
        self.ingest = ingest
        self.refresh = refresh
        self.on_release = on_release
        self.config = config
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._lock = lock or nullcontext()
        self._on_result = on_result
        self.quarantine = quarantine
        self._beat = InProgress(config.ack_wait_s / 4, name=f"in-progress-{self.worker_id}")
        ensure_streams(bus, config.replicas)
        self.leases = PartitionLeases(
            bus.kv(LEASE_BUCKET, ttl_s=config.lease_ttl_s, replicas=config.replicas),
            self.worker_id, config.partitions)
        self.registry_kv = bus.kv(REGISTRY_BUCKET, ttl_s=0, replicas=config.replicas)
        self._consumers: dict[int, Consumer] = {}  # touched by the work loop only
        self._keeper = LeaseKeeper(self._lease_round, config.lease_ttl_s / 3,
                                   f"worker {self.worker_id}")
        self._registry_changed = threading.Event()
        self._registry_rev: int | None = None
        self._msg_size: dict[int, int] = {}  # partition -> largest message seen [bytes]
        self._stop = threading.Event()
        rv = self.registry_kv.get("version")
        self._registry_rev = None if rv is None else rv[1]

    # ----------------------------------------------------------------- leases

    @property
    def owned(self) -> set[int]:
        """Partitions whose lease this worker holds."""
        return self.leases.owned

    def _lease_round(self) -> None:
        """Key-value work of one lease period (the keeper thread, or inline)."""
        self.leases.round()
        rv = self.registry_kv.get("version")
        rev = None if rv is None else rv[1]
        if rev != self._registry_rev:
            self._registry_rev = rev
            self._registry_changed.set()

    def _apply_leases(self) -> None:
        """Between rounds: stop fetching partitions lost or to be given back, hand the
        store's bucket locks back before anyone may take them, give the leases up,
        bind newly taken partitions, reload the registry if it changed."""
        if self._keeper.inline_due():  # no keeper thread (step() driven alone)
            self._lease_round()
        if self._registry_changed.is_set():
            self._registry_changed.clear()
            with self._lock:
                self.refresh()
        lost, leaving = self.leases.changes()
        if lost or leaving:
            for p in lost | leaving:
                self._drop(p)
            with self._lock:
                self.on_release()
            self.leases.give_back(leaving)
        for p in self.leases.owned - set(self._consumers):
            try:
                self._bind(p)
            except Exception as exc:  # noqa: BLE001 - next round tries again
                log.debug("partition %d: bind failed: %s", p, exc)

    def _bind(self, p: int) -> None:
        old = self._consumers.pop(p, None)
        if old is not None:
            old.close()
        self._consumers[p] = self.bus.consumer(
            INGEST_STREAM, f"ingest-{p}", filter_subject=ingest_subject(p),
            ack_wait_s=self.config.ack_wait_s)

    def _drop(self, p: int) -> None:
        c = self._consumers.pop(p, None)
        if c is not None:
            c.close()

    def release_all(self) -> None:
        """Give every lease back at once (clean shutdown: others take over now)."""
        owned = set(self._consumers) | self.leases.owned
        for p in owned:
            self._drop(p)
        if owned:
            with self._lock:
                self.on_release()
        self.leases.release_all()

    # ----------------------------------------------------------------- work

    def step(self) -> int:
        """One round: leases (every lease_ttl/3), registry check, fetch and ingest.

        Every owned partition is fetched; what the round got is ingested as **one
        batch** (frames concatenated: one decode, one store append per bucket, one
        third-party publish), then acknowledged at once. While everything is empty the
        round waits at most ``idle_fetch_s`` for a first message on all partitions at
        once (:func:`~headend.bus.base.fetch_first`: returned as soon as it arrives);
        then every partition is asked, all at once, for what it holds without waiting
        (within ``batch`` messages and ``batch_bytes``).

        Returns the number of messages acknowledged.
        """
        self._apply_leases()
        if not self._consumers:
            time.sleep(self.config.idle_fetch_s)
            return 0
        # wait for a first message on any owned partition (returns as soon as one
        # arrives); then collect what every owned partition holds without waiting
        started = time.monotonic()
        msgs = self._fetch_first()
        waited = time.monotonic() - started
        if msgs:
            end = time.monotonic() + self.config.linger_s
            size = sum(len(m.data) for m in msgs)
            while len(msgs) < self.config.batch and size < self.config.batch_bytes:
                got = self._fetch_each(self.config.batch - len(msgs),
                                       self.config.batch_bytes - size)
                msgs.extend(got)
                size += sum(len(m.data) for m in got)
                if not got or time.monotonic() >= end:
                    break
        if not msgs:
            return 0
        fetched = time.monotonic()
        done = self._process(msgs)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("round: %d messages, %d bytes; waited %.4f s, fetched %.4f s, "
                      "processed %.4f s", len(msgs), size, waited, fetched - started - waited,
                      time.monotonic() - fetched)
        return done

    def _fetch_first(self) -> list[Message]:
        """Messages of the first owned partition that has some, waiting at most
        ``idle_fetch_s`` on all of them at once."""
        items = list(self._consumers.items())
        try:
            got = fetch_first([c for _, c in items], self.config.idle_fetch_s)
        except Exception as exc:  # noqa: BLE001 - e.g. a consumer offline after a node loss
            log.warning("fetch failed (%s); re-binding the consumers", exc)
            for p, _ in items:
                self._rebind(p)
            return []
        self._note_sizes(got)
        return got

    def _fetch_each(self, room: int, room_bytes: int) -> list[Message]:
        """Up to ``room`` messages and about ``room_bytes`` bytes from the owned
        partitions, asked all at once without waiting (each partition gets an equal
        share, judged by the largest message it had; the caller asks again while the
        round has room)."""
        items = list(self._consumers.items())
        if not items:
            return []
        share = max(room_bytes // len(items), 1)
        want = [min(room, max(share // self._msg_size.get(p, _FIRST_SIZE_GUESS), 1))
                for p, _ in items]
        out: list[Message] = []
        for (p, _), got in zip(items, fetch_each([(c, n) for (_, c), n in zip(items, want,
                                                                               strict=True)],
                                                 _BUSY_WAIT_S), strict=True):
            if isinstance(got, Exception):
                log.warning("partition %d: fetch failed (%s); re-binding its consumer", p, got)
                self._rebind(p)
                continue
            out.extend(got)
        self._note_sizes(out)
        return out

    def _note_sizes(self, msgs: list[Message]) -> None:
        """Remember the largest message size per partition (decaying) [bytes]."""
        for m in msgs:
            p = _partition_of(m.subject)
            self._msg_size[p] = max(len(m.data), self._msg_size.get(p, 0) * 7 // 8, 1)

    def _rebind(self, p: int) -> None:
        try:
            self._bind(p)
        except Exception:  # noqa: BLE001 - the next round binds it again
            self._consumers.pop(p, None)

    def _process(self, msgs: list[Message]) -> int:
        """Ingest and acknowledge a round's messages (heartbeat while it lasts); returns
        how many were acknowledged."""
        with self._beat.working(msgs):
            alone = [m for m in msgs if m.num_delivered >= self.config.max_deliveries]
            rest = [m for m in msgs if m.num_delivered < self.config.max_deliveries]
            frames = [m for m in rest if H_REPLY not in m.headers
                      and m.headers.get(H_CT, "").startswith("application/octet-stream")]
            framed = {id(m) for m in frames}
            singles = [m for m in rest if id(m) not in framed]
            done = 0
            # frames concatenate: one ingest, one store append per bucket; the batch
            # carries the source of its oldest upload. Redelivered frames go apart: a
            # worker may have died after storing them and before publishing them, so
            # their rows are published again (at least once, never lost)
            for part, again in (([m for m in frames if m.num_delivered <= 1], False),
                                ([m for m in frames if m.num_delivered > 1], True)):
                if part:
                    done += self._ingest_frames(part, again)
            # uploads waiting for an answer, CSV, and messages delivered max_deliveries
            # times (split from their round: ingested alone)
            for m in singles + alone:
                done += self._ingest_one(m, m.num_delivered > 1)
        return done

    def _ingest_frames(self, part: list[Message], again: bool) -> int:
        started = time.monotonic()
        try:
            res = self._ingest(b"".join(m.data for m in part),
                               part[0].headers.get(H_SOURCE, "uplink"),
                               "application/octet-stream", again)
        except ENVIRONMENT_ERRORS as exc:
            log.warning("ingest of %d frames failed (%s); they will be redelivered",
                        len(part), exc)
            self._beat.forget(part)
            return 0
        except Exception as exc:  # noqa: BLE001 - one of them may be poison: split
            if len(part) == 1:
                return self._failed(part[0], exc)
            log.warning("ingest of %d frames failed (%r); ingesting them one by one",
                        len(part), exc)
            # rows of the failed batch may be stored already: publish them again
            return sum(self._ingest_one(m, True) for m in part)
        ingested = time.monotonic()
        ack_all(part)  # after the append returned: durable
        self._beat.forget(part)
        log.debug("ingested %.4f s, acknowledged %.4f s", ingested - started,
                  time.monotonic() - ingested)
        self._report(res, len(part), len(part) if again else 0)
        return len(part)

    def _ingest_one(self, m: Message, again: bool) -> int:
        """Ingest one message alone, answer its upload if it waits, acknowledge."""
        try:
            res = self._ingest(m.data, m.headers.get(H_SOURCE, "upload" if H_REPLY in
                                                       m.headers else "uplink"),
                               m.headers.get(H_CT), again)
        except Exception as exc:  # noqa: BLE001 - judged by _failed
            return self._failed(m, exc)
        try:
            self._answer(m, res)
        except Exception as exc:  # noqa: BLE001 - the answer is owed: redelivered
            log.warning("could not publish the result of an upload (%s)", exc)
            self._beat.forget([m])
            return 0
        m.ack()
        self._beat.forget([m])
        self._report(res, 1, 1 if again else 0)
        return 1

    def _answer(self, m: Message, result: IngestResult) -> None:
        """Publish the counts of an upload part whose uploader waits for them. Result
        first, then ack: a lost ack costs a redelivery (counted as duplicates, the
        waiter already has its answer), never a lost answer."""
        if H_REPLY in m.headers:
            self.bus.publish(m.headers[H_REPLY], json.dumps(result.to_dict()).encode(),
                             {H_UPLOAD: m.headers.get(H_UPLOAD, "")})

    def _failed(self, m: Message, exc: BaseException) -> int:
        """A message failed alone: leave it for redelivery, or quarantine and
        acknowledge it once it was delivered ``max_deliveries`` times."""
        self._beat.forget([m])
        n, limit = m.num_delivered, self.config.max_deliveries
        if isinstance(exc, ENVIRONMENT_ERRORS) or n < limit or self.quarantine is None:
            log.warning("message %s #%d failed alone at delivery %d of %d (%r); it will be "
                        "redelivered%s", m.subject, m.seq, n, limit, exc,
                        "" if self.quarantine is not None or n < limit
                        else " (no quarantine configured: the partition is stalled)")
            return 0
        from headend.wire.csvfmt.rejects import make_rejects

        ct = m.headers.get(H_CT, "")
        kind = "frame" if ct.startswith("application/octet-stream") else "file"
        detail = (f"ingest failed {n} times, alone at the last: {type(exc).__name__}: {exc} "
                  f"(bus subject {m.subject}, sequence {m.seq}, content type {ct or '-'})")
        rows = make_rejects(m.headers.get(H_SOURCE, "uplink"), kind, INGEST_FAILED, detail,
                            payload=m.data,
                            received_at=int(m.stored_at) if m.stored_at else None)
        try:
            self.quarantine.append(rows)
            result = IngestResult(quarantined=1, by_reason=Counter({INGEST_FAILED: 1}))
            self._answer(m, result)
        except Exception as qexc:  # noqa: BLE001 - not quarantined: not acknowledged
            log.error("could not quarantine poison message %s #%d (%s)", m.subject, m.seq, qexc)
            return 0
        log.error("quarantined poison message %s #%d after %d deliveries: %r", m.subject,
                  m.seq, n, exc)
        m.ack()
        self._report(result, 1, 1)
        return 1

    def _ingest(self, data: bytes, source: str, content_type: str | None,
                redelivery: bool = False) -> IngestResult:
        with self._lock:
            if redelivery:  # ingest callables take it as a keyword when it matters
                return self.ingest(data, source, content_type, redelivery=True)
            return self.ingest(data, source, content_type)

    def _report(self, res: IngestResult, n: int, redelivered: int) -> None:
        if self._on_result is not None:
            self._on_result(res, n, redelivered)

    def lag(self) -> int:
        """Messages waiting in the partitions this worker owns."""
        return sum(c.pending() for c in list(self._consumers.values()))

    def run(self) -> None:
        """Work until :meth:`stop`; then give the leases back."""
        self._keeper.start()
        try:
            work_until(self._stop, self.step, f"worker {self.worker_id}")
        finally:
            self._stop.set()
            self._beat.close()
            self._keeper.stop()
            try:
                self.release_all()
            except Exception:  # noqa: BLE001 - the bus may be gone; leases then expire
                log.warning("could not release leases; they expire after the TTL")

    def stop(self) -> None:
        self._stop.set()
