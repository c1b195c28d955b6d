"""Rules workers on real NATS JetStream: topology-partitioned consumers of the reads and
events streams find a transformer outage in exactly the partition owning its substation
and publish it on the bus."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from headend.bus import open_bus
from headend.bus.memory import MemoryBus
from headend.model.reasons import RULES_UNKNOWN_METER
from headend.rules.testing import Fault, grid_meters, simulate
from headend.rules.topology import SUBSTATION, Topology, partition_of
from headend.serve.config import load_config
from headend.serve.rules_worker import (
    RULES_LEASE_BUCKET,
    LeasedRulesWorker,
    RulesWorker,
    decode_events,
    decode_reads,
)
from headend.serve.service import Service
from headend.serve.streams import OUT_STREAM, StreamPublisher
from headend.store import MeterRegistry, QuarantineStore
from headend.wire.csvfmt import write_events_csv, write_meters_csv, write_reads_csv

from ._fleet import NatsServer, headend_cmd

pytestmark = [
    pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning"),
]

T0 = 1_767_225_600
FAULTY = "S1F1T2"


class _Registry:
    """``idx_for_id`` over a METERS table (the store registry's lookup)."""

    def __init__(self, meters: pa.Table) -> None:
        self.ids = {m: i for m, i in zip(meters.column("meter_id").to_pylist(),
                                         meters.column("meter_idx").to_pylist(), strict=True)}

    def idx_for_id(self, ids: pa.ChunkedArray) -> np.ndarray:
        return np.array([self.ids.get(m, -1) for m in ids.to_pylist()], dtype=np.int32)


def test_stream_payloads_decode_back_to_the_stored_rows() -> None:
    meters = grid_meters(n_sub=1, n_feeder=1, n_tx=2, n_meter=3)
    reads, events = simulate(meters, T0, T0 + 3600, [Fault("transformer", "S0F0T1",
                                                            T0 + 900, T0 + 1800)])
    pub = StreamPublisher(open_bus("memory://"), lambda: meters)
    reg = _Registry(meters)
    got_r = decode_reads([p for _, p, _ in pub.messages("reads", reads)], reg)
    got_e = decode_events([p for _, p, _ in pub.messages("events", events)], reg)

    def key(t: pa.Table) -> list[tuple]:  # type: ignore[type-arg]
        return sorted(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))

    assert got_r.num_rows == reads.num_rows and got_e.num_rows == events.num_rows
    assert key(got_r) == key(reads.select(got_r.column_names).cast(got_r.schema))
    assert key(got_e) == key(events.select(got_e.column_names).cast(got_e.schema))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "js")
    yield srv
    srv.close()


def _csv(writer, table: pa.Table, ids: pa.ChunkedArray) -> bytes:  # type: ignore[no-untyped-def]
    if "meter_id" not in table.column_names:
        table = table.append_column("meter_id", ids.take(table.column("meter_idx")))
    buf = io.BytesIO()
    writer(table, buf)
    return buf.getvalue()


@pytest.mark.service("nats")
def test_outage_found_by_the_worker_owning_its_substation(nats_server: NatsServer,
                                                          data_dir: Path) -> None:
    meters = grid_meters(n_sub=2, n_feeder=2, n_tx=3, n_meter=4)
    reads, events = simulate(meters, T0, T0 + 4 * 3600,
                             [Fault("transformer", FAULTY, T0 + 3600, T0 + 7200)],
                             gasp_loss=0.3, seed=3)
    topo = Topology.from_meters(meters)
    sub = topo.device[SUBSTATION]
    faulty_meter = meters.column("meter_id").to_pylist().index(FAULTY + "M0")
    owner = int(partition_of(sub, 2)[faulty_meter])
    cfg = load_config(env={}, data=data_dir, bus=nats_server.url, partitions=2)
    assert not cfg.run_rules  # NATS: the ingest process runs no rules
    svc = Service(cfg)
    svc.start()
    workers: list[RulesWorker] = []
    try:
        assert svc.uplink is not None
        ids = meters.column("meter_id")
        for body in (_csv(write_meters_csv, meters, ids), _csv(write_reads_csv, reads, ids),
                     _csv(write_events_csv, events, ids)):
            ack = svc.uplink.submit(body, source="t", content_type="text/csv")
            assert ack.quarantined == 0
        bus = open_bus(nats_server.url)
        workers = [RulesWorker(bus, data_dir, k, 2, idle_fetch_s=0.05) for k in range(2)]
        assert [w.substations for w in workers][owner] == ["S1"]
        assert [w.substations for w in workers][1 - owner] == ["S0"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and \
                sum(w.rows for w in workers) < reads.num_rows + events.num_rows:
            for w in workers:
                w.step()
        assert sum(w.rows for w in workers) == reads.num_rows + events.num_rows
        for w in workers:  # nothing left: everything was acknowledged
            assert w.step() == 0 and w.lag() == 0
        found = [[(o.level, o.device_id) for o in w.engine.outages] for w in workers]
        assert found[owner] == [("transformer", FAULTY)]
        assert found[1 - owner] == []
        sub_c = bus.consumer(OUT_STREAM, None, filter_subject="headend.outages.transformer.*.*.*.*.*.*")
        msgs = sub_c.fetch(10, 2.0)
        assert {m.subject for m in msgs} == {
            f"headend.outages.transformer.electric.S1.S1F1.{FAULTY}.~.start",
            f"headend.outages.transformer.electric.S1.S1F1.{FAULTY}.~.end",
        }
        assert {json.loads(m.data)["device_id"] for m in msgs} == {FAULTY}
        # per-partition state, apart
        assert (data_dir / "rules" / "partitions" / f"{owner}-of-2").is_dir()
        bus.close()
    finally:
        for w in workers:
            w.close()
        svc.close()


# ----------------------------------------------------------------- in-process bus


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _publish(bus: MemoryBus, meters: pa.Table, reads: pa.Table, events: pa.Table) -> int:
    """Publish reads and events as the ingest workers do; returns the messages."""
    pub = StreamPublisher(bus, lambda: meters)
    msgs = pub.messages("reads", reads) + pub.messages("events", events)
    for subject, payload, headers in msgs:
        bus.publish(subject, payload, headers)
    return len(msgs)


def test_rows_of_meters_not_yet_known_wait_then_are_quarantined(data_dir: Path) -> None:
    """Rows of a meter the worker's registry does not know are neither fed nor
    acknowledged; once the meter is loaded they are fed; rows whose meter is still
    unknown after unknown_wait_s go to the quarantine with their reason."""
    meters = grid_meters(n_sub=1, n_feeder=1, n_tx=2, n_meter=3)
    reads, events = simulate(meters, T0, T0 + 3600, [])
    ids = meters.column("meter_id").to_pylist()
    late, never = "S0F0T1M2", "S0F0T1M1"
    registry = MeterRegistry(data_dir)
    registry.upsert(meters.filter(pc.invert(pc.is_in(meters.column("meter_id"),
                                                     pa.array([late, never])))))
    rows_of = {m: int(pc.sum(pc.equal(reads.column("meter_idx"), ids.index(m))).as_py())
               for m in (late, never)}
    clock, offset = _Clock(), [0.0]
    bus = MemoryBus(clock=clock)
    w = RulesWorker(bus, data_dir, 0, 1, idle_fetch_s=0.01, ack_wait_s=5.0,
                    unknown_wait_s=60.0, clock=lambda: time.time() + offset[0])
    try:
        _publish(bus, meters, reads, events)
        known = reads.num_rows + events.num_rows - rows_of[late] - rows_of[never]
        while w.step():
            pass
        assert w.rows == known  # the rows of the two unknown meters wait
        assert w.waiting >= 2 and w.lag() == 0
        clock.t += 6.0  # past ack_wait: delivered again, still unknown: still waiting
        while w.step():
            pass
        assert w.rows == known and w.waiting >= 2
        registry.upsert(meters.filter(pc.equal(meters.column("meter_id"), late)))
        clock.t += 6.0  # the late meter is known now: its rows are fed
        while w.step():
            pass
        assert w.rows == known + rows_of[late]
        assert QuarantineStore(data_dir).list().num_rows == 0
        offset[0] += 61.0  # the other one waited past unknown_wait_s
        clock.t += 6.0
        while w.step():
            pass
        q = QuarantineStore(data_dir).list()
        assert q.num_rows == rows_of[never] == w.quarantined
        assert set(q.column("reason").to_pylist()) == {RULES_UNKNOWN_METER}
        assert set(q.column("meter_id").to_pylist()) == {never}
        assert set(q.column("kind").to_pylist()) == {"reads"}
        assert set(q.column("type").to_pylist()) <= {"kwh_del", "volts"}
        assert all(t.endswith("Z") for t in q.column("time").to_pylist())
        assert w.rows == known + rows_of[late]
        clock.t += 6.0  # everything was acknowledged: nothing comes back
        assert w.step() == 0 and w.waiting == 0
    finally:
        w.close()


def test_rules_partitions_move_by_lease_and_resume_from_the_checkpoint(
        data_dir: Path) -> None:
    """Two rules workers share the partitions by lease; one gives a partition back
    (closing it: checkpoint) and the other reopens it where it was; then the first dies
    during an outage and the other takes its partition over after the lease time,
    resuming from the state the dead one wrote (checkpoint and pending files): it ends
    the outage whose start the dead one saw."""
    meters = grid_meters(n_sub=2, n_feeder=2, n_tx=3, n_meter=4)
    sub = Topology.from_meters(meters).device[SUBSTATION]
    part = partition_of(sub, 2)
    # the fault lies in partition 0: the one the first worker keeps (it gives back 1)
    faulty = meters.column("transformer_id")[int(np.flatnonzero(part == 0)[0])].as_py()
    reads, events = simulate(meters, T0, T0 + 4 * 3600,
                             [Fault("transformer", faulty, T0 + 3600, T0 + 7200)],
                             gasp_loss=0.3, seed=3)
    MeterRegistry(data_dir).upsert(meters)
    clock = _Clock()
    bus = MemoryBus(clock=clock)
    opts = {"idle_fetch_s": 0.01, "ack_wait_s": 5.0}
    a = LeasedRulesWorker(bus, data_dir, 2, worker_id="a", lease_ttl_s=6.0, **opts)
    b = LeasedRulesWorker(bus, data_dir, 2, worker_id="b", lease_ttl_s=6.0, **opts)
    cut = T0 + 6300  # during the outage
    r1 = pc.less_equal(pc.cast(reads.column("interval_end"), pa.int64()), cut)
    e1 = pc.less_equal(pc.cast(events.column("event_time"), pa.int64()), cut)
    try:
        a.step()
        b.step()
        assert a.owned == {0, 1} and b.owned == set()  # b came second: all were taken
        _publish(bus, meters, reads.filter(r1), events.filter(e1))
        while a.step():
            pass
        assert a.rows == reads.filter(r1).num_rows + events.filter(e1).num_rows
        seen = [(o.outage_id, o.level, o.device_id, o.end) for o in a.parts[0].engine.outages]
        assert [x[1:] for x in seen] == [("transformer", faulty, None)]  # ongoing
        # a gives partition 1 back (closing it first); b takes it and resumes there
        given = a.parts[1].engine
        state = (given.watermark, given.items_processed, given.max_seen)
        a.leases.round()
        a.step()
        assert a.owned == {0}
        b.leases.round()
        b.step()
        assert b.owned == {1}
        taken = b.parts[1].engine
        assert (taken.watermark, taken.items_processed, taken.max_seen) == state
        # a dies (no more rounds, no close); b takes partition 0 after the lease time
        clock.t += 4.0
        b.leases.round()
        b.step()
        assert b.owned == {1}  # a's lease still runs
        clock.t += 3.0
        b.leases.round()
        b.step()
        assert b.owned == {0, 1}
        _publish(bus, meters, reads.filter(pc.invert(r1)), events.filter(pc.invert(e1)))
        while b.step():
            pass
        outages = [(o.outage_id, o.level, o.device_id, o.end) for o in b.parts[0].engine.outages]
        assert outages == [(seen[0][0], "transformer", faulty, T0 + 7200)]
        assert list(b.parts[1].engine.outages) == []
    finally:
        b.close()


# ----------------------------------------------------------------- NATS, processes


def _rules_owners(bus: Any) -> dict[str, bytes]:
    kv = bus.kv(RULES_LEASE_BUCKET, ttl_s=4.0)
    out = {}
    for k in kv.keys():  # noqa: SIM118 - a KV bucket, not a dict
        v = kv.get(k)
        if k.startswith("p.") and v is not None:
            out[k] = v[0]
    return out


@pytest.mark.service("nats")
def test_rules_worker_killed_during_an_outage_hands_it_over(
        nats_server: NatsServer, data_dir: Path, tmp_path: Path) -> None:
    """Two ``headend rules-worker`` processes share two partitions by lease. The one
    owning the faulty substation sees the outage start and is killed with SIGKILL; the
    other takes its partition within 10 s, resumes from its state and publishes the
    outage's end."""
    meters = grid_meters(n_sub=2, n_feeder=2, n_tx=3, n_meter=4)
    reads, events = simulate(meters, T0, T0 + 4 * 3600,
                             [Fault("transformer", FAULTY, T0 + 3600, T0 + 7200)],
                             gasp_loss=0.3, seed=3)
    cut = T0 + 6300  # the outage is on at the kill
    r1 = pc.less_equal(pc.cast(reads.column("interval_end"), pa.int64()), cut)
    e1 = pc.less_equal(pc.cast(events.column("event_time"), pa.int64()), cut)
    svc = Service(load_config(env={}, data=data_dir, bus=nats_server.url, partitions=2))
    svc.start()
    procs: list[subprocess.Popen[bytes]] = []
    bus = open_bus(nats_server.url)
    try:
        assert svc.uplink is not None
        ids = meters.column("meter_id")
        svc.uplink.submit(_csv(write_meters_csv, meters, ids), source="t",
                          content_type="text/csv")
        for i in range(2):
            with (tmp_path / f"rules{i}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    headend_cmd("rules-worker", "--partitions", "2", "--data", str(data_dir),
                                "--nats", nats_server.url),
                    stdout=log, stderr=subprocess.STDOUT))
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and len(set(_rules_owners(bus).values())) < 2:
            time.sleep(0.1)
        owners = _rules_owners(bus)
        assert len(owners) == 2 and len(set(owners.values())) == 2, owners
        alerts = bus.consumer(OUT_STREAM, None,
                              filter_subject="headend.outages.transformer.*.*.*.*.*.*")
        for body in (_csv(write_reads_csv, reads.filter(r1), ids),
                     _csv(write_events_csv, events.filter(e1), ids)):
            svc.uplink.submit(body, source="t", content_type="text/csv")
        got: list[str] = []
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and not any(s.endswith(".start") for s in got):
            got += [m.subject for m in alerts.fetch(10, 0.5)]
        assert [s.rsplit(".", 1)[-1] for s in got] == ["start"], got
        # kill the owner of the faulty substation's partition
        sub = Topology.from_meters(meters).device[SUBSTATION]
        k = int(partition_of(sub, 2)[meters.column("meter_id").to_pylist().index(
            FAULTY + "M0")])
        victim = owners[f"p.{k}"]
        logs = [(tmp_path / f"rules{i}.log").read_text() for i in range(2)]
        (i_victim,) = [i for i, text in enumerate(logs) if victim.decode() in text]
        os.kill(procs[i_victim].pid, signal.SIGKILL)
        killed = time.monotonic()
        for body in (_csv(write_reads_csv, reads.filter(pc.invert(r1)), ids),
                     _csv(write_events_csv, events.filter(pc.invert(e1)), ids)):
            svc.uplink.submit(body, source="t", content_type="text/csv")
        while time.monotonic() - killed < 10 and \
                _rules_owners(bus).get(f"p.{k}") in (None, victim):
            time.sleep(0.1)
        moved = time.monotonic() - killed
        assert _rules_owners(bus).get(f"p.{k}") not in (None, victim)
        assert moved < 10.0, f"partition moved {moved:.1f} s after the kill"
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and not any(s.endswith(".end") for s in got):
            got += [m.subject for m in alerts.fetch(10, 0.5)]
        ended = time.monotonic() - killed
        assert got[-1] == f"headend.outages.transformer.electric.S1.S1F1.{FAULTY}.~.end", got
        print(f"partition moved {moved:.2f} s, outage end published {ended:.2f} s after "
              "the kill -9")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(20)
        bus.close()
        svc.close()
