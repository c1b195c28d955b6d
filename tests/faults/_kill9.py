"""The kill -9 scenario of the fault suite, at any size (``test_kill9.py`` runs it small in
CI, ``kill9_run.py`` with 1M reads by path).

A collector-like client posts uploads of binary frames (every meter, a few intervals
each) and retries each until it is acknowledged (``200``), as collectors do. Some
uploads, drawn at random, are hit: the client posts, ``serve`` is killed with SIGKILL a
random 0-300 ms later (between receipt and store, or after), restarted, and the client
posts the upload again.

Checked: the store holds each read exactly once, and a durable third-party subscriber
(a webhook on the embedded bus, a JetStream durable consumer on NATS) has every row:
none missing (at least once: duplicates are allowed and removed on (meter, type, end),
as docs/streams.md tells subscribers to do). The outbound stream ``HEADEND_OUT`` itself
is read too, so a failure says whether rows were never published or only not (yet)
delivered.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from headend.bus import open_bus
from headend.serve.config import EMBEDDED_BUS_DIR
from headend.serve.streams import OUT_STREAM
from tests.serve._fleet import (
    Fleet,
    HookReceiver,
    NatsServer,
    add_subscriber,
    free_port,
    headend_cmd,
    pull_durable,
)

Key = tuple[str, str, str]


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


def post_until_acknowledged(url: str, body: bytes, ct: str) -> None:
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


def post_once(url: str, body: bytes, ct: str) -> None:
    try:
        httpx.post(url + "/v1/uploads", content=body, headers={"content-type": ct}, timeout=60)
    except httpx.TransportError:
        pass


def row_keys(payloads: Iterable[bytes]) -> tuple[int, set[Key]]:
    """Rows in the JSON-lines payloads, and their distinct (meter, type, end)."""
    n = 0
    keys: set[Key] = set()
    for body in payloads:
        for line in body.splitlines():
            if line.strip():
                row = json.loads(line)
                keys.add((row["meter"], row["type"], row["end"]))
                n += 1
    return n, keys


class _Counter:
    """Distinct row keys of a growing list of payloads, parsed incrementally."""

    def __init__(self, payloads: list[tuple[dict[str, str], bytes]]) -> None:
        self.payloads = payloads
        self.seen = 0
        self.rows = 0
        self.keys: set[Key] = set()

    def update(self) -> int:
        new = self.payloads[self.seen:len(self.payloads)]
        self.seen += len(new)
        n, keys = row_keys(b for _, b in new)
        self.rows += n
        self.keys |= keys
        return len(self.keys)


def out_stream_payloads(url: str) -> list[bytes]:
    """Every reads payload the outbound stream holds, through an ephemeral consumer of
    the bus at ``url`` (the embedded bus directory once serve is stopped, or NATS)."""
    bus = open_bus(url)
    try:
        c = bus.consumer(OUT_STREAM, None, filter_subject="headend.reads.*.*.*.*.*.*.*", start_seq=1)
        out: list[bytes] = []
        while True:
            got = c.fetch(4096, 2.0)
            if not got:
                break
            out.extend(m.data for m in got)
            for m in got:
                m.ack()
        c.close()
        return out
    finally:
        bus.close()


@dataclass
class Outcome:
    """Figures of one run."""

    total: int
    stored: int = 0
    stored_distinct: int = 0
    published_distinct: int = 0
    subscriber_rows: int = 0
    subscriber_distinct: int = 0
    posts: int = 0
    seconds: float = 0.0
    catch_up_s: float = 0.0
    kills: list[int] = field(default_factory=list)

    def check(self) -> None:
        """Assert the guarantees: the store exact, every read published, every row at
        the subscriber (at least once)."""
        assert self.stored == self.total, f"reads lost or doubled in the store: {self.report()}"
        assert self.stored_distinct == self.total, self.report()
        assert self.published_distinct == self.total, f"rows never published: {self.report()}"
        assert self.subscriber_distinct == self.total, \
            f"{self.total - self.subscriber_distinct} rows missing for the subscriber: " \
            f"{self.report()}"
        assert self.subscriber_rows >= self.total, self.report()

    def report(self) -> str:
        return (f"{self.total:,} reads, {len(self.kills)} kills: store {self.stored:,} rows "
                f"({self.stored_distinct:,} distinct), outbound stream "
                f"{self.published_distinct:,} distinct, subscriber {self.subscriber_rows:,} "
                f"rows ({self.subscriber_distinct:,} distinct, {self.posts:,} messages); "
                f"stream {self.seconds:.0f} s, catch-up {self.catch_up_s:.0f} s")


def run(bus: str, tmp_path: Path, *, meters: int, uploads: int, intervals: int, kills: int,
        seed: int, catch_up_s: float) -> Outcome:
    """The scenario (module docstring) on ``bus`` (``embedded`` or ``nats``); returns its
    figures for the caller to check."""
    nats_srv = NatsServer(tmp_path / "js") if bus == "nats" else None
    try:
        return _run(nats_srv, tmp_path, meters=meters, uploads=uploads, intervals=intervals,
                    kills=kills, seed=seed, catch_up_s=catch_up_s)
    finally:
        if nats_srv is not None:
            nats_srv.close()


def _run(nats_srv: NatsServer | None, tmp_path: Path, *, meters: int, uploads: int,
         intervals: int, kills: int, seed: int, catch_up_s: float) -> Outcome:
    fleet = Fleet.make(meters)
    total = meters * uploads * intervals
    out = Outcome(total)
    data = tmp_path / "data"
    receiver = HookReceiver() if nats_srv is None else None
    serve = Serve(data, tmp_path / "serve.log", nats_srv.url if nats_srv else None)
    rng = np.random.default_rng(seed)
    hit = set(rng.choice(uploads, kills, replace=False).tolist())
    out.kills = sorted(hit)
    progress = (tmp_path / "progress.log").open("w")
    try:
        if receiver is not None:
            receiver.start()
        durable = add_subscriber(data, receiver.url if receiver is not None else None)
        t0 = time.monotonic()
        serve.start()
        post_until_acknowledged(serve.url, fleet.collectors_csv(), "text/csv")
        post_until_acknowledged(serve.url, fleet.meters_csv(), "text/csv")
        for k in range(uploads):
            body = b"".join(fleet.frames(range(k * intervals, (k + 1) * intervals)))
            ct = "application/octet-stream"
            if k in hit:
                t = threading.Thread(target=post_once, args=(serve.url, body, ct))
                t.start()
                time.sleep(float(rng.uniform(0.0, 0.3)))
                serve.kill9()
                t.join(60)
                serve.start()
            post_until_acknowledged(serve.url, body, ct)
            progress.write(f"{time.monotonic() - t0:.1f} upload {k} "
                           f"{'killed' if k in hit else ''}\n")
            progress.flush()
        out.seconds = time.monotonic() - t0
        if receiver is not None:  # the webhook catches up
            counter = _Counter(receiver.received)
            deadline = time.monotonic() + catch_up_s
            while time.monotonic() < deadline and counter.update() < total:
                time.sleep(1)
            out.catch_up_s = time.monotonic() - t0 - out.seconds
    finally:
        progress.close()
        serve.stop()
        if receiver is not None:
            receiver.stop()
    exported = subprocess.run(headend_cmd("export", "reads", "--data", str(data)),
                              check=True, capture_output=True, text=True,
                              timeout=600).stdout.splitlines()
    out.stored = len(exported) - 1
    out.stored_distinct = len({tuple(line.split(",")[:3]) for line in exported[1:]})
    bus_url = nats_srv.url if nats_srv is not None else \
        f"file://{(data / EMBEDDED_BUS_DIR).resolve()}"
    out.published_distinct = len(row_keys(out_stream_payloads(bus_url))[1])
    if receiver is not None:
        payloads = [b for _, b in receiver.received]
    else:
        assert nats_srv is not None
        payloads = pull_durable(nats_srv.url, durable)
    out.posts = len(payloads)
    out.subscriber_rows, keys = row_keys(payloads)
    out.subscriber_distinct = len(keys)
    return out
