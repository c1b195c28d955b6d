"""Ingest workers on the in-process bus: rounds bounded in bytes, leases shared out and
taken over. (Workers on NATS: test_scaleout.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from headend.bus.memory import MemoryBus
from headend.errors import StorageError
from headend.ingest.result import IngestResult
from headend.model.reasons import INGEST_FAILED
from headend.serve.leases import PartitionLeases
from headend.serve.subjects import ingest_subject
from headend.serve.worker import (
    H_CT,
    H_SOURCE,
    INGEST_STREAM,
    LEASE_BUCKET,
    IngestWorker,
    WorkerConfig,
)
from headend.store import QuarantineStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rounds_are_bounded_in_bytes_and_everything_is_acknowledged() -> None:
    bus = MemoryBus()
    batches: list[bytes] = []

    def ingest(data: bytes, source: str, content_type: str | None) -> Any:
        batches.append(data)
        return IngestResult(accepted=len(data))

    w = IngestWorker(bus, ingest, config=WorkerConfig(partitions=2, batch_bytes=3000,
                                                      idle_fetch_s=0.01))
    for i in range(10):  # 1,000-byte frames on both partitions
        bus.publish(ingest_subject(i % 2), bytes([i]) * 1000,
                    {H_CT: "application/octet-stream", H_SOURCE: "t"})
    acked = 0
    for _ in range(20):
        acked += w.step()
    assert acked == 10
    assert sorted(b[k] for b in batches for k in range(0, len(b), 1000)) == list(range(10))
    # a round stops once it holds batch_bytes (it may take one message more per partition)
    assert len(batches) >= 3 and max(len(b) for b in batches) <= 4000
    assert w.step() == 0  # nothing redelivered: all acknowledged
    w.release_all()


def test_leases_shared_out_given_back_and_taken_over_after_expiry() -> None:
    clock = Clock()
    bus = MemoryBus(clock=clock)
    kv = bus.kv(LEASE_BUCKET, ttl_s=6.0)
    a, b = PartitionLeases(kv, "a", 4), PartitionLeases(kv, "b", 4)
    a.round()
    assert a.owned == {0, 1, 2, 3}
    b.round()  # two workers now: b aims at 2, all are taken yet
    assert b.owned == set()
    a.round()  # a marks its surplus; the loop lets go of it, then gives it back
    lost, leaving = a.changes()
    assert lost == set() and len(leaving) == 2 and leaving <= a.owned
    a.give_back(leaving)
    b.round()
    assert a.owned.isdisjoint(b.owned) and a.owned | b.owned == {0, 1, 2, 3}
    clock.t += 4.0  # b stops refreshing (paused); a goes on
    a.round()
    clock.t += 3.0  # b's leases (and heartbeat) expired: a takes its partitions
    a.round()
    assert a.owned == {0, 1, 2, 3} and a.changes()[0] == set()
    b.round()  # b finds out: its partitions are lost (stop fetching, release)
    lost, _ = b.changes()
    assert len(lost) == 2 and b.owned.isdisjoint(lost) and b.owned == set()


def test_a_redelivered_message_is_ingested_as_a_redelivery() -> None:
    """A message whose first ingest did not end in an acknowledgement (the worker died
    or failed after the append, maybe before publishing) comes back after ack_wait and
    is ingested with ``redelivery=True``, so its rows are published again."""
    clock = Clock()
    bus = MemoryBus(clock=clock)
    calls: list[tuple[bytes, bool]] = []
    fail = [True]

    def ingest(data: bytes, source: str, content_type: str | None, *,
               redelivery: bool = False) -> Any:
        calls.append((data, redelivery))
        if fail[0]:
            fail[0] = False
            raise OSError("died after the append")
        return IngestResult(accepted=1)

    w = IngestWorker(bus, ingest, config=WorkerConfig(partitions=1, idle_fetch_s=0.01,
                                                      ack_wait_s=5.0))
    bus.publish(ingest_subject(0), b"frame-1", {H_CT: "application/octet-stream",
                                                H_SOURCE: "t"})
    assert w.step() == 0  # ingest failed: not acknowledged
    clock.t += 6.0  # past ack_wait: delivered again
    bus.publish(ingest_subject(0), b"frame-2", {H_CT: "application/octet-stream",
                                                H_SOURCE: "t"})
    acked = 0
    for _ in range(5):
        acked += w.step()
    assert acked == 2
    # the fresh frame and the redelivered one are ingested apart, flagged accordingly
    assert sorted(calls[1:]) == [(b"frame-1", True), (b"frame-2", False)]
    w.release_all()


def test_a_poison_message_is_quarantined_after_max_deliveries_and_the_rest_moves_on(
        data_dir: Path) -> None:
    """One message of a round makes every ingest holding it fail: the good ones of its
    round are stored at once, the poison one is redelivered, and after max_deliveries
    it is quarantined with its reason and acknowledged; later messages go through."""
    clock = Clock()
    bus = MemoryBus(clock=clock)
    stored: list[bytes] = []

    def ingest(data: bytes, source: str, content_type: str | None, *,
               redelivery: bool = False) -> Any:
        if b"POISON" in data:
            raise ValueError("index 7 is out of bounds for axis 0 with size 7")
        stored.extend(data[i:i + 4] for i in range(0, len(data), 4))
        return IngestResult(accepted=len(data) // 4)

    quarantine = QuarantineStore(data_dir)
    w = IngestWorker(bus, ingest, quarantine=quarantine,
                     config=WorkerConfig(partitions=1, idle_fetch_s=0.01, ack_wait_s=5.0,
                                         max_deliveries=3))
    hdr = {H_CT: "application/octet-stream", H_SOURCE: "c-501"}
    for body in (b"AAAA", b"BBBB", b"POISON", b"CCCC"):
        bus.publish(ingest_subject(0), body, hdr)
    assert w.step() == 3  # concatenated ingest failed; alone, three of four went through
    assert sorted(stored) == [b"AAAA", b"BBBB", b"CCCC"]
    for delivery in (2, 3):
        clock.t += 6.0  # past ack_wait: the poison message comes back
        assert w.step() == (1 if delivery == 3 else 0)
        assert len(quarantine.list()) == (1 if delivery == 3 else 0)
    q = quarantine.list()
    assert q.column("reason").to_pylist() == [INGEST_FAILED]
    assert q.column("kind").to_pylist() == ["frame"]
    assert q.column("payload").to_pylist() == [b"POISON"]
    assert q.column("source").to_pylist() == ["c-501"]
    assert "ValueError: index 7 is out of bounds" in q.column("detail")[0].as_py()
    assert "3 times" in q.column("detail")[0].as_py()
    # the partition keeps going: nothing left to redeliver, new messages are stored
    clock.t += 6.0
    bus.publish(ingest_subject(0), b"DDDD", hdr)
    assert sum(w.step() for _ in range(3)) == 1
    assert sorted(stored) == [b"AAAA", b"BBBB", b"CCCC", b"DDDD"]
    clock.t += 6.0
    assert w.step() == 0
    w.release_all()


def test_an_environment_failure_is_never_quarantined() -> None:
    """A store that fails (not the message) leaves everything for redelivery, however
    often it was delivered."""
    clock = Clock()
    bus = MemoryBus(clock=clock)
    fail = [True]

    def ingest(data: bytes, source: str, content_type: str | None, *,
               redelivery: bool = False) -> Any:
        if fail[0]:
            raise StorageError("bucket 3 is locked by another process")
        return IngestResult(accepted=1)

    quarantine: list[Any] = []
    w = IngestWorker(bus, ingest, quarantine=SimpleNamespace(append=quarantine.append),
                     config=WorkerConfig(partitions=1, idle_fetch_s=0.01, ack_wait_s=5.0,
                                         max_deliveries=2))
    for body in (b"A", b"B"):
        bus.publish(ingest_subject(0), body, {H_CT: "application/octet-stream"})
    for _ in range(4):
        assert w.step() == 0
        clock.t += 6.0
    assert quarantine == []
    fail[0] = False
    assert w.step() == 2
    w.release_all()


def test_a_long_batch_keeps_its_messages_by_in_progress_heartbeats() -> None:
    """ack_wait is short; a batch that takes several ack_waits is not delivered to
    anyone else meanwhile (the heartbeat restarts ack_wait), and is acknowledged once."""
    bus = MemoryBus()  # real clock: the heartbeat thread runs in real time
    ack_wait = 0.4
    seen: list[list[bytes]] = []
    started = threading.Event()

    def slow_ingest(data: bytes, source: str, content_type: str | None, *,
                    redelivery: bool = False) -> Any:
        started.set()
        time.sleep(4 * ack_wait)
        return IngestResult(accepted=1)

    w = IngestWorker(bus, slow_ingest, config=WorkerConfig(partitions=1, idle_fetch_s=0.01,
                                                           ack_wait_s=ack_wait))
    bus.publish(ingest_subject(0), b"frame", {H_CT: "application/octet-stream"})
    other = bus.consumer(INGEST_STREAM, "ingest-0", filter_subject=ingest_subject(0),
                         ack_wait_s=ack_wait)

    def steal() -> None:  # another fetcher of the partition's consumer
        started.wait(5)
        t_end = time.monotonic() + 3 * ack_wait
        while time.monotonic() < t_end:
            seen.append([m.data for m in other.fetch(10, 0.05)])

    thief = threading.Thread(target=steal)
    thief.start()
    assert w.step() == 1
    thief.join()
    assert not any(seen)  # never redelivered while the worker was busy with it
    assert w._beat.beats >= 3
    time.sleep(2 * ack_wait)
    assert other.fetch(10, 0.05) == []  # acknowledged: gone
    w.release_all()
    w._beat.close()
