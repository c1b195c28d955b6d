"""NATS adapter: binding to an existing durable consumer brings its ``ack_wait`` and
``max_deliver`` to the values asked for (JetStream keeps a durable's config as created;
a consumer made by an older release, with a 30 s ``ack_wait``, would otherwise keep it
for ever and a dead worker's messages would wait 30 s), without losing its position."""

from __future__ import annotations

import pytest

from headend.bus import StreamSpec

pytestmark = pytest.mark.service("nats")


def test_binding_updates_ack_wait_and_max_deliver(uniq: str) -> None:
    from headend.bus.nats import NatsBus

    bus = NatsBus("nats://127.0.0.1:4222")
    name = f"T{uniq}"
    try:
        bus.ensure_stream(StreamSpec(name, (f"t{uniq}.>",), max_age_s=300))
        bus.publish_many([(f"t{uniq}.a", b"1", None), (f"t{uniq}.a", b"2", None)])
        old = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=30.0)
        (first,) = old.fetch(1, 2.0)
        first.ack()
        (held,) = old.fetch(1, 2.0)  # delivered, not acknowledged (a worker dies)
        assert held.data == b"2"
        old.close()

        def config() -> tuple[float, int, int]:
            info = bus._loop.run(bus.js.consumer_info(name, "w"))
            return (info.config.ack_wait, info.config.max_deliver,
                    info.delivered.stream_seq)

        assert config() == (30.0, -1, 2)
        new = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0,
                           max_deliver=3)
        ack_wait, max_deliver, delivered = config()
        assert (ack_wait, max_deliver) == (1.0, 3)
        assert delivered == 2  # the position is kept
        # the held message comes again after the new ack_wait (1 s), not after 30 s
        got = new.fetch(1, 6.0)
        assert [(m.data, m.num_delivered) for m in got] == [(b"2", 2)]
        got[0].ack()
        assert new.fetch(1, 0.5) == []
        new.close()
        # binding again with the same values changes nothing
        same = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=1.0,
                            max_deliver=3)
        assert config()[:2] == (1.0, 3)
        same.close()
        # and back to no limit
        unlimited = bus.consumer(name, "w", filter_subject=f"t{uniq}.>", ack_wait_s=2.0)
        assert config()[:2] == (2.0, -1)
        unlimited.close()
    finally:
        bus.delete_stream(name)
        bus.close()
