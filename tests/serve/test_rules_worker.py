"""Rules workers on real NATS JetStream: topology-partitioned consumers of the reads and
events streams find a transformer outage in exactly the partition owning its substation
and publish it on the bus."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headend.bus import open_bus
from headend.rules.testing import Fault, grid_meters, simulate
from headend.rules.topology import SUBSTATION, Topology, partition_of
from headend.serve.config import load_config
from headend.serve.rules_worker import RulesWorker, decode_events, decode_reads
from headend.serve.service import Service
from headend.serve.streams import OUT_STREAM, StreamPublisher
from headend.wire.csvfmt import write_events_csv, write_meters_csv, write_reads_csv

from ._fleet import NatsServer

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
