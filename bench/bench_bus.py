"""Benchmark of the event backbone (not a test): collector publish -> JetStream ->
ingest workers -> durable store -> third-party stream.

Scenarios (``--scenario``):

* ``throughput``: publish a fixed number of uploads (built beforehand) as fast as
  possible, with 1 and then 2 worker processes; reads/s from the first publish until
  every upload part is acknowledged by its worker (``acked``: durable in the store,
  third-party messages published; the ingest queue is empty) and until the last read
  is seen on the third-party stream here (``stored``); CPU seconds per process;
* ``sustained``: paced at ``--rate`` reads/s (30,000) for ``--duration`` s; latency
  percentiles from uplink publish to third-party delivery (a consumer in this process),
  to the third-party stream (``_to_stream``: the time JetStream stored the message) and
  of the uplink's own submit (``_uplink``: split, publish, stored in the ingest queue);
* ``burst``: paced at ``--burst-rate`` (150,000 reads/s) for ``--burst-duration`` s;
  how long until drained, latency percentiles.

Runs a private nats-server (file storage) unless ``--nats URL`` is given. Example::

    python bench/bench_bus.py --scenario all --meters 20000 --duration 20
    python bench/bench_bus.py --scenario all --per-frame 12 --intervals 1 --burst-duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

import numpy as np

import headend.wire.csvfmt  # noqa: F401  (import order, see serve.service)
from headend.bus import ack_all, open_bus
from headend.bus.nats import NatsBus
from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.streams import OUT_STREAM
from headend.serve.worker import INGEST_STREAM
from headend.wire.frame import encode_frame

T0 = 1_767_225_600
N_COLLECTORS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_csv(n: int) -> tuple[bytes, bytes, dict[int, bytes]]:
    keys = {501 + c: bytes([c + 1]) * 32 for c in range(N_COLLECTORS)}
    rows = [("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
             "substation_id,interval_minutes")]
    per = -(-n // N_COLLECTORS)  # a collector serves a contiguous area (its transformers)
    for i in range(n):
        c = 501 + i // per
        rows.append(f"{100_000_000 + i},electric,rf,true,{c},T{i // 8},F{i // 400},S{i // 8000},5")
    coll = "collector_id,hmac_key\n" + "".join(f"{c},{k.hex()}\n" for c, k in keys.items())
    return ("\n".join(rows) + "\n").encode(), coll.encode(), keys


def frames_for(n: int, keys: dict[int, bytes], interval: int, per_frame: int = 1
               ) -> list[tuple[bytes, int]]:
    """One frame per collector: ``per_frame`` consecutive 5-minute reads of each of its
    meters (``interval`` counts frames; 12 = an hourly upload of 5-minute data)."""
    serial = 100_000_000 + np.arange(n, dtype=np.uint64)
    coll = 501 + np.arange(n) // -(-n // N_COLLECTORS)
    first = interval * per_frame
    ends = T0 + 300 * (first + 1 + np.arange(per_frame, dtype=np.int64))
    out = []
    for c, key in keys.items():
        s = np.repeat(serial[coll == c], per_frame)
        e = np.tile(ends, len(s) // per_frame)
        out.append((encode_frame(key, c, interval + 1, int(ends[-1]) + 30, interval=(
            s, e, (s % 997).astype(np.int32), np.zeros(len(s), np.uint32),
            np.zeros(len(s), np.uint8))), len(s)))
    return out


class Receiver:
    """Counts third-party rows and their latency, per read, from the uplink publish
    (header ``Headend-Source: bench:<time>``) to receipt here, and up to the time the
    third-party stream stored the message (``Message.stored_at``): the rest is this
    receiver's own delay."""

    #: bytes asked for per pull (nats-server cuts a client off as a slow consumer when
    #: more than its max_pending, 64 MiB, waits to be sent to it)
    MAX_BYTES = 16 * 1024 * 1024

    def __init__(self, url: str) -> None:
        self.bus = open_bus(url)
        self.consumer = self.bus.consumer(OUT_STREAM, None, start_seq=0,
                                          filter_subject="headend.reads.raw.*.*.*.*.*.*")
        self.rows = 0
        # per message: (publish -> received [s], publish -> stored in the stream [s], rows)
        self.lat: list[tuple[float, float, int]] = []
        self.log: TextIO | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        size = 64 * 1024
        while not self._stop.is_set():
            # a pull for one message returns when it arrives; then take what is there
            msgs = self.consumer.fetch(1, 0.2)
            if msgs:
                size = max(size * 7 // 8, len(msgs[0].data), 1)
                msgs += self.consumer.fetch(max(1, min(1000, self.MAX_BYTES // size)), 0.001)
            now = time.time()
            for m in msgs:
                n = int(m.headers.get("Headend-Rows", "0"))
                self.rows += n
                src = m.headers.get("Headend-Source", "")
                if src.startswith("bench:"):
                    t = float(src[6:])
                    self.lat.append((now - t, m.stored_at - t, n))
                    if self.log is not None:
                        self.log.write(f"{t:.4f} {m.stored_at - t:.4f} {now - t:.4f} {n}\n")
            ack_all(msgs)

    def wait(self, rows: int, timeout_s: float) -> float:
        t0 = time.monotonic()
        while self.rows < rows and time.monotonic() - t0 < timeout_s:
            time.sleep(0.01)
        return time.time()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.bus.close()
        if self.log is not None:
            self.log.close()


def wait_done(bus: NatsBus, rcv: Receiver, rows: int, timeout_s: float
              ) -> tuple[float, float]:
    """Times when (1) the ingest queue is empty: every upload part acknowledged by its
    worker, i.e. durable in the store (and its third-party messages published) and
    (2) the receiver has seen ``rows`` third-party rows."""
    t0 = time.monotonic()
    acked = seen = 0.0
    while not (acked and seen) and time.monotonic() - t0 < timeout_s:
        if not acked and not bus.stream_messages(INGEST_STREAM):
            acked = time.time()
        if not seen and rcv.rows >= rows:
            seen = time.time()
        time.sleep(0.005)
    return acked or time.time(), seen or time.time()


def cpu_s(pid: int) -> float:
    """CPU time (user + system) of a process so far [s]."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_workers(k: int, data: Path, url: str, parts: int, bits: int, log: Path
                  ) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "HEADEND_STREAM_GROUP": os.environ.get("HEADEND_STREAM_GROUP",
                                                                  "transformer")}
    procs = []
    for i in range(k):
        with (log / f"w{i}.log").open("ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from headend.cli import main; main()", "worker",
                 "--data", str(data), "--nats", url, "--partitions", str(parts),
                 "--bucket-bits", str(bits)], stdout=out, stderr=subprocess.STDOUT, env=env))
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(20)


def pct(lat: list[tuple[float, float, int]], which: int = 0, key: str = "") -> dict[str, float]:
    """p50, p99 and max [ms] of one latency column, each message weighted by its rows."""
    if not lat:
        return {}
    a = np.asarray(lat)
    order = np.argsort(a[:, which])
    v, w = a[order, which] * 1000, np.cumsum(a[order, 2])
    at = np.searchsorted(w, np.array([0.5, 0.99]) * w[-1])
    return {f"p50{key}_ms": round(float(v[at[0]]), 1), f"p99{key}_ms": round(float(v[at[1]]), 1),
            f"max{key}_ms": round(float(v[-1]), 1)}


def paced(svc: Service, rcv: Receiver, frames_of, rate: float, duration: float,
          start_interval: int) -> dict[str, object]:
    """Publish frames at ``rate`` reads/s for ``duration`` s."""
    assert svc.uplink is not None
    sent = 0
    t0 = time.time()
    interval = start_interval
    base_rows = rcv.rows
    lat0 = len(rcv.lat)
    uplink: list[tuple[float, float, int]] = []  # submit (split, publish, stored) [s]
    while time.time() - t0 < duration:
        for f, n in frames_of(interval):
            due = t0 + (sent + n) / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            t = time.time()
            svc.uplink.submit(f, source=f"bench:{t}", wait=False)
            uplink.append((time.time() - t, 0.0, n))
            sent += n
        interval += 1
    t_pub = time.time() - t0
    end = rcv.wait(base_rows + sent, 120)
    return {"reads": sent, "offered_reads_per_s": round(sent / t_pub),
            "drained_after_s": round(end - t0, 2),
            "achieved_reads_per_s": round(sent / (end - t0)), **pct(rcv.lat[lat0:]),
            **pct(rcv.lat[lat0:], 1, "_to_stream"), **pct(uplink, 0, "_uplink"),
            "next_interval": interval}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=["throughput", "sustained", "burst", "all"],
                    default="all")
    ap.add_argument("--meters", type=int, default=20_000)
    ap.add_argument("--intervals", type=int, default=10, help="throughput: uploads per meter")
    ap.add_argument("--rate", type=float, default=30_000)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--burst-rate", type=float, default=150_000)
    ap.add_argument("--burst-duration", type=float, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--bucket-bits", type=int, default=11)
    ap.add_argument("--nats", default=None)
    ap.add_argument("--per-frame", type=int, default=1,
                    help="5-minute reads per meter in each collector frame (12: hourly uploads)")
    ap.add_argument("--latency-log", type=Path, default=None,
                    help="write one line per third-party message of the paced scenarios: "
                         "publish time, latency to the stream and to here [s], rows")
    ap.add_argument("--keep-logs", type=Path, default=None,
                    help="copy the workers' logs to this directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-bus-"))
    server = None
    url = args.nats
    if url is None:
        port = free_port()
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        server = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd",
                                   str(work / "js")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"nats://127.0.0.1:{port}"
        time.sleep(0.5)
    results: dict[str, object] = {"meters": args.meters, "partitions": args.partitions,
                                  "per_frame": args.per_frame, "cpus": os.cpu_count(),
                                  "group": os.environ.get("HEADEND_STREAM_GROUP",
                                                          "transformer"),
                                  "load_avg_1m": os.getloadavg()[0]}
    meters, colls, keys = fleet_csv(args.meters)
    cache: dict[int, list[tuple[bytes, int]]] = {}

    def frames_of(i: int) -> list[tuple[bytes, int]]:
        if i not in cache:
            cache.clear()
            cache[i] = frames_for(args.meters, keys, i, args.per_frame)
        return cache[i]

    interval = 0
    try:
        data = work / "data"
        cfg = load_config(env={}, data=data, bus=url, workers=0, partitions=args.partitions,
                          bucket_bits=args.bucket_bits,
                          stream_group=os.environ.get("HEADEND_STREAM_GROUP", "transformer"))
        svc = Service(cfg)
        svc.start()
        assert svc.uplink is not None
        svc.uplink.submit(colls, source="bench", content_type="text/csv")
        svc.uplink.submit(meters, source="bench", content_type="text/csv")
        rcv = Receiver(url)
        if args.scenario in ("throughput", "all"):
            for k in sorted({1, args.workers}):
                procs = start_workers(k, data, url, args.partitions, args.bucket_bits, work)
                time.sleep(4)  # imports, leases
                # warm-up interval (dedup index, topology)
                for f, n in frames_of(interval):
                    svc.uplink.submit(f, source="warm", wait=False)
                rcv.wait(rcv.rows + args.meters * args.per_frame, 60)
                interval += 1
                # the collectors' frames are built before the clock starts (encoding
                # and signing them is the collectors' work, not the head end's)
                uploads = [frames_for(args.meters, keys, interval + i, args.per_frame)
                           for i in range(args.intervals)]
                base = rcv.rows
                total = 0
                pids = {"workers": [p.pid for p in procs], "bench": [os.getpid()],
                        "nats_server": [server.pid] if server is not None else []}
                cpu0 = {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}
                t0 = time.time()
                for frames in uploads:
                    for f, n in frames:
                        svc.uplink.submit(f, source=f"bench:{time.time()}", wait=False)
                        total += n
                    interval += 1
                del uploads
                t_pub = time.time() - t0
                acked, end = wait_done(svc.bus, rcv, base + total, 300)  # type: ignore[arg-type]
                cpu = {k: round(sum(cpu_s(p) for p in v) - cpu0[k], 1) for k, v in pids.items()}
                results[f"throughput_{k}_workers"] = {
                    "reads": total, "publish_reads_per_s": round(total / t_pub),
                    "acked_reads_per_s": round(total / (acked - t0)),
                    "stored_reads_per_s": round(total / (end - t0)),
                    "seconds": round(end - t0, 2), "cpu_s": cpu}
                print(json.dumps({f"throughput_{k}_workers": results[f"throughput_{k}_workers"]}),
                      flush=True)
                stop(procs)
        procs = start_workers(args.workers, data, url, args.partitions, args.bucket_bits, work)
        time.sleep(4)
        for f, n in frames_of(interval):  # warm-up (dedup index, topology), not timed
            svc.uplink.submit(f, source="warm", wait=False)
        rcv.wait(rcv.rows + args.meters * args.per_frame, 60)
        interval += 1
        if args.latency_log is not None:
            rcv.log = args.latency_log.open("w")
        if args.scenario in ("sustained", "all"):
            r = paced(svc, rcv, frames_of, args.rate, args.duration, interval)
            interval = int(r.pop("next_interval"))  # type: ignore[call-overload]
            results["sustained"] = r
            print(json.dumps({"sustained": r}), flush=True)
        if args.scenario in ("burst", "all"):
            r = paced(svc, rcv, frames_of, args.burst_rate, args.burst_duration, interval)
            r.pop("next_interval")
            results["burst"] = r
            print(json.dumps({"burst": r}), flush=True)
        stop(procs)
        rcv.close()
        svc.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if args.keep_logs is not None:
            for log in work.glob("w*.log"):
                shutil.copy(log, args.keep_logs)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
