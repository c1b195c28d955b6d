"""MQTT uplink against the real Mosquitto on 127.0.0.1:1883: acknowledged only once
durable, so a crash or a stop of ``headend serve`` loses nothing and doubles nothing.

Each test has its own topic root (``HEADEND_MQTT_UPLINK_ROOT``) and client id, and
removes its persistent session at the end. Volumes stay far below Mosquitto's
``max_queued_messages`` (1000).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._fleet import BUCKET_BITS, Fleet, headend_cmd
from ._serve_proc import (
    MQTT_URL,
    ServeProc,
    collector_of,
    drop_session,
    in_process,
    load_registry,
    publish_all,
    stored_reads,
    submit_registry,
    wait_reads,
)

pytestmark = [pytest.mark.service("mosquitto"),
              pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")]

__all__ = ["drop_session"]


@pytest.fixture
def session() -> Iterator[tuple[str, str]]:
    """(client id, topic root) of one test; the broker forgets the session after it."""
    u = uuid.uuid4().hex[:8]
    cid, root = f"headend-t{u}", f"t-{u}/uplink"
    yield cid, root
    drop_session(cid)


def _serve(data: Path, session: tuple[str, str], crash: str | None = None) -> ServeProc:
    cid, root = session
    env = {"HEADEND_MQTT_UPLINK_ROOT": root}
    if crash:
        env["HEADEND_TEST_CRASH"] = crash
    return ServeProc(data, "--mqtt", MQTT_URL, "--mqtt-client-id", cid, env=env)


def _frames(fleet: Fleet) -> list[tuple[int, bytes]]:
    return [(collector_of(f), f) for f in fleet.frames(range(3))]  # 12 messages, 600 reads


@pytest.mark.parametrize("point", ["before_store", "after_store"])
def test_kill_between_receipt_and_store(data_dir: Path, fleet: Fleet, session: tuple[str, str],
                                        point: str) -> None:
    """kill -9 while the third message is in hand (not yet stored, or stored and not
    acknowledged): after a restart every read is stored exactly once."""
    srv = _serve(data_dir, session, crash=f"mqtt:{point}:3")
    try:
        load_registry(srv, fleet)
        publish_all(session[1], _frames(fleet), f"coll-{session[0]}")
        assert srv.wait_killed() == -9, srv.output()
    finally:
        srv.stop()
    before = stored_reads(data_dir)[0]
    assert before < 600  # the crash came before the end
    with in_process(data_dir, mqtt=MQTT_URL, mqtt_client_id=session[0],
                    mqtt_uplink_root=session[1], mqtt_out=False):  # the restart
        assert wait_reads(data_dir, 600) == 600
        time.sleep(0.5)  # anything redelivered twice would land now
    assert stored_reads(data_dir) == (600, 600)


def test_published_while_down_arrives(data_dir: Path, fleet: Fleet,
                                      session: tuple[str, str]) -> None:
    """The session outlives serve: what collectors publish while it is stopped is
    delivered when it starts again."""
    with in_process(data_dir, mqtt=MQTT_URL, mqtt_client_id=session[0],
                    mqtt_uplink_root=session[1], mqtt_out=False) as svc:
        submit_registry(svc, fleet)  # the first start creates the session
    publish_all(session[1], _frames(fleet), f"coll-{session[0]}")
    assert stored_reads(data_dir)[0] == 0
    srv = _serve(data_dir, session)
    try:
        assert wait_reads(data_dir, 600) == 600, srv.output()
    finally:
        srv.stop()
    assert stored_reads(data_dir) == (600, 600)


def test_garbage_quarantined_and_later_uploads_flow(data_dir: Path, fleet: Fleet,
                                                    session: tuple[str, str]) -> None:
    """A payload that is no upload ends in ``headend quarantine list`` with a reason,
    is acknowledged (not redelivered), and does not hold back the uploads after it."""
    from headend.serve.config import load_config
    from headend.serve.service import Service

    cid, root = session
    cfg = load_config(env={}, data=data_dir, mqtt=MQTT_URL, mqtt_client_id=cid,
                      mqtt_uplink_root=root, bucket_bits=BUCKET_BITS, mqtt_out=False)
    svc = Service(cfg)
    svc.start()
    garbage = b"\x00\x01 this is neither a frame nor canonical CSV \xff"
    try:
        submit_registry(svc, fleet)
        publish_all(root, [(501, garbage), *_frames(fleet)], f"coll-{cid}")
        assert wait_reads(data_dir, 600) == 600
    finally:
        svc.close()
    out = subprocess.run(headend_cmd("quarantine", "list", "--data", str(data_dir), "--json"),
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["source"], r["kind"]) for r in rows] == [("mqtt:501", "file")]
    assert rows[0]["reason"] == "bad_csv" and rows[0]["detail"]
    # acknowledged: a restart gets nothing again (the session has no pending message)
    svc = Service(cfg)
    svc.start()
    try:
        time.sleep(1.0)
        assert svc.metrics.uploads.labels("mqtt")._value.get() == 0
    finally:
        svc.close()
    assert stored_reads(data_dir) == (600, 600)


@pytest.mark.service("nats")
def test_nats_puback_once_in_jetstream(tmp_path: Path, data_dir: Path, fleet: Fleet,
                                       session: tuple[str, str]) -> None:
    """On NATS the uplink's PUBACK means "in JetStream": with no ingest worker running,
    every message is acknowledged (a restarted uplink gets none again) and a worker
    started afterwards stores them all, once."""
    from headend.serve.config import load_config
    from headend.serve.service import Service

    from ._fleet import NatsServer

    cid, root = session
    nats = NatsServer(tmp_path / "js")
    cfg = load_config(env={}, data=data_dir, bus=nats.url, workers=0, partitions=2,
                      bucket_bits=BUCKET_BITS, mqtt=MQTT_URL, mqtt_client_id=cid,
                      mqtt_uplink_root=root, mqtt_out=False, lease_ttl_s=1.0)
    try:
        svc = Service(cfg)
        svc.start()
        try:
            submit_registry(svc, fleet)
            publish_all(root, _frames(fleet), f"coll-{cid}")
            t0 = time.monotonic()
            uploads = svc.metrics.uploads.labels("mqtt")
            while uploads._value.get() < 12 and time.monotonic() - t0 < 10:
                time.sleep(0.1)
            time.sleep(0.5)  # the PUBACKs of the last ones go out
        finally:
            svc.close()
        assert stored_reads(data_dir)[0] == 0  # no worker: nothing stored yet
        svc = Service(cfg)
        svc.start()
        worker = Service(cfg.model_copy(update={"workers": 1}), uplink=False)
        worker.start()
        try:
            assert wait_reads(data_dir, 600) == 600
            assert svc.metrics.uploads.labels("mqtt")._value.get() == 0  # all were acked
        finally:
            worker.close()
            svc.close()
    finally:
        nats.close()
    assert stored_reads(data_dir) == (600, 600)
