"""Broker access for third parties (NATS with generated permissions, MQTT with a
generated Mosquitto ACL): a subscriber scoped to feeder F1 never receives another
feeder's data, live or from its durable consumer, which resumes where it stopped."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.subscribers import SubscriberStore, mosquitto_acl, nats_authorization

from ._fleet import BUCKET_BITS, Fleet, NatsServer, free_port
from ._serve_proc import drop_session

pytestmark = [
    pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning"),
]

SERVICE_USER, SERVICE_PASSWORD = "headend", "service-secret"


def _rows(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for p in payloads for line in p.decode().splitlines() if line]


@pytest.fixture
def secured_nats(tmp_path: Path, data_dir: Path) -> Iterator[NatsServer]:
    store = SubscriberStore(data_dir)
    store.add("f1", {"feeder": "F1"})
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_authorization(store.list(), service_user=SERVICE_USER,
                                       service_password=SERVICE_PASSWORD))
    srv = NatsServer(tmp_path / "js", config=conf)
    yield srv
    srv.close()


def _service(data: Path, url: str, **kw: Any) -> Service:
    cfg = load_config(env={}, data=data, bus=url, nats_user=SERVICE_USER,
                      nats_password=SERVICE_PASSWORD, partitions=2, bucket_bits=BUCKET_BITS,
                      **kw)
    svc = Service(cfg)
    svc.start()
    return svc


def _upload(svc: Service, body: bytes, ct: str = "application/octet-stream") -> None:
    assert svc.uplink is not None
    ack = svc.uplink.submit(body, source="t", content_type=ct)
    assert ack.quarantined == 0


@pytest.mark.service("nats")
def test_nats_permissions_scope_and_durable_resume(secured_nats: NatsServer, data_dir: Path,
                                                   fleet: Fleet) -> None:
    svc = _service(data_dir, secured_nats.url)
    sub = svc.subscribers.get("f1")
    assert sub is not None
    try:
        _upload(svc, fleet.collectors_csv(), "text/csv")
        _upload(svc, fleet.meters_csv(), "text/csv")

        async def scenario() -> None:
            errors: list[str] = []

            async def on_error(exc: Exception) -> None:
                errors.append(str(exc))

            nc = await nats.connect(secured_nats.url, user=sub.nats_user,
                                    password=sub.nats_password, error_cb=on_error,
                                    inbox_prefix=f"_INBOX_{sub.nats_user}")
            wide: list[bytes] = []
            ok: list[tuple[str, bytes]] = []

            async def on_wide(m: Any) -> None:
                wide.append(m.data)

            async def on_ok(m: Any) -> None:
                ok.append((m.subject, m.data))

            await nc.subscribe("headend.>", cb=on_wide)  # not permitted: receives nothing
            await nc.subscribe(sub.filter_subject, cb=on_ok)
            await nc.flush()
            await asyncio.to_thread(_upload, svc, b"".join(fleet.frames(range(2))))
            await asyncio.sleep(0.5)
            assert wide == []
            assert any("permissions violation" in e.lower() for e in errors), errors
            assert len(_rows([d for _, d in ok])) == 100  # 50 F1 meters x 2 intervals
            assert all(".F1." in s for s, _ in ok)
            # the durable consumer headend created for it, with its scope
            js = nc.jetstream()
            psub = await js.pull_subscribe_bind(durable=sub.durable, stream="HEADEND_OUT",
                                                inbox_prefix=f"_INBOX_{sub.nats_user}.".encode())
            first = await psub.fetch(30, timeout=3)
            for m in first:
                await m.ack_sync()
            assert len(first) == 30 and all(".F1." in m.subject for m in first)
            # it may not widen its scope with a consumer of its own
            with pytest.raises((nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)):
                await js.add_consumer("HEADEND_OUT", api.ConsumerConfig(
                    durable_name="evil", filter_subject="headend.>"), timeout=1)
            await nc.close()
            # disconnected: more data arrives; reconnecting resumes after the 30 acked
            await asyncio.to_thread(_upload, svc, b"".join(fleet.frames(range(2, 3))))
            nc = await nats.connect(secured_nats.url, user=sub.nats_user,
                                    password=sub.nats_password, error_cb=on_error,
                                    inbox_prefix=f"_INBOX_{sub.nats_user}")
            js = nc.jetstream()
            psub = await js.pull_subscribe_bind(durable=sub.durable, stream="HEADEND_OUT",
                                                inbox_prefix=f"_INBOX_{sub.nats_user}.".encode())
            rest: list[Any] = []
            while True:
                try:
                    batch = await psub.fetch(100, timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for m in batch:
                    await m.ack_sync()
                rest.extend(batch)
            seqs = [m.metadata.sequence.stream for m in first + rest]
            assert len(set(seqs)) == len(seqs) == 50 + 50  # 50 messages per upload, none twice
            rows = _rows([m.data for m in first + rest])
            assert len(rows) == 150 and all(int(r["meter"]) % 4 == 0 for r in rows)
            await nc.close()

        asyncio.run(scenario())
    finally:
        svc.close()


@pytest.mark.service("mosquitto")
def test_mqtt_uplink_on_1883(data_dir: Path, fleet: Fleet) -> None:
    """A collector publishes frames on headend/uplink/<id> (QoS 1): they are stored."""
    import paho.mqtt.client as paho

    client_id = f"headend-scopes-{free_port()}"  # its persistent session is dropped below
    cfg = load_config(env={}, data=data_dir, mqtt="mqtt://127.0.0.1:1883", partitions=2,
                      bucket_bits=BUCKET_BITS, mqtt_out=False, mqtt_client_id=client_id)
    svc = Service(cfg)
    svc.start()
    try:
        assert svc.uplink is not None
        svc.uplink.submit(fleet.collectors_csv(), source="t", content_type="text/csv")
        svc.uplink.submit(fleet.meters_csv(), source="t", content_type="text/csv")
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"coll-{free_port()}")
        c.connect("127.0.0.1", 1883)
        c.loop_start()
        frames = fleet.frames(range(3))
        for f in frames:
            cid = int.from_bytes(f[8:12], "little")
            c.publish(f"headend/uplink/{cid}", f, qos=1).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
        t0 = time.monotonic()
        n = 0
        while n < 600 and time.monotonic() - t0 < 15:
            time.sleep(0.2)
            with svc.host.lock:
                n = svc.host.data.store.scan_reads().num_rows
        assert n == 600
    finally:
        svc.close()
        drop_session(client_id)


@pytest.mark.service("mosquitto")
@pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto binary not installed")
def test_mqtt_acl_scope(tmp_path: Path, data_dir: Path, fleet: Fleet) -> None:
    """Third-party MQTT access through a private Mosquitto with the generated ACL."""
    import paho.mqtt.client as paho

    store = SubscriberStore(data_dir)
    f1 = store.add("f1", {"feeder": "F1"})
    port = free_port()
    (tmp_path / "acl").write_text(mosquitto_acl(store.list(), service_user=SERVICE_USER))
    pw = tmp_path / "passwd"
    pw.write_text("")
    for user, secret in ((SERVICE_USER, SERVICE_PASSWORD), (f1.nats_user, f1.nats_password)):
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, secret], check=True,
                       capture_output=True)
    (tmp_path / "m.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
        f"acl_file {tmp_path / 'acl'}\npersistence false\nuser {getpass.getuser()}\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen([binary, "-c", str(tmp_path / "m.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    got: list[tuple[str, bytes]] = []
    try:
        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="f1-client")
        sub.username_pw_set(f1.nats_user, f1.nats_password)
        sub.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload)))
        sub.connect("127.0.0.1", port)
        sub.subscribe("headend/#", qos=1)  # asks for everything; the ACL filters
        sub.loop_start()
        cfg = load_config(env={}, data=data_dir, mqtt=f"mqtt://{SERVICE_USER}:"
                          f"{SERVICE_PASSWORD}@127.0.0.1:{port}", partitions=2,
                          bucket_bits=BUCKET_BITS)
        svc = Service(cfg)
        svc.start()
        try:
            _upload(svc, fleet.collectors_csv(), "text/csv")
            _upload(svc, fleet.meters_csv(), "text/csv")
            _upload(svc, b"".join(fleet.frames(range(2))))
            t0 = time.monotonic()
            while len(_rows([d for _, d in got])) < 100 and time.monotonic() - t0 < 10:
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            svc.close()
        sub.loop_stop()
        sub.disconnect()
        rows = _rows([d for _, d in got])
        assert len(rows) == 100  # F1 only: 50 meters x 2 intervals
        assert all("/F1/" in t for t, _ in got)
        assert all(int(r["meter"]) % 4 == 0 for r in rows)
    finally:
        broker.terminate()
        broker.wait(5)
