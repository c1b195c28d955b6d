"""The durable in-process bus (``file://``, :mod:`headend.bus.log`): what the
conformance suite cannot see, because it needs a reopen, a clock or a second process.

* consumer positions, acknowledged sets, delivery counts and key-value entries (with
  their TTL on the wall clock) survive closing and reopening the directory;
* messages removed by the age and size limits before a durable consumer acknowledged
  them are counted (:meth:`Bus.dropped`), and the count survives a reopen;
* a second process opening the same directory is refused by the ``LOCK``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headend.bus import StreamSpec
from headend.bus.log import LOCK_FILE, LogBus
from headend.errors import ConfigError

STREAM = "OUT"
SPEC = StreamSpec(STREAM, ("o.>",), max_age_s=3600.0)


class Wall:
    """A settable wall clock [Unix s]."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _open(path: Path, wall: Wall | None = None) -> LogBus:
    bus = LogBus(path, wall=wall or Wall())
    bus.ensure_stream(SPEC)
    return bus


def test_positions_acks_and_delivery_counts_survive_a_reopen(tmp_path: Path) -> None:
    bus = _open(tmp_path)
    bus.publish_many([(f"o.{i}", b"%d" % i, {"n": str(i)}) for i in range(1, 7)])
    c = bus.consumer(STREAM, "d", filter_subject="o.>")
    got = c.fetch(4, 1.0)
    assert [m.seq for m in got] == [1, 2, 3, 4]
    got[0].ack()  # the floor moves to 1
    got[2].ack()  # 3 acknowledged above the floor (2 is still open)
    bus.close()

    bus = _open(tmp_path)
    c = bus.consumer(STREAM, "d", filter_subject="o.>")
    again = c.fetch(10, 1.0)
    # 2 and 4 were delivered once and not acknowledged: delivered again, counting on;
    # 3 (acknowledged) is not; 5 and 6 come for the first time
    assert [(m.seq, m.num_delivered) for m in again] == [(2, 2), (4, 2), (5, 1), (6, 1)]
    assert again[0].data == b"2" and again[0].headers == {"n": "2"}
    for m in again[:2]:
        m.ack()
    bus.close()

    bus = _open(tmp_path)
    c = bus.consumer(STREAM, "d", filter_subject="o.>")
    last = c.fetch(10, 1.0)
    assert [(m.seq, m.num_delivered) for m in last] == [(5, 2), (6, 2)]
    for m in last:
        m.ack()
    assert c.pending() == 0
    bus.close()
    # everything acknowledged: nothing is delivered again after another reopen, and a
    # new publish continues the sequence
    bus = _open(tmp_path)
    c = bus.consumer(STREAM, "d", filter_subject="o.>")
    assert c.fetch(10, 0.2) == []
    assert bus.publish("o.7", b"7") == 7
    assert [m.seq for m in c.fetch(10, 1.0)] == [7]
    bus.close()


def test_max_deliver_counts_deliveries_across_reopens(tmp_path: Path) -> None:
    """A message that kills its consumer every time is ended after max_deliver
    deliveries, even though every delivery happened in another process life."""
    bus = _open(tmp_path)
    bus.publish("o.poison", b"x")
    bus.publish("o.fine", b"y")
    for n in (1, 2):
        c = bus.consumer(STREAM, "w", filter_subject="o.>", max_deliver=2)
        (m,) = c.fetch(1, 1.0)
        assert (m.seq, m.num_delivered) == (1, n)
        bus.close()  # "killed" before acknowledging
        bus = _open(tmp_path)
    c = bus.consumer(STREAM, "w", filter_subject="o.>", max_deliver=2)
    got = c.fetch(10, 1.0)
    assert [m.data for m in got] == [b"y"]  # the poison one is over; the next comes
    bus.close()


def test_key_value_entries_and_their_ttl_survive_a_reopen(tmp_path: Path) -> None:
    wall = Wall()
    bus = _open(tmp_path, wall)
    kv = bus.kv("leases", ttl_s=10.0)
    rev = kv.create("p.0", b"worker-a")
    assert rev is not None
    assert kv.create("p.1", b"worker-a") is not None
    forever = bus.kv("registry", ttl_s=0)
    assert forever.create("version", b"3") is not None
    bus.close()

    wall.t += 6.0  # the lease was written 6 s before this process started
    bus = _open(tmp_path, wall)
    kv = bus.kv("leases", ttl_s=10.0)
    assert kv.get("p.0") == (b"worker-a", rev)
    assert kv.create("p.0", b"worker-b") is None  # still held
    assert kv.update("p.1", b"worker-a", 999) is None  # compare-and-set holds too
    new = kv.update("p.1", b"worker-a", rev + 1)  # refreshed now: lives 10 s more
    assert new is not None and new > rev  # revisions grow across the reopen
    bus.close()

    wall.t += 5.0  # 11 s after p.0 was written, 5 s after p.1 was refreshed
    bus = _open(tmp_path, wall)
    kv = bus.kv("leases", ttl_s=10.0)
    assert kv.get("p.0") is None  # expired on the wall clock, across the restart
    assert kv.get("p.1") == (b"worker-a", new)
    assert kv.keys() == ["p.1"]
    assert kv.create("p.0", b"worker-b") is not None  # free to take
    assert bus.kv("registry", ttl_s=0).get("version") is not None  # no TTL: kept
    wall.t += 1e6
    assert bus.kv("registry", ttl_s=0).get("version") is not None
    bus.close()


def test_drops_by_size_are_counted_and_the_count_survives_a_reopen(tmp_path: Path) -> None:
    spec = StreamSpec("CAP", ("c.>",), max_bytes=1000)
    bus = LogBus(tmp_path)
    bus.ensure_stream(spec)
    slow = bus.consumer("CAP", "slow", filter_subject="c.>")
    other = bus.consumer("CAP", "other", filter_subject="c.b")  # sees half of them
    body = b"x" * 97  # 100 bytes with the 3-byte subject
    bus.publish_many([(f"c.{'ab'[i % 2]}", body, None) for i in range(10)])
    assert bus.dropped() == {("CAP", "slow"): 0, ("CAP", "other"): 0}
    bus.publish_many([("c.a", body, None), ("c.b", body, None)])  # 1200 bytes: 2 go
    assert bus.dropped() == {("CAP", "slow"): 2, ("CAP", "other"): 1}
    got = slow.fetch(100, 1.0)
    assert [m.seq for m in got] == list(range(3, 13))  # the 10 newest
    for m in got:
        m.ack()
    bus.publish_many([("c.a", body, None), ("c.b", body, None)])  # acked by slow: free
    assert bus.dropped() == {("CAP", "slow"): 2, ("CAP", "other"): 2}
    bus.close()

    bus = LogBus(tmp_path)
    assert bus.dropped() == {("CAP", "slow"): 2, ("CAP", "other"): 2}
    # the limit still holds after the reopen: 5 (c.a) and 6 (c.b) go
    bus.publish_many([("c.b", body, None), ("c.b", body, None)])
    assert bus.dropped() == {("CAP", "slow"): 2, ("CAP", "other"): 3}
    other = bus.consumer("CAP", "other", filter_subject="c.b")
    assert [m.seq for m in other.fetch(100, 1.0)] == [8, 10, 12, 14, 15, 16]
    bus.close()


def test_drops_by_age_while_closed_are_counted_at_the_reopen(tmp_path: Path) -> None:
    wall = Wall()
    bus = LogBus(tmp_path, wall=wall)
    bus.ensure_stream(StreamSpec("AGE", ("a.>",), max_age_s=100.0))
    c = bus.consumer("AGE", "d", filter_subject="a.>")
    bus.publish_many([("a.x", b"old", None)] * 3)
    (first,) = c.fetch(1, 1.0)
    first.ack()
    wall.t += 60.0
    bus.publish_many([("a.x", b"new", None)] * 2)
    bus.close()

    wall.t += 50.0  # the 3 old ones are 110 s old now, the new ones 50 s
    bus = LogBus(tmp_path, wall=wall)
    # removed at the open; the consumer had acknowledged one of them
    assert bus.dropped() == {("AGE", "d"): 2}
    c = bus.consumer("AGE", "d", filter_subject="a.>")
    got = c.fetch(10, 1.0)
    assert [(m.seq, m.data) for m in got] == [(4, b"new"), (5, b"new")]
    bus.close()
    bus = LogBus(tmp_path, wall=wall)
    assert bus.dropped() == {("AGE", "d"): 2}
    bus.close()


_OPEN_IN_CHILD = """
import sys
from headend.bus.log import LogBus
from headend.errors import ConfigError
try:
    LogBus(sys.argv[1])
except ConfigError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def test_a_second_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    bus = _open(tmp_path)
    bus.publish("o.1", b"mine")
    child = subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, str(tmp_path)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert child.returncode == 3, child.stdout + child.stderr
    assert "in use by another process" in child.stdout
    assert f"pid {os.getpid()}" in child.stdout  # the owner is named
    with pytest.raises(ConfigError):  # and in this process too
        LogBus(tmp_path)
    assert (tmp_path / LOCK_FILE).exists()
    # the refused opens changed nothing: the owner goes on
    assert bus.publish("o.2", b"mine too") == 2
    bus.close()
    # once the owner closed, another process may open it
    child = subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, str(tmp_path)],
                           check=False, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and "opened" in child.stdout, child.stderr
