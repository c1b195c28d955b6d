"""Outages and alarms reach the OMS: on the bus under the subject scheme, then pushed as
IEC 61968-100 / EndDeviceEvents XML (or JSON) to an HTTP endpoint that may be down."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lxml import etree

from headend.bus import open_bus
from headend.rules import RuleEngine, cim
from headend.rules.testing import Fault, grid_meters, simulate
from headend.serve.oms import BusAlertSink, OmsDelivery, OmsEndpoint, alert_subject
from headend.serve.streams import OUT_STREAM, out_stream_spec

T0 = 1_767_225_600


class Receiver:
    """A real HTTP endpoint on loopback that can refuse the first N posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.fail_left = fail_first
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if rec.fail_left > 0:
                    rec.fail_left -= 1
                    self.send_response(503)
                else:
                    rec.bodies.append((self.headers["Content-Type"], body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def _engine_with_outage(bus):  # type: ignore[no-untyped-def]
    meters = grid_meters(n_sub=1, n_feeder=2, n_tx=3, n_meter=4)
    reads, events = simulate(meters, T0, T0 + 4 * 3600,
                             [Fault("transformer", "S0F1T2", T0 + 3600, T0 + 7200)])
    engine = RuleEngine(None, meters, sink=BusAlertSink(bus, lambda: meters))
    engine.process(reads, events)
    return engine, meters


def test_outage_published_on_the_bus_and_pushed_as_cim_xml(receiver: Receiver,
                                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus("memory://")
    bus.ensure_stream(out_stream_spec())
    engine, _meters = _engine_with_outage(bus)
    assert [(o.level, o.device_id) for o in engine.outages] == [("transformer", "S0F1T2")]
    # subscribers can filter the feeder broker-side: only this transformer's outage shows
    sub = bus.consumer(OUT_STREAM, None, filter_subject="headend.outages.*.*.*.S0F1.>")
    msgs = sub.fetch(10, 1.0)
    assert {m.subject for m in msgs} == {
        "headend.outages.transformer.electric.S0.S0F1.S0F1T2.~.start",
        "headend.outages.transformer.electric.S0.S0F1.S0F1T2.~.end",
    }
    other = bus.consumer(OUT_STREAM, None, filter_subject="headend.outages.*.*.*.S0F0.>")
    assert other.fetch(10, 0.3) == []
    # the OMS endpoint is down twice, then takes the message
    oms = OmsDelivery(bus, OUT_STREAM, OmsEndpoint("oms", receiver.url, families=("outages",)),
                      tmp_path, base_delay_s=0.01)
    assert oms.step(timeout_s=1.0) == 2
    assert oms.delivered == 2 and oms.dead == 0
    assert len(receiver.bodies) == 1
    ctype, body = receiver.bodies[0]
    assert ctype == "application/xml"
    cim.validate(body)  # against the EventMessage / EndDeviceEvents schema
    doc = etree.fromstring(body)
    ns = {"m": cim.EDE_NS, "msg": cim.MSG_NS}
    assert doc.findtext("msg:Header/msg:Verb", namespaces=ns) == "created"
    assert doc.findtext("msg:Header/msg:Noun", namespaces=ns) == "EndDeviceEvents"
    assets = doc.findall(".//m:EndDeviceEvent/m:Assets/m:mRID", namespaces=ns)
    assert [a.text for a in assets] == ["S0F1T2", "S0F1T2"]
    refs = [e.get("ref") for e in doc.findall(".//m:EndDeviceEventType", namespaces=ns)]
    assert refs == ["3.26.0.85", "3.26.0.216"]
    # nothing left to deliver: acknowledged once delivered
    assert oms.step(timeout_s=0.3) == 0
    oms.close()


def test_unreachable_oms_dead_letters_after_max_attempts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus("memory://")
    bus.ensure_stream(out_stream_spec())
    _engine_with_outage(bus)
    dead = OmsEndpoint("down", "http://127.0.0.1:9/nothing", format="json", max_attempts=2)
    oms = OmsDelivery(bus, OUT_STREAM, dead, tmp_path, base_delay_s=0.01, timeout_s=0.5)
    assert oms.step(timeout_s=1.0) == 2
    assert (oms.delivered, oms.dead) == (0, 2)
    lines = (tmp_path / "dead-letter" / "oms-down.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"device_id": "S0F1T2"' in lines[0]
    oms.close()


def test_alarm_subject_scheme() -> None:
    from headend.rules.alerts import Alert
    from headend.serve.oms import _Places

    meters = grid_meters(n_sub=1, n_feeder=1, n_tx=1, n_meter=2)
    a = Alert("alarm", "x", "voltage", "meter", "S0F0T0M1", T0)
    assert alert_subject(a, _Places(meters)) == \
        "headend.alarms.voltage.electric.S0.S0F0.S0F0T0.S0F0T0M1.alarm"


def test_serve_runs_the_rules_and_pushes_outages_to_the_configured_oms(
        receiver: Receiver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    import pyarrow as pa

    from headend.serve.config import load_config
    from headend.serve.service import Service
    from headend.wire.csvfmt import write_events_csv, write_meters_csv, write_reads_csv

    meters = grid_meters(n_sub=1, n_feeder=2, n_tx=3, n_meter=4)
    reads, events = simulate(meters, T0, T0 + 4 * 3600,
                             [Fault("transformer", "S0F1T2", T0 + 3600, T0 + 7200)],
                             gasp_loss=0.3, seed=3)
    ids = meters.column("meter_id")

    def csv(writer, table: pa.Table) -> bytes:  # type: ignore[no-untyped-def]
        if "meter_id" not in table.column_names:
            table = table.append_column("meter_id", ids.take(table.column("meter_idx")))
        buf = io.BytesIO()
        writer(table, buf)
        return buf.getvalue()

    cfg = load_config(env={}, data=tmp_path / "data", webhook_base_delay_s=0.01,
                      oms=[{"name": "oms", "url": receiver.url, "format": "cim"}])
    assert cfg.run_rules  # embedded: the rules run in this process
    svc = Service(cfg)
    svc.start()
    try:
        for body in (csv(write_meters_csv, meters), csv(write_reads_csv, reads),
                     csv(write_events_csv, events)):
            res = svc.host.ingest(body, "test", "text/csv")
            assert res.quarantined == 0
        deadline = time.monotonic() + 20
        while len(receiver.bodies) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        svc.close()
    assert receiver.bodies, "the OMS endpoint received nothing"
    xml = b"".join(b for _, b in receiver.bodies)
    assert b"S0F1T2" in xml and b"3.26.0.85" in xml
    for _, body in receiver.bodies:
        cim.validate(body)
