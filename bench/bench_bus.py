"""Benchmark of the event backbone (not a test): collector publish -> JetStream ->
ingest workers -> durable store -> third-party stream.

Scenarios (``--scenario``):

* ``throughput``: publish a fixed number of uploads as fast as possible, with 1 and
  then 2 worker processes; reads/s from the first publish until the last read is
  durable (seen on the third-party stream, which is published right after the durable
  append);
* ``sustained``: paced at ``--rate`` reads/s (30,000) for ``--duration`` s; latency
  percentiles from uplink publish to third-party delivery (a consumer in this process);
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

import numpy as np

import headend.wire.csvfmt  # noqa: F401  (import order, see serve.service)
from headend.bus import ack_all, open_bus
from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.streams import OUT_STREAM
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
    """Counts third-party rows and the latency of each message (source = send time)."""

    def __init__(self, url: str) -> None:
        self.bus = open_bus(url)
        self.consumer = self.bus.consumer(OUT_STREAM, None, start_seq=0,
                                          filter_subject="headend.reads.raw.*.*.*.*.*.*")
        self.rows = 0
        self.lat: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # a pull for one message returns when it arrives; then take what is there
            msgs = self.consumer.fetch(1, 0.2)
            if msgs:
                msgs += self.consumer.fetch(1000, 0.001)
            now = time.time()
            for m in msgs:
                n = int(m.headers.get("Headend-Rows", "0"))
                self.rows += n
                src = m.headers.get("Headend-Source", "")
                if src.startswith("bench:"):
                    self.lat.extend([now - float(src[6:])] * n)
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


def pct(lat: list[float]) -> dict[str, float]:
    if not lat:
        return {}
    a = np.asarray(lat) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1),
            "max_ms": round(float(a.max()), 1)}


def paced(svc: Service, rcv: Receiver, frames_of, rate: float, duration: float,
          start_interval: int) -> dict[str, object]:
    """Publish frames at ``rate`` reads/s for ``duration`` s."""
    assert svc.uplink is not None
    sent = 0
    t0 = time.time()
    interval = start_interval
    base_rows = rcv.rows
    lat0 = len(rcv.lat)
    while time.time() - t0 < duration:
        for f, n in frames_of(interval):
            due = t0 + (sent + n) / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            svc.uplink.submit(f, source=f"bench:{time.time()}", wait=False)
            sent += n
        interval += 1
    t_pub = time.time() - t0
    end = rcv.wait(base_rows + sent, 120)
    return {"reads": sent, "offered_reads_per_s": round(sent / t_pub),
            "drained_after_s": round(end - t0, 2),
            "achieved_reads_per_s": round(sent / (end - t0)), **pct(rcv.lat[lat0:]),
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
                base = rcv.rows
                total = 0
                t0 = time.time()
                for _ in range(args.intervals):
                    for f, n in frames_of(interval):
                        svc.uplink.submit(f, source=f"bench:{time.time()}", wait=False)
                        total += n
                    interval += 1
                t_pub = time.time() - t0
                end = rcv.wait(base + total, 300)
                results[f"throughput_{k}_workers"] = {
                    "reads": total, "publish_reads_per_s": round(total / t_pub),
                    "stored_reads_per_s": round(total / (end - t0))}
                print(json.dumps({f"throughput_{k}_workers": results[f"throughput_{k}_workers"]}),
                      flush=True)
                stop(procs)
        procs = start_workers(args.workers, data, url, args.partitions, args.bucket_bits, work)
        time.sleep(4)
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
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
