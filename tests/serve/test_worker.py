"""Ingest workers on the in-process bus: rounds bounded in bytes, leases shared out and
taken over. (Workers on NATS: test_scaleout.py.)"""

from __future__ import annotations

from typing import Any

from headend.bus.memory import MemoryBus
from headend.serve.leases import PartitionLeases
from headend.serve.subjects import ingest_subject
from headend.serve.worker import H_CT, H_SOURCE, LEASE_BUCKET, IngestWorker, WorkerConfig


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
        return {"accepted": len(data)}

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
        return {"accepted": 1}

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
