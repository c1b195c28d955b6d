"""The MQTT downlink against the real Mosquitto on 127.0.0.1:1883: a virtual collector
subscribes to ``headend/downlink/<collector_id>`` (QoS 1), receives JSON lines, and
answers with a ``command_responses`` upload on its uplink topic.

Each test has its own collector ids, topic root and client ids (the uplink's persistent
session is removed at the end).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headend.commands import DOWNLINK_FIELDS

from ._commands import reads_csv, responses_csv, send, serving, state, upload, wait_for
from ._serve_proc import MQTT_URL, drop_session

pytestmark = [pytest.mark.service("mosquitto"),
              pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")]


class Collector:
    """A virtual collector: its downlink subscription and its uplink publisher."""

    def __init__(self, collector_id: str, uplink_root: str) -> None:
        import paho.mqtt.client as paho

        self.id, self.root = collector_id, uplink_root
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.messages = 0
        subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                        client_id=f"coll-{uuid.uuid4().hex[:10]}")

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            assert msg.qos == 1
            self.messages += 1
            for line in msg.payload.decode().splitlines():
                self.received.put(json.loads(line))

        c.on_message = on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", 1883)
        c.loop_start()
        c.subscribe(f"headend/downlink/{collector_id}", qos=1)
        assert subscribed.wait(5)
        self.client = c

    def take(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        out = [self.received.get(timeout=timeout_s) for _ in range(n)]
        return out

    def nothing(self, for_s: float) -> bool:
        try:
            self.received.get(timeout=for_s)
        except queue.Empty:
            return True
        return False

    def answer(self, *rows: tuple[str, str, str]) -> None:
        self.client.publish(f"{self.root}/{self.id}", responses_csv(*rows),
                            qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    u = uuid.uuid4().hex[:8]
    n = {"c": f"c{u}", "d": f"d{u}", "root": f"t-{u}/uplink", "client": f"headend-t{u}"}
    yield n
    drop_session(n["client"])


def _mqtt(names: dict[str, str], **commands: Any) -> dict[str, Any]:
    return {"c": names["c"], "d": names["d"], "mqtt": MQTT_URL,
            "mqtt_uplink_root": names["root"], "mqtt_client_id": names["client"],
            "mqtt_out": False, "commands": {"tick_s": 0.05, **commands}}


def _queued_before_serve(data: Path, names: dict[str, str]) -> None:
    """The reads, then the disconnect, queued before serve starts (``headend command
    send``), so that its downlink's first tick sees both: no tick between two POSTs
    decides the order."""
    from typer.testing import CliRunner

    from headend.cli import _register, app

    from ._commands import meters_csv

    _register()
    runner = CliRunner()
    f = data.parent / f"meters-{names['c']}.csv"
    f.write_bytes(meters_csv(names["c"], names["d"]))
    for args in (["ingest", "--data", str(data), str(f), "--no-vee", "--no-rules"],
                 ["command", "send", "read", "--data", str(data), "--meter", "E1",
                  "--meter", "E2", "--meter", "E3", "--id", "r"],
                 ["command", "send", "disconnect", "--data", str(data), "--meter", "E4",
                  "--id", "d"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.stdout, res.stderr)


def test_downlink_over_mqtt_throttled(data_dir: Path, names: dict[str, str]) -> None:
    coll = Collector(names["c"], names["root"])
    try:
        _queued_before_serve(data_dir, names)
        with serving(data_dir, **_mqtt(names, max_in_flight=2)) as (_, client):
            first = coll.take(2)
            assert [list(x) for x in first] == [list(DOWNLINK_FIELDS)] * 2
            assert [x["command_id"] for x in first] == ["d", "r:E1"]  # disconnect first
            assert first[0]["control_code"] == "3.31.0.23"
            wait_for(lambda: state(client, "d") == "sent")
            assert coll.nothing(0.6)  # two in flight: the rest waits
            upload(client, reads_csv("E1"))  # the read's reads (stored), then completed
            coll.answer(("d", "E4", "completed"), ("r:E1", "E1", "completed"))
            assert [x["command_id"] for x in coll.take(2)] == ["r:E2", "r:E3"]
            wait_for(lambda: state(client, "d") == "completed")
            assert state(client, "r:E1") == "completed"
            # answering twice over MQTT changes nothing
            coll.answer(("d", "E4", "completed"))
            coll.answer(("r:E2", "E2", "delivered"))
            wait_for(lambda: state(client, "r:E2") == "delivered")
            assert state(client, "d") == "completed"
    finally:
        coll.close()


def test_queued_before_a_restart_are_sent_after_it(data_dir: Path,
                                                   names: dict[str, str]) -> None:
    """Queued while serve had no MQTT (nothing sent), then serve restarts with MQTT."""
    with serving(data_dir, c=names["c"], d=names["d"]) as (_, client):
        send(client, "ping", ["E1", "E2"], command_id="p")
        send(client, "read", ["E7"], command_id="q")
        time.sleep(0.5)
        assert state(client, "p:E1") == "queued"
    coll = Collector(names["c"], names["root"])
    other = Collector(names["d"], names["root"])
    try:
        with serving(data_dir, **_mqtt(names)) as (_, client):
            assert sorted(x["command_id"] for x in coll.take(2)) == ["p:E1", "p:E2"]
            assert [x["command_id"] for x in other.take(1)] == ["q"]
            wait_for(lambda: state(client, "q") == "sent")
            assert coll.messages == 1  # one message per collector and tick
    finally:
        coll.close()
        other.close()


def test_polling_collector_gets_nothing_on_mqtt(data_dir: Path, names: dict[str, str]) -> None:
    """A collector that polls gets its commands by poll only, even when serve has MQTT."""
    from ._commands import lines, poll

    coll = Collector(names["c"], names["root"])
    try:
        with serving(data_dir, **_mqtt(names)) as (_, client):
            assert poll(client, names["c"]).status_code == 204
            send(client, "ping", ["E1"], command_id="p")
            assert [x["command_id"] for x in lines(poll(client, names["c"], wait=5))] == ["p"]
            assert coll.nothing(0.5)
    finally:
        coll.close()
