"""On-demand reads through a real ``serve`` (embedded bus, HTTP server in a thread, two
ingest partitions): a read command taken by a collector's long poll, then one frame
over ``POST /v1/uploads`` with the meters' reads and the ``completed`` response in its
``command_responses`` section; the command completes with the reads it brought."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from headend.serve.service import Service
from headend.wire.frame import encode_frame
from headend.wire.responses import encode_responses_section

from ._commands import lines, poll, send, serving, upload, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")

KEY = bytes(range(32))
COLLECTOR = 501
T0 = 1_767_600_000  # 2026-01-05T08:00:00Z
#: numeric ids (their frame serials); with 16 meters a bucket (``bucket_bits`` 4) and
#: 12 meters loaded before them, the first and the last fall in different partitions
METERS = [300000001 + i for i in range(8)]


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[Service, httpx.Client]]:
    with serving(data_dir, bucket_bits=4, commands={"rate_per_s": 1000, "burst": 1000}) as s:
        _, client = s
        upload(client, f"collector_id,hmac_key\n{COLLECTOR},{KEY.hex()}\n".encode())
        upload(client, ("meter_id,commodity,technology,two_way,collector_id,transformer_id,"
                        "feeder_id,substation_id,interval_minutes\n" + "".join(
                            f"{m},electric,rf,true,{COLLECTOR},T9,F9,S1,15\n"
                            for m in METERS)).encode())
        yield s


def _frame(responses: list[tuple[str, int, str]], n: int = 4) -> bytes:
    s = np.repeat(np.array(METERS, np.uint64), n)
    t = np.tile(T0 + 900 * np.arange(1, n + 1), len(METERS))
    sec = encode_responses_section([r[0] for r in responses], [str(r[1]) for r in responses],
                                   [r[2] for r in responses],
                                   [(T0 + 3_700) * 1000] * len(responses))
    return encode_frame(KEY, COLLECTOR, 1, T0 + 3_800,
                        interval=(s, t, np.full(len(s), 250), np.zeros(len(s), np.uint32),
                                  np.zeros(len(s), np.uint8)),
                        register=(np.array(METERS[:2], np.uint64), np.array([7, 8]),
                                  np.array([T0 + 3_600] * 2), np.zeros(2, np.uint8)),
                        sections=sec)


def test_reads_and_completed_in_one_frame_over_http(
        served: tuple[Service, httpx.Client]) -> None:
    svc, client = served
    a, b = METERS[0], METERS[-1]
    assert svc.uplink is not None
    parts = svc.uplink.router.split_frames(_frame([(f"od:{a}", a, "completed"),
                                                   (f"od:{b}", b, "completed")]))
    assert len(parts) == 2  # the meters' reads, and so the responses, in both partitions
    cmds = send(client, "read", [str(a), str(b)], command_id="od")
    assert [c["reads"]["interval_reads"] for c in cmds] == [0, 0]
    taken = lines(poll(client, str(COLLECTOR), wait=5))  # the collector takes them: sent
    assert sorted(x["command_id"] for x in taken) == [f"od:{a}", f"od:{b}"]
    r = client.post("/v1/uploads", content=_frame([(f"od:{a}", a, "delivered"),
                                                  (f"od:{a}", a, "completed"),
                                                  (f"od:{b}", b, "completed")]),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["quarantined"] == 0
    # 8 meters x 4 interval reads + 2 registers, and 3 responses that changed commands
    assert ack["accepted"] == 8 * 4 + 2 + 3

    def done() -> bool:
        return all(client.get(f"/v1/commands/od:{m}").json()["state"] == "completed"
                   for m in (a, b))

    wait_for(done)
    got = {m: client.get(f"/v1/commands/od:{m}").json()["reads"] for m in (a, b)}
    assert got[a] == {"interval_reads": 4, "register_reads": 1,
                      "first_interval_end": "2026-01-05T08:15:00Z",
                      "last_interval_end": "2026-01-05T09:00:00Z",
                      "first_read_time": "2026-01-05T09:00:00Z",
                      "last_read_time": "2026-01-05T09:00:00Z",
                      "uploads": 1, "sources": ["http:127.0.0.1"]}
    assert (got[b]["interval_reads"], got[b]["register_reads"]) == (4, 0)


def test_completed_with_no_reads_over_http_fails_no_reads(
        served: tuple[Service, httpx.Client]) -> None:
    _, client = served
    m = METERS[3]
    send(client, "read", [str(m)], command_id="od-empty")
    lines(poll(client, str(COLLECTOR), wait=5))
    body = encode_frame(KEY, COLLECTOR, 2, T0 + 3_800, sections=encode_responses_section(
        ["od-empty"], [str(m)], ["completed"], [(T0 + 3_700) * 1000]))
    r = client.post("/v1/uploads", content=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    got = client.get("/v1/commands/od-empty").json()
    assert (got["state"], got["reason"]) == ("failed", "no_reads")
    assert got["reads"]["interval_reads"] == 0


@pytest.mark.service("mosquitto")
def test_reads_and_completed_in_one_frame_over_mqtt(data_dir: Path) -> None:
    """The same frame published by the collector on its MQTT uplink (Mosquitto)."""
    import uuid

    import paho.mqtt.client as paho

    from ._serve_proc import MQTT_URL, drop_session

    u = uuid.uuid4().hex[:8]
    root, client_id = f"t-{u}/uplink", f"headend-t{u}"
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"coll-{u}")
    pub.connect("127.0.0.1", 1883)
    pub.loop_start()
    try:
        with serving(data_dir, bucket_bits=4, mqtt=MQTT_URL, mqtt_uplink_root=root,
                     mqtt_client_id=client_id, mqtt_out=False,
                     commands={"rate_per_s": 1000, "burst": 1000}) as (_, client):
            upload(client, f"collector_id,hmac_key\n{COLLECTOR},{KEY.hex()}\n".encode())
            upload(client, ("meter_id,commodity,technology,two_way,collector_id,"
                            "transformer_id,feeder_id,substation_id,interval_minutes\n"
                            + "".join(f"{m},electric,rf,true,{COLLECTOR},T9,F9,S1,15\n"
                                      for m in METERS)).encode())
            m = METERS[-1]
            send(client, "read", [str(m)], command_id="od-mqtt")
            assert [x["command_id"] for x in lines(poll(client, str(COLLECTOR), wait=5))] \
                == ["od-mqtt"]
            pub.publish(f"{root}/{COLLECTOR}", _frame([("od-mqtt", m, "completed")]),
                        qos=1).wait_for_publish(5)
            wait_for(lambda: client.get("/v1/commands/od-mqtt").json()["state"]
                     == "completed")
            got = client.get("/v1/commands/od-mqtt").json()["reads"]
            assert (got["interval_reads"], got["register_reads"], got["sources"]) == (
                4, 0, [f"mqtt:{COLLECTOR}"])
    finally:
        pub.loop_stop()
        pub.disconnect()
        drop_session(client_id)
