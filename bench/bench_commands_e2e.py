"""End-to-end command benchmarks through a real ``headend serve`` and simulated collectors
(issue 12, performance targets; figures in docs/benchmarks.md, "Commands end to end").

``throughput``
    ``--commands`` (100,000) on-demand reads of as many meters of a simulated utility,
    posted (``POST /v1/commands``, ``--batch`` meters each) to a ``headend serve``
    subprocess and answered by a :class:`~headend.sim.fleet.CollectorFleet` in this
    process with zero latency and no failures (collector latency excluded): each read
    uploads the meter's last 4 interval reads and its register read, then its
    ``completed`` response. Measured: wall time from the first POST to the last
    command completed in the store (its ``updated_at``), serve's CPU time over the same
    span (``/proc/<pid>/stat`` utime + stime), and that every command ended
    ``completed`` (scored against the fleet's truth).
``latency``
    Commands posted at ``--rate`` (1,000) a second for ``--seconds`` (30), batches of
    50 meters every 50 ms on a fixed schedule, kinds 70 % read, 15 % ping, 10 %
    disconnect, 5 % connect; issue-to-downlink latency of each command = the moment its
    collector received the downlink line (long poll answer or MQTT message, in the
    fleet) minus the moment its POST was sent. p50, p99, max.

serve runs with a ``commands:`` block that lifts the per-collector throttle
(``--rate-per-s``, ``--max-in-flight``; defaults 10 and 16 would pace 2,000 reads per RF
collector to 200 s), since the target is the head end's own cost, not a policy, and with
``lease_ttl_s`` and ``ack_wait_s`` of 30 s (:data:`LEASE_S`).

Run::

    python bench/bench_commands_e2e.py throughput                 # 100,000 reads, HTTP
    python bench/bench_commands_e2e.py latency --transport http
    python bench/bench_commands_e2e.py latency --transport mqtt   # Mosquitto on :1883
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from headend.commands import open_command_store
from headend.sim import Faults, build_utility
from headend.sim.collectors import Behaviour, FleetMeters, score
from headend.sim.fleet import CollectorFleet
from headend.sim.writers import write_static

KINDS = ("read", "ping", "disconnect", "connect")
KIND_P = (0.70, 0.15, 0.10, 0.05)
TICKS = os.sysconf("SC_CLK_TCK")
#: serve's ingest lease and ack wait [s]: the defaults (4 s) are lost when the machine is
#: so loaded that the lease thread waits that long for the GIL, and the ingest worker
#: then reopens the data directory (one process here: no failover to speed up)
LEASE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` [s]."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Serve:
    """``headend serve`` as a subprocess on a free port."""

    def __init__(self, data: Path, commands: dict[str, Any], mqtt: str | None) -> None:
        cfg = data.parent / "serve.yaml"
        cfg.write_text(f"lease_ttl_s: {LEASE_S}\nack_wait_s: {LEASE_S}\ncommands:\n"
                       + "".join(f"  {k}: {v}\n" for k, v in commands.items()))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-c", "from headend.cli import main; main()", "serve",
                "--data", str(data), "--http", f"127.0.0.1:{self.port}", "--config", str(cfg)]
        self.client_id = f"bench-{uuid.uuid4().hex[:8]}"
        if mqtt:
            args += ["--mqtt", mqtt, "--mqtt-client-id", self.client_id]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
        self.log = (data.parent / "serve.log").open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("serve did not start")

    def profile(self, out: Path) -> subprocess.Popen[bytes]:
        """py-spy (collapsed stacks, every thread) on serve until stopped."""
        return subprocess.Popen(["py-spy", "record", "-p", str(self.proc.pid), "-o", str(out),
                                 "-f", "raw", "-r", "50", "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def utility(n_two_way: int, seed: int, out: Path) -> FleetMeters:
    """A simulated utility with at least ``n_two_way`` two-way meters; its meters.csv
    is written to ``out``."""
    n = n_two_way
    while True:
        u = build_utility(n, seed=seed)
        fm = FleetMeters.from_utility(u)
        if len(fm) >= n_two_way:
            write_static(u, Faults.from_names("").resolve(u), out)
            return fm
        n = int(n * 1.1) + 10


def load_meters(url: str, out: Path) -> None:
    r = httpx.post(url + "/v1/uploads", content=(out / "meters.csv").read_bytes(),
                   headers={"Content-Type": "text/csv"}, timeout=300)
    r.raise_for_status()


def throughput(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cmd-e2e-") as tmp:
        root = Path(tmp)
        data = root / "data"
        fm = utility(a.commands, a.seed, root / "sim")
        serve = Serve(data, {"rate_per_s": a.rate_per_s, "burst": a.rate_per_s,
                             "max_in_flight": a.max_in_flight}, None)
        fleet = None
        try:
            load_meters(serve.url, root / "sim")
            meters = fm.meter_id[:a.commands].tolist()
            fleet = CollectorFleet(fm, url=serve.url, behaviour=Behaviour(latency_scale=0.0),
                                   seed=a.seed, poll_wait_s=20, flush_s=a.flush_s).start()
            spy = serve.profile(a.profile) if a.profile else None
            c0 = cpu_s(serve.proc.pid)
            b0 = time.process_time()
            t0 = time.time()
            with httpx.Client(base_url=serve.url, timeout=300) as client:
                for i in range(0, len(meters), a.batch):
                    r = client.post("/v1/commands", json={"kind": "read",
                                                          "meter_ids": meters[i:i + a.batch]})
                    r.raise_for_status()
            t_posted = time.time()
            last = time.monotonic()
            while fleet.stats["answered"] < len(meters):
                time.sleep(0.2)
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    print(f"  {time.time() - t0:6.0f} s: answered "
                          f"{fleet.stats['answered']:,}", file=sys.stderr)
                if time.time() - t0 > a.timeout:
                    break
            t_done = time.time()
            c1 = cpu_s(serve.proc.pid)
            b1 = time.process_time()
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            store = open_command_store(data)
            cmds = store.list()
            store.close()
            final = {c.command_id: (c.state, c.reason) for c in cmds}
            done = [c.updated_ms for c in cmds if c.state == "completed"]
            truth = fleet.truth()
            s = score(truth, final)
        finally:
            if fleet is not None:
                fleet.stop()
            serve.stop()
        return {
            "commands": len(meters),
            "collectors": len(set(fm.collector_id[:a.commands].tolist())),
            "completed": len(done),
            "matched_truth": s["matched"],
            "post_s": t_posted - t0,
            "wall_first_post_to_last_completed_s": (max(done) / 1000 - t0) if done else -1.0,
            "serve_cpu_s": c1 - c0,
            "fleet_and_poster_cpu_s": b1 - b0,
            "reads_uploaded": sum(t.reads for t in truth),
            "observed_until_s": t_done - t0,
            "rate_per_s": a.rate_per_s,
            "max_in_flight": a.max_in_flight,
            "flush_s": a.flush_s,
        }


def latency(a: argparse.Namespace) -> dict[str, Any]:
    mqtt = a.mqtt if a.transport == "mqtt" else None
    with tempfile.TemporaryDirectory(prefix="bench-cmd-lat-") as tmp:
        root = Path(tmp)
        fm = utility(a.meters, a.seed, root / "sim")
        fleet = None
        if mqtt:  # subscribed before serve hands anything over
            fleet = CollectorFleet(fm, transport="mqtt", mqtt=mqtt,
                                   behaviour=Behaviour(latency_scale=0.0), seed=a.seed)
            fleet.start()
        serve = Serve(root / "data", {"rate_per_s": a.rate_per_s, "burst": a.rate_per_s,
                                      "max_in_flight": a.max_in_flight}, mqtt)
        posted: dict[str, float] = {}
        try:
            load_meters(serve.url, root / "sim")
            if fleet is None:
                fleet = CollectorFleet(fm, url=serve.url, behaviour=Behaviour(latency_scale=0.0),
                                       seed=a.seed, poll_wait_s=20).start()
            spy = serve.profile(a.profile) if a.profile else None
            rng = np.random.default_rng(a.seed)
            step = a.batch / a.rate
            n_batches = int(a.seconds / step)
            c0 = cpu_s(serve.proc.pid)
            lag = 0.0
            with httpx.Client(base_url=serve.url, timeout=60) as client:
                t_start = time.time()
                for b in range(n_batches):
                    due = t_start + b * step
                    pause = due - time.time()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        lag = max(lag, -pause)
                    kind = KINDS[int(rng.choice(4, p=KIND_P))]
                    ids = rng.choice(len(fm), a.batch, replace=False)
                    sent = time.time()
                    r = client.post("/v1/commands", json={
                        "kind": kind, "meter_ids": fm.meter_id[ids].tolist(),
                        "confirm": True})
                    r.raise_for_status()
                    for c in r.json()["commands"]:
                        if c["state"] == "queued":
                            posted[c["command_id"]] = sent
                t_end = time.time()
            deadline = time.time() + 60
            while time.time() < deadline:
                got = {t.command_id for t in fleet.truth()}
                if all(i in got for i in posted):
                    break
                time.sleep(0.5)
            c1 = cpu_s(serve.proc.pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            truth = {t.command_id: t for t in fleet.truth()}
        finally:
            if fleet is not None:
                fleet.stop()
            serve.stop()
            if mqtt:
                drop_session(mqtt, serve.client_id)
    lat = np.array([truth[i].received_ms / 1000 - t for i, t in posted.items() if i in truth])
    return {
        "transport": a.transport,
        "commands": len(posted),
        "received": len(lat),
        "rate_achieved_per_s": len(posted) / (t_end - t_start),
        "poster_max_lag_s": lag,
        "p50_s": float(np.percentile(lat, 50)),
        "p99_s": float(np.percentile(lat, 99)),
        "max_s": float(lat.max()),
        "serve_cpu_share": (c1 - c0) / (time.time() - t_start),
        "collectors": len(fm.collectors),
    }


def drop_session(url: str, client_id: str) -> None:
    """Remove serve's persistent MQTT uplink session from the broker."""
    import paho.mqtt.client as paho

    host, _, port = url.split("://", 1)[-1].partition(":")
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=True)
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    c.connect(host, int(port or 1883))
    c.loop_start()
    done.wait(5)
    c.loop_stop()
    c.disconnect()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("throughput", "latency"))
    p.add_argument("--commands", type=int, default=100_000)
    p.add_argument("--meters", type=int, default=20_000, help="latency: two-way meters")
    p.add_argument("--rate", type=float, default=1000.0, help="latency: commands/s")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--transport", choices=("http", "mqtt"), default="http")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883")
    p.add_argument("--rate-per-s", type=float, default=100_000)
    p.add_argument("--max-in-flight", type=int, default=4000)
    p.add_argument("--flush-s", type=float, default=0.5,
                   help="throughput: the collectors upload their answers this often [s]")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy collapsed stacks of serve to this file")
    p.add_argument("--json", type=Path, default=None, help="folder for the JSON figures")
    a = p.parse_args()
    a.batch = a.batch or (1000 if a.what == "throughput" else 50)
    runs = [(throughput if a.what == "throughput" else latency)(a) for _ in range(a.repeat)]
    name = f"commands_e2e_{a.what}" + ("" if a.what == "throughput" else f"_{a.transport}")
    for i, r in enumerate(runs):
        report(f"{name}_run{i + 1}", r)
    if len(runs) > 1:
        keys = [k for k, v in runs[0].items() if isinstance(v, float)]
        report(f"{name}_median", {k: statistics.median(r[k] for r in runs) for k in keys},
               a.json)
    elif a.json:
        report(name, runs[0], a.json)


if __name__ == "__main__":
    main()
