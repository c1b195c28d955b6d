"""kill -9 of ``serve`` at 20 random points of a stream of 1M reads (a long run).

Not collected by the CI suite (its name is not ``test_*.py``): it takes 5-10 minutes
per bus. Run it by path::

    python -m pytest -q tests/faults/kill9_run.py

Status (2026-12-04): on the embedded bus the store check passes (1,000,000 reads, none
lost or doubled after 20 kills); the webhook subscriber had 619,995 of the 1,000,000
rows 180 s after the stream ended, so the subscriber check FAILS (slow delivery or rows
never published: not yet told apart). Issue 10 stays open on it.

The embedded default (durable bus in the data directory) and NATS JetStream (a private
nats-server). A collector-like client posts 100 uploads of 10,000 reads (binary frames
of 2,000 meters) and retries each until it is acknowledged (``200``), as collectors
do. Twenty uploads, drawn at random, are hit: the client posts, ``serve`` is killed
with SIGKILL a random 0-300 ms later (between receipt and store, or after), restarted,
and the client posts the upload again.

Checked: the store holds each read exactly once, and a durable third-party subscriber
(a webhook on the embedded bus, a JetStream durable consumer on NATS) has every row:
none missing (at least once: duplicates are allowed and removed on (meter, time), as
docs/streams.md tells subscribers to do).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve._fleet import Fleet, HookReceiver, NatsServer, free_port, headend_cmd

METERS = 2_000
UPLOADS = 100
INTERVALS_PER_UPLOAD = 5
KILLS = 20
TOTAL = METERS * UPLOADS * INTERVALS_PER_UPLOAD  # 1,000,000 reads


class Serve:
    """``headend serve`` as a subprocess that can be killed and restarted."""

    def __init__(self, data: Path, log: Path, nats: str | None) -> None:
        self.data, self.log, self.nats = data, log, nats
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["serve", "--data", str(self.data), "--http", f"127.0.0.1:{self.port}"]
        if self.nats:
            args += ["--nats", self.nats]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(headend_cmd(*args), stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError("serve did not come up: " + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise


def _post_until_acknowledged(url: str, body: bytes, ct: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url + "/v1/uploads", content=body, headers={"content-type": ct},
                           timeout=60)
            if r.status_code == 200:
                return
            assert r.status_code == 503, r.text  # only "not stored in time" is retried
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("upload never acknowledged")


def _rows(payloads: Iterator[bytes]) -> tuple[int, set[tuple[str, str]]]:
    n = 0
    keys: set[tuple[str, str]] = set()
    for body in payloads:
        for line in body.splitlines():
            if line.strip():
                row = json.loads(line)
                keys.add((row["meter"], row["end"]))
                n += 1
    return n, keys


def _pull_durable(nats_url: str, durable: str) -> list[bytes]:
    import asyncio

    import nats

    async def go() -> list[bytes]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(durable, stream="HEADEND_OUT")
        out: list[bytes] = []
        while True:
            try:
                msgs = await sub.fetch(512, timeout=2)
            except nats.errors.TimeoutError:
                break
            for m in msgs:
                out.append(m.data)
                await m.ack()
        await nc.close()
        return out

    return asyncio.run(go())


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("bus", ["embedded", pytest.param("nats", marks=pytest.mark.service("nats"))])
def test_kill9_at_20_points_loses_nothing_doubles_nothing(bus: str, tmp_path: Path) -> None:
    fleet = Fleet.make(METERS)
    data = tmp_path / "data"
    nats_srv = NatsServer(tmp_path / "js") if bus == "nats" else None
    receiver = HookReceiver() if bus == "embedded" else None
    sub_args = ["subscribers", "add", "tp", "--data", str(data), "--scope", "family=reads"]
    if receiver is not None:
        receiver.start()
        sub_args += ["--webhook", receiver.url]
    added = subprocess.run(headend_cmd(*sub_args), check=True, capture_output=True, text=True)
    durable = json.loads(added.stdout)["durable"]
    serve = Serve(data, tmp_path / "serve.log", nats_srv.url if nats_srv else None)
    rng = np.random.default_rng(20261204)
    hit = set(rng.choice(UPLOADS, KILLS, replace=False).tolist())
    progress = (tmp_path / "progress.log").open("w")
    t0 = time.monotonic()
    try:
        serve.start()
        _post_until_acknowledged(serve.url, fleet.collectors_csv(), "text/csv")
        _post_until_acknowledged(serve.url, fleet.meters_csv(), "text/csv")
        for k in range(UPLOADS):
            body = b"".join(fleet.frames(range(k * INTERVALS_PER_UPLOAD,
                                               (k + 1) * INTERVALS_PER_UPLOAD)))
            ct = "application/octet-stream"
            if k in hit:
                t = threading.Thread(target=_post_once, args=(serve.url, body, ct))
                t.start()
                time.sleep(float(rng.uniform(0.0, 0.3)))
                serve.kill9()
                t.join(60)
                serve.start()
            _post_until_acknowledged(serve.url, body, ct)
            progress.write(f"{time.monotonic() - t0:.1f} upload {k} {'killed' if k in hit else ''}\n")
            progress.flush()
        if receiver is not None:  # the webhook catches up
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if len(_rows(iter(b for _, b in list(receiver.received)))[1]) >= TOTAL:
                    break
                time.sleep(1)
    finally:
        progress.close()
        serve.stop()
        if receiver is not None:
            receiver.stop()
    exported = subprocess.run(headend_cmd("export", "reads", "--data", str(data)), check=True,
                              capture_output=True, text=True, timeout=300).stdout.splitlines()
    keys = {tuple(line.split(",")[:3]) for line in exported[1:]}
    assert len(exported) - 1 == TOTAL, "reads lost or doubled in the store"
    assert len(keys) == TOTAL
    if receiver is not None:
        payloads = [b for _, b in receiver.received]
    else:
        assert nats_srv is not None
        payloads = _pull_durable(nats_srv.url, durable)
        nats_srv.close()
    n_rows, sub_keys = _rows(iter(payloads))
    assert len(sub_keys) == TOTAL, f"{TOTAL - len(sub_keys)} rows missing for the subscriber"
    assert n_rows >= TOTAL


def _post_once(url: str, body: bytes, ct: str) -> None:
    try:
        httpx.post(url + "/v1/uploads", content=body, headers={"content-type": ct}, timeout=60)
    except httpx.TransportError:
        pass
