"""Test kit of the serve tests: a small fleet written as canonical CSV, and its frames.

200 meters (numeric ids, so their frame serial is the id) on 4 feeders of 2
substations, 4 collectors; ``bucket_bits`` 4 puts them in 13 store buckets, so uploads
really are split over ingest partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headend.model import codes
from headend.wire.frame import encode_frame

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
N_METERS = 200
BUCKET_BITS = 4
FEEDERS = ("F1", "F2", "F3", "F4")


@dataclass
class Fleet:
    """Meters, collectors and their keys."""

    meter_ids: list[str] = field(default_factory=list)
    feeder: dict[str, str] = field(default_factory=dict)
    collector: dict[str, int] = field(default_factory=dict)
    keys: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def make(cls, n: int = N_METERS) -> Fleet:
        f = cls()
        for i in range(n):
            mid = str(100_000_000 + i)
            f.meter_ids.append(mid)
            f.feeder[mid] = FEEDERS[i % 4]
            f.collector[mid] = 501 + i % 4
        f.keys = {c: bytes([c % 256]) * 32 for c in (501, 502, 503, 504)}
        return f

    def meters_csv(self) -> bytes:
        rows = [("meter_id,commodity,technology,two_way,collector_id,transformer_id,"
                 "feeder_id,substation_id")]
        for mid in self.meter_ids:
            fd = self.feeder[mid]
            sub = "S1" if fd in ("F1", "F2") else "S2"
            rows.append(f"{mid},electric,rf,true,{self.collector[mid]},T{fd}-{int(mid) % 5},"
                        f"{fd},{sub}")
        return ("\n".join(rows) + "\n").encode()

    def collectors_csv(self) -> bytes:
        return ("collector_id,hmac_key\n" + "".join(
            f"{c},{k.hex()}\n" for c, k in self.keys.items())).encode()

    def frames(self, intervals: range, *, seq0: int = 1) -> list[bytes]:
        """One frame per collector per interval index (kwh_del of all its meters)."""
        out = []
        for j in intervals:
            end = T0 + 900 * (j + 1)
            for c, key in self.keys.items():
                serials = np.array([int(m) for m in self.meter_ids if self.collector[m] == c],
                                   dtype=np.uint64)
                n = len(serials)
                out.append(encode_frame(
                    key, c, seq0 + j, end + 60,
                    interval=(serials, np.full(n, end), (serials % 1000).astype(np.int32) + j,
                              np.zeros(n, np.uint32), np.zeros(n, np.uint8)),
                ))
        return out

    def event_frame(self, meter_ids: list[str], t: int, event: str = "3.26.0.85") -> bytes:
        c = self.collector[meter_ids[0]]
        s = np.array([int(m) for m in meter_ids], dtype=np.uint64)
        return encode_frame(self.keys[c], c, 10_000, t + 60,
                            event=(s, np.full(len(s), t), np.full(len(s),
                                                                 codes.pack_event_code(event))))




def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """A real uvicorn server of a service's app, in a thread (no TestClient)."""

    def __init__(self, service: object) -> None:
        import threading
        import time

        import uvicorn

        from headend.serve.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(service), host="127.0.0.1",  # type: ignore[arg-type]
                                port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started and time.monotonic() - t0 < 10:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class NatsServer:
    """A private nats-server with JetStream (file store under ``store``), killed at close."""

    BINARY = "/usr/sbin/nats-server"

    def __init__(self, store: Path, *, port: int | None = None, config: Path | None = None
                 ) -> None:
        import shutil
        import subprocess
        import time

        binary = shutil.which("nats-server") or self.BINARY
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        args = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        if config is not None:
            args += ["-c", str(config)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket

        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)  # JetStream ready

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def headend_cmd(*args: str) -> list[str]:
    """Command line running the ``headend`` CLI with this interpreter."""
    import sys

    return [sys.executable, "-c", "from headend.cli import main; main()", *args]


class HookReceiver:
    """A webhook receiver on ``port`` (start/stop at will) that records what it got."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server: object = None

    def start(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                received.append(({k.lower(): v for k, v in self.headers.items()},
                                 self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        srv = self._server
        if srv is not None:
            srv.shutdown()  # type: ignore[attr-defined]
            srv.server_close()  # type: ignore[attr-defined]
            self._server = None


def pull_durable(nats_url: str, durable: str, stream: str = "HEADEND_OUT",
                 timeout_s: float = 300.0) -> list[bytes]:
    """Every message a JetStream durable consumer holds now (each acknowledged), as a
    third-party subscriber pulls them. A fetch that times out ends the pull only once
    the consumer has nothing pending (a busy server may stall a fetch for seconds)."""
    import asyncio
    import time

    import nats

    async def go() -> list[bytes]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(durable, stream=stream)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(512, timeout=2)
            except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from fetch
                info = await sub.consumer_info()
                if not info.num_pending and not info.num_ack_pending:
                    break
                continue
            for m in msgs:
                out.append(m.data)
                await m.ack()
        await nc.close()
        return out

    return asyncio.run(go())


def add_subscriber(data: Path, webhook: str | None = None, name: str = "tp",
                   scope: str = "family=reads") -> str:
    """Register a third-party subscriber with ``headend subscribers add`` (with a
    webhook if given); returns its JetStream durable consumer name."""
    import json
    import subprocess

    args = ["subscribers", "add", name, "--data", str(data), "--scope", scope]
    if webhook is not None:
        args += ["--webhook", webhook]
    added = subprocess.run(headend_cmd(*args), check=False, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    return str(json.loads(added.stdout)["durable"])
