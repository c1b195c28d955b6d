"""Test kit of the crash tests: ``headend serve`` as a subprocess, MQTT helpers, and an
exact count of what a data directory stores."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ._fleet import Fleet, free_port, headend_cmd

MQTT_URL = "mqtt://127.0.0.1:1883"


class ServeProc:
    """``headend serve`` on a free port of ``data`` (embedded bus), with extra options
    and environment (``HEADEND_TEST_CRASH`` for the crash hook)."""

    def __init__(self, data: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
        full_env.update(env or {})
        self.log = data.parent / f"serve-{self.port}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            headend_cmd("serve", "--data", str(data), "--http", f"127.0.0.1:{self.port}",
                        *args), env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not start: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def post(self, body: bytes, content_type: str) -> httpx.Response:
        return httpx.post(self.url + "/v1/uploads", content=body,
                          headers={"Content-Type": content_type}, timeout=30)

    def wait_killed(self, timeout_s: float = 20.0) -> int:
        """Wait for the process to die (the crash hook); its return code."""
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextmanager
def in_process(data: Path, **config: Any) -> Iterator[Any]:
    """A started :class:`Service` on ``data`` in this process (a restart is quicker so
    than a new ``headend serve``), closed at the end."""
    from headend.serve.config import load_config
    from headend.serve.service import Service

    svc = Service(load_config(env={}, data=data, **config))
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


def load_registry(srv: ServeProc, fleet: Fleet) -> None:
    for body in (fleet.collectors_csv(), fleet.meters_csv()):
        r = srv.post(body, "text/csv")
        assert r.status_code == 200, r.text


def submit_registry(service: Any, fleet: Fleet) -> None:
    """Load the fleet's collectors and meters through an in-process service's uplink."""
    assert service.uplink is not None
    for body in (fleet.collectors_csv(), fleet.meters_csv()):
        service.uplink.submit(body, source="test", content_type="text/csv")


def stored_reads(data: Path) -> tuple[int, int]:
    """(rows, distinct (meter, reading type, interval end) keys) of the store."""
    from headend.store import DataDir

    with DataDir.open(data) as dd:
        reads = dd.store.scan_reads()
    key = np.stack([reads.column(c).to_numpy().astype(np.int64)
                    for c in ("meter_idx", "reading_type")] +
                   [reads.column("interval_end").cast("int64").to_numpy()], axis=1)
    return reads.num_rows, len(np.unique(key, axis=0)) if len(key) else 0


def wait_reads(data: Path, n: int, timeout_s: float = 20.0) -> int:
    """Poll the store (read from this process) until it holds ``n`` reads."""
    t0 = time.monotonic()
    rows = 0
    while time.monotonic() - t0 < timeout_s:
        rows = stored_reads(data)[0]
        if rows >= n:
            return rows
        time.sleep(0.2)
    return rows


def collector_of(frame: bytes) -> int:
    return int.from_bytes(frame[8:12], "little")


def publisher(client_id: str) -> Any:
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    return c


def publish_all(root: str, payloads: list[tuple[int, bytes]], client_id: str) -> None:
    """Publish QoS 1 on ``<root>/<collector>``; returns once the broker has them all."""
    c = publisher(client_id)
    try:
        for cid, body in payloads:
            c.publish(f"{root}/{cid}", body, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def drop_session(client_id: str) -> None:
    """Remove a persistent session from the broker (connect with a clean session)."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    c.connect("127.0.0.1", 1883)
    c.loop_start()
    time.sleep(0.1)
    c.disconnect()
    c.loop_stop()
