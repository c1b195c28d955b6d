"""Conformance suite of the bus port, run over every adapter."""

from __future__ import annotations

import threading
import time

from headend.bus import Bus, StreamSpec, ack_all, fetch_each, fetch_first, subject_matches


def _stream(bus: Bus, uniq: str, *, work_queue: bool = False) -> str:
    name = f"T{uniq}"
    bus.ensure_stream(StreamSpec(name, (f"t{uniq}.>",), work_queue=work_queue, max_age_s=300))
    return name


def _cleanup(bus: Bus, name: str) -> None:
    if hasattr(bus, "delete_stream"):
        bus.delete_stream(name)


def test_subject_matches() -> None:
    assert subject_matches("a.*.c", "a.b.c")
    assert not subject_matches("a.*.c", "a.b.d")
    assert subject_matches("a.>", "a.b.c")
    assert not subject_matches("a.>", "a")
    assert not subject_matches("a.b", "a.b.c")
    assert subject_matches(">", "x")


def test_publish_fetch_ack_in_order(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        seqs = bus.publish_many([(f"t{uniq}.a.{i}", b"%d" % i, {"k": str(i)}) for i in range(5)])
        assert seqs == [1, 2, 3, 4, 5]
        c = bus.consumer(name, "d1", filter_subject=f"t{uniq}.a.>")
        got = c.fetch(10, 2.0)
        assert [m.data for m in got] == [b"0", b"1", b"2", b"3", b"4"]
        assert [m.headers["k"] for m in got] == ["0", "1", "2", "3", "4"]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        for m in got:
            m.ack()
        assert c.fetch(10, 0.3) == []
        assert c.pending() == 0
        c.close()
    finally:
        _cleanup(bus, name)


def test_filter_subject(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        bus.publish(f"t{uniq}.x.1", b"x1")
        bus.publish(f"t{uniq}.y.1", b"y1")
        bus.publish(f"t{uniq}.x.2", b"x2")
        c = bus.consumer(name, None, filter_subject=f"t{uniq}.x.*")
        assert [m.data for m in c.fetch(10, 2.0)] == [b"x1", b"x2"]
        c.close()
    finally:
        _cleanup(bus, name)


def test_unacked_is_redelivered_to_the_next_fetcher(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq, work_queue=True)
    try:
        bus.publish(f"t{uniq}.a", b"one")
        c1 = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0)
        (m,) = c1.fetch(1, 2.0)
        assert m.num_delivered == 1
        # c1 "dies" without acking; another process binds the same durable
        c2 = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0)
        # one long pull (not a loop of short ones, whose expired pull requests the
        # server may still answer): the redelivery comes once ack_wait (1 s) has passed
        got = c2.fetch(1, 6.0)
        assert [x.data for x in got] == [b"one"]
        assert got[0].num_delivered == 2
        got[0].ack()
        assert c2.fetch(1, 1.5) == []
    finally:
        _cleanup(bus, name)


def test_durable_resumes_where_it_stopped(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        for i in range(4):
            bus.publish(f"t{uniq}.a", b"%d" % i)
        c = bus.consumer(name, "sub", filter_subject=f"t{uniq}.>")
        for m in c.fetch(2, 2.0):
            m.ack()
        c.close()
        bus.publish(f"t{uniq}.a", b"4")
        c = bus.consumer(name, "sub", filter_subject=f"t{uniq}.>")
        assert [m.data for m in c.fetch(10, 2.0)] == [b"2", b"3", b"4"]
    finally:
        _cleanup(bus, name)


def test_ephemeral_from_start_seq(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        for i in range(5):
            bus.publish(f"t{uniq}.a", b"%d" % i)
        c = bus.consumer(name, None, filter_subject=f"t{uniq}.>", start_seq=4)
        assert [(m.seq, m.data) for m in c.fetch(10, 2.0)] == [(4, b"3"), (5, b"4")]
        c.close()
    finally:
        _cleanup(bus, name)


def test_kv_compare_and_set_and_ttl(bus: Bus, uniq: str) -> None:
    kv = bus.kv(f"kv{uniq}", ttl_s=1.0)
    try:
        r1 = kv.create("p0", b"w1")
        assert r1 is not None
        assert kv.create("p0", b"w2") is None
        assert kv.get("p0") == (b"w1", r1)
        r2 = kv.update("p0", b"w1", r1)
        assert r2 is not None and r2 > r1
        assert kv.update("p0", b"w2", r1) is None
        assert kv.keys() == ["p0"]
        time.sleep(1.6)
        assert kv.get("p0") is None
        assert kv.create("p0", b"w2") is not None
        kv.delete("p0")
        assert kv.get("p0") is None
        assert kv.create("p0", b"w3") is not None
    finally:
        if hasattr(bus, "js"):
            bus._loop.run(bus.js.delete_key_value(f"kv{uniq}"))  # type: ignore[attr-defined]


def test_ephemeral_new_only(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        bus.publish(f"t{uniq}.a", b"old")
        c = bus.consumer(name, None, filter_subject=f"t{uniq}.>", start_seq=0)
        bus.publish(f"t{uniq}.a", b"new")
        assert [m.data for m in c.fetch(10, 2.0)] == [b"new"]
        c.close()
    finally:
        _cleanup(bus, name)


def test_retention_keeps_the_newest(bus: Bus, uniq: str) -> None:
    name = f"T{uniq}"
    bus.ensure_stream(StreamSpec(name, (f"t{uniq}.>",), max_msgs=3))
    try:
        for i in range(5):
            bus.publish(f"t{uniq}.a", b"%d" % i)
        c = bus.consumer(name, None, filter_subject=f"t{uniq}.>")
        assert [(m.seq, m.data) for m in c.fetch(10, 2.0)] == [(3, b"2"), (4, b"3"), (5, b"4")]
        c.close()
    finally:
        _cleanup(bus, name)


def test_publish_to_no_stream_raises(bus: Bus, uniq: str) -> None:
    import pytest

    from headend.errors import PublishError

    if hasattr(bus, "publish_retry_s"):
        bus.publish_retry_s = 0.5  # type: ignore[attr-defined]
    with pytest.raises(PublishError):
        bus.publish(f"nostream{uniq}.x", b"1")


def test_stored_at_is_the_stream_time(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq)
    try:
        before = time.time()
        bus.publish(f"t{uniq}.a", b"x")
        after = time.time()
        c = bus.consumer(name, None, filter_subject=f"t{uniq}.>")
        (m,) = c.fetch(1, 2.0)
        # the server's clock and ours may differ by a little on one machine
        assert before - 1.0 <= m.stored_at <= after + 1.0
        c.close()
    finally:
        _cleanup(bus, name)


def test_fetch_first_returns_the_partition_that_has_messages(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq, work_queue=True)
    try:
        cs = [bus.consumer(name, f"p{i}", filter_subject=f"t{uniq}.{i}") for i in range(3)]
        assert fetch_first(cs, 0.3) == []
        bus.publish(f"t{uniq}.2", b"a")
        bus.publish(f"t{uniq}.2", b"b")
        got = fetch_first(cs, 5.0)
        assert [m.data for m in got] == [b"a"]
        # the rest of the partition comes with the next fetch, in order
        rest = [r for r in fetch_each([(c, 10) for c in cs], 1.0) if isinstance(r, list)]
        assert [[m.data for m in r] for r in rest] == [[], [], [b"b"]]
        ack_all(got + rest[2])
        for c in cs:
            c.close()
    finally:
        _cleanup(bus, name)


def test_fetch_first_wakes_on_a_late_message_and_loses_none(bus: Bus, uniq: str) -> None:
    """A message published while fetch_first waits is returned at once; messages that
    pull requests of an earlier fetch_first received are returned by later fetches,
    never dropped (all 40 come back before ack_wait)."""
    name = _stream(bus, uniq, work_queue=True)
    try:
        cs = [bus.consumer(name, f"p{i}", filter_subject=f"t{uniq}.{i}", ack_wait_s=30.0)
              for i in range(4)]
        threading.Timer(0.3, bus.publish, (f"t{uniq}.1", b"late")).start()
        t0 = time.monotonic()
        got = fetch_first(cs, 30.0)
        # returned when the message came, not at the end of the wait
        assert [m.data for m in got] == [b"late"] and time.monotonic() - t0 < 20.0
        ack_all(got)
        sent = {f"{i}-{k}".encode() for i in range(4) for k in range(10)}
        for d in sorted(sent):
            bus.publish(f"t{uniq}.{d.decode()[0]}", d)
        seen: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(seen) < len(sent) and time.monotonic() < deadline:
            first = fetch_first(cs, 0.05)
            more = [m for r in fetch_each([(c, 3) for c in cs], 0.01)
                    if isinstance(r, list) for m in r]
            seen.extend(m.data for m in first + more)
            ack_all(first + more)
        assert sorted(seen) == sorted(sent)
        for c in cs:
            c.close()
    finally:
        _cleanup(bus, name)


def test_in_progress_holds_off_redelivery(bus: Bus, uniq: str) -> None:
    name = _stream(bus, uniq, work_queue=True)
    try:
        bus.publish(f"t{uniq}.a", b"busy")
        c1 = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0)
        (m,) = c1.fetch(1, 2.0)
        # a live worker reports progress for longer than ack_wait: no redelivery
        c2 = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0)
        for _ in range(5):
            time.sleep(0.5)
            m.in_progress()
        assert c2.fetch(1, 0.4) == []
        m.ack()
        assert c2.fetch(1, 1.5) == []
    finally:
        _cleanup(bus, name)
