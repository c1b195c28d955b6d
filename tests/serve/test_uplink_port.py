"""Conformance suite of the uplink source port (:mod:`headend.serve.sources`), run over
every adapter: in-memory, HTTP, MQTT (the real Mosquitto on 127.0.0.1:1883) and files.

One rule: an upload is acknowledged only once durable (stored, or quarantined whole
with a reason); a transient failure acknowledges nothing and the upload comes again.
The store here is a controllable stand-in that keeps each whitespace-separated token of
a body once (redelivery is harmless), can be held, made unavailable, or fail.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from headend.errors import DecodeError, ServiceUnavailable
from headend.serve.sources import FileSource, Intake, MemorySource, Outcome, Upload
from headend.serve.uplink import UploadAck
from headend.store.quarantine import QuarantineStore

from ._fleet import free_port

PENDING, DONE, RETRY = "pending", "done", "retry"


class TokenStore:
    """Stores tokens once; ``hold`` blocks calls, ``down`` makes them unavailable."""

    def __init__(self) -> None:
        self.tokens: set[bytes] = set()
        self.calls = 0
        self.down = False
        self.released = threading.Event()
        self.released.set()
        self.lock = threading.Lock()

    def __call__(self, upload: Upload) -> UploadAck:
        body = upload.body if isinstance(upload.body, bytes) else \
            b"".join(p.read_bytes() for p in upload.body)
        self.released.wait(20)
        with self.lock:
            self.calls += 1
            if self.down:
                raise ServiceUnavailable("store unavailable")
            if body.startswith(b"GARBAGE"):
                raise DecodeError("neither a frame nor canonical CSV", reason="bad_csv")
            if body.startswith(b"BOOM"):
                raise RuntimeError("a bug in the ingest")
            toks = body.split()
            new = set(toks) - self.tokens
            self.tokens |= new
            return UploadAck(accepted=len(new), duplicate=len(toks) - len(new))


class Sent(Protocol):
    def state(self) -> str: ...

    def reason(self) -> str | None: ...


class Driver(Protocol):
    """One adapter, driven as a sender would drive it."""

    redelivers: bool  # the source itself tries a deferred upload again

    def start(self, intake: Intake) -> None: ...

    def send(self, body: bytes) -> Sent: ...

    def close(self) -> None: ...


class _Threaded:
    """A send that runs on its own thread and maps its answer to a state."""

    def __init__(self, fn: Callable[[], tuple[str, str | None]]) -> None:
        self._answer: tuple[str, str | None] | None = None

        def run() -> None:
            self._answer = fn()

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()

    def state(self) -> str:
        return PENDING if self._answer is None else self._answer[0]

    def reason(self) -> str | None:
        return None if self._answer is None else self._answer[1]


def _of(outcome: Outcome | None) -> tuple[str, str | None]:
    assert outcome is not None
    return (RETRY, None) if outcome.kind == "defer" else (DONE, outcome.reason or None)


class MemoryDriver:
    redelivers = False

    def __init__(self, tmp: Path) -> None:
        self.src = MemorySource()

    def start(self, intake: Intake) -> None:
        self.src.start(intake)

    def send(self, body: bytes) -> Sent:
        return _Threaded(lambda: _of(self.src.send(body, source="memory:1")))

    def close(self) -> None:
        self.src.close()


class FileDriver:
    redelivers = False

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.intake: Intake | None = None

    def start(self, intake: Intake) -> None:
        self.intake = intake

    def send(self, body: bytes) -> Sent:
        path = self.tmp / f"up-{uuid.uuid4().hex[:8]}.csv"
        path.write_bytes(body)

        def run() -> tuple[str, str | None]:
            src = FileSource([path])
            assert self.intake is not None
            src.start(self.intake)
            return _of(src.outcome)

        return _Threaded(run)

    def close(self) -> None:
        pass


class HttpDriver:
    redelivers = False

    def __init__(self, tmp: Path) -> None:
        self.server: Any = None

    def start(self, intake: Intake) -> None:
        import uvicorn
        from fastapi import FastAPI

        from headend.serve.app import HttpUplink

        uploads = HttpUplink()
        uploads.start(intake)
        app = FastAPI()
        app.include_router(uploads.router)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning",
            lifespan="off"))
        threading.Thread(target=self.server.run, daemon=True).start()
        t0 = time.monotonic()
        while not self.server.started and time.monotonic() - t0 < 10:
            time.sleep(0.02)

    def send(self, body: bytes) -> Sent:
        def run() -> tuple[str, str | None]:
            r = httpx.post(self.url + "/v1/uploads", content=body,
                           headers={"Content-Type": "text/csv"}, timeout=30)
            if r.status_code == 503:
                return RETRY, None
            assert r.status_code in (200, 400), r.text
            return DONE, r.json().get("reason")

        return _Threaded(run)

    def close(self) -> None:
        self.server.should_exit = True


class MqttDriver:
    """A collector publishing QoS 1. The broker's PUBACK to the collector only says the
    broker has the message; what the port promises is headend's PUBACK to the broker,
    so that is what is watched (a spy on the adapter's paho client). Whether the broker
    then really keeps an unacknowledged upload is what test_mqtt_uplink.py checks."""

    redelivers = True

    def __init__(self, tmp: Path) -> None:
        import paho.mqtt.client as paho

        from headend.serve.mqtt import MqttUplink

        u = uuid.uuid4().hex[:8]
        self.root = f"test-{u}/uplink"
        self.uplink = MqttUplink("mqtt://127.0.0.1:1883", client_id=f"conf-{u}", root=self.root)
        self.pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"coll-{u}")
        self.payload_of: dict[int, bytes] = {}
        self.acked: list[bytes] = []
        client = self.uplink.client
        on_message, ack = client.on_message, client.ack

        def spy_message(c: Any, userdata: Any, msg: Any) -> None:
            self.payload_of[msg.mid] = bytes(msg.payload)
            on_message(c, userdata, msg)

        def spy_ack(mid: int, qos: int) -> Any:
            self.acked.append(self.payload_of[mid])
            return ack(mid, qos)

        client.on_message, client.ack = spy_message, spy_ack

    def start(self, intake: Intake) -> None:
        self.uplink.start(intake)
        self.pub.connect("127.0.0.1", 1883)
        self.pub.loop_start()

    def send(self, body: bytes) -> Sent:
        self.pub.publish(f"{self.root}/501", body, qos=1).wait_for_publish(5)
        acked = self.acked

        class _Pub:
            def state(self) -> str:
                return DONE if body in acked else PENDING

            def reason(self) -> str | None:
                return None

        return _Pub()

    def close(self) -> None:
        from ._serve_proc import drop_session

        self.pub.loop_stop()
        self.pub.disconnect()
        self.uplink.close()
        drop_session(self.uplink.client_id)


DRIVERS: dict[str, Any] = {
    "memory": MemoryDriver,
    "file": FileDriver,
    "http": HttpDriver,
    "mqtt": pytest.param(MqttDriver, marks=pytest.mark.service("mosquitto")),
}


@pytest.fixture(params=list(DRIVERS.values()), ids=list(DRIVERS))
def rig(request: pytest.FixtureRequest, tmp_path: Path
        ) -> Iterator[tuple[Driver, TokenStore, QuarantineStore]]:
    store = TokenStore()
    quarantine = QuarantineStore(tmp_path / "data")
    driver = request.param(tmp_path)
    driver.start(Intake("test", store, quarantine.append))
    yield driver, store, quarantine
    store.released.set()
    driver.close()


def _wait(sent: Sent, timeout_s: float = 10.0) -> str:
    t0 = time.monotonic()
    while sent.state() == PENDING and time.monotonic() - t0 < timeout_s:
        time.sleep(0.02)
    return sent.state()


Rig = tuple[Driver, TokenStore, QuarantineStore]


def test_acknowledged_only_once_stored(rig: Rig) -> None:
    driver, store, _ = rig
    store.released.clear()  # the store is slow: nothing durable yet
    sent = driver.send(b"m1 m2 m3")
    time.sleep(0.5)
    assert sent.state() == PENDING and store.tokens == set()
    store.released.set()
    assert _wait(sent) == DONE
    assert store.tokens == {b"m1", b"m2", b"m3"}


def test_redelivery_is_harmless(rig: Rig) -> None:
    driver, store, _ = rig
    assert _wait(driver.send(b"a b")) == DONE
    assert _wait(driver.send(b"a b c")) == DONE
    assert store.tokens == {b"a", b"b", b"c"} and store.calls == 2


@pytest.mark.parametrize(("body", "reason"), [(b"GARBAGE \x00\xff", "bad_csv"),
                                              (b"BOOM x", "ingest_failed")])
def test_unusable_upload_quarantined_then_acknowledged(rig: Rig, body: bytes,
                                                       reason: str) -> None:
    driver, store, quarantine = rig
    sent = driver.send(body)
    assert _wait(sent) == DONE
    assert sent.reason() in (None, reason)  # MQTT cannot tell the sender a reason
    rows = quarantine.list().to_pylist()
    assert [(r["reason"], r["payload"]) for r in rows] == [(reason, body)]
    assert rows[0]["detail"]
    # it does not block what comes next
    assert _wait(driver.send(b"after")) == DONE
    assert store.tokens == {b"after"}


def test_transient_failure_not_acknowledged(rig: Rig) -> None:
    driver, store, quarantine = rig
    store.down = True
    sent = driver.send(b"x y")
    time.sleep(0.6)
    assert sent.state() in (PENDING, RETRY)
    if driver.redelivers:
        assert sent.state() == PENDING  # no PUBACK while the store is down
    else:
        assert _wait(sent) == RETRY  # 503 / exit 4: the client sends it again
    assert quarantine.list().num_rows == 0 and store.tokens == set()
    store.down = False
    if not driver.redelivers:
        sent = driver.send(b"x y")
    assert _wait(sent) == DONE
    assert store.tokens == {b"x", b"y"} and store.calls >= 2
