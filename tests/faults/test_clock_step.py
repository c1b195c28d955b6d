"""The wall clock stepped back, then forward, by an hour while ``serve`` runs.

``headend serve`` (embedded) runs under libfaketime (Debian package ``libfaketime``,
installed by ``.ci/run``), whose offset is read from a file that the test rewrites
mid-stream: ``+0``, then ``-1h`` (an NTP step back), then ``+0`` (forward again). The
monotonic clock is left alone, as a real step leaves it. Twelve hours of 24 meters'
reads and events are uploaded over HTTP, hour by hour, with a transformer outage
(last gasps, missing reads, restorations) from hour 3 to 5; the clock steps back at
hour 4 and forward at hour 8.

Checked: every read stored exactly once, and the outages found equal those of the
same stream run with a steady clock.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from headend.rules.testing import Fault, grid_meters, simulate
from headend.wire.csvfmt import write_events_csv, write_meters_csv, write_reads_csv

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
HOURS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _headend(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "headend", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=120)


def _csv(writer: Any, table: pa.Table, ids: pa.Array) -> bytes:
    if "meter_id" not in table.column_names:
        table = table.append_column("meter_id", ids.take(table.column("meter_idx")))
    buf = io.BytesIO()
    writer(table, buf)
    return buf.getvalue()


def _run(tmp: Path, *, step: bool) -> tuple[int, int, list[dict[str, object]]]:
    data = tmp / ("stepped" if step else "steady")
    offset = tmp / f"offset-{step}"
    offset.write_text("+0\n")
    port = _free_port()
    env = dict(os.environ, LD_PRELOAD=str(LIBFAKETIME), FAKETIME_TIMESTAMP_FILE=str(offset),
               FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1",
               FAKETIME_DONT_RESET="1")
    meters = grid_meters(n_sub=1, n_feeder=2, n_tx=3, n_meter=4)
    reads, events = simulate(meters, T0, T0 + HOURS * 3600,
                             [Fault("transformer", "S0F1T2", T0 + 3 * 3600, T0 + 5 * 3600)],
                             seed=3)
    ids = meters.column("meter_id")
    log_path = tmp / f"serve-{step}.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "headend", "serve", "--data", str(data),
                             "--http", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(300):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError(log_path.read_text())
            uploads = [_csv(write_meters_csv, meters, ids)]
            rt = reads.column("interval_end").cast(pa.int64()).to_numpy()
            et = events.column("event_time").cast(pa.int64()).to_numpy()
            for h in range(HOURS):
                lo, hi = T0 + h * 3600, T0 + (h + 1) * 3600
                if step and h == 4:
                    uploads.append(b"step back")
                if step and h == 8:
                    uploads.append(b"step forward")
                uploads.append(_csv(write_reads_csv,
                                    reads.filter(pa.array((rt > lo) & (rt <= hi))), ids))
                uploads.append(_csv(write_events_csv,
                                    events.filter(pa.array((et > lo) & (et <= hi))), ids))
            for body in uploads:
                if body in (b"step back", b"step forward"):
                    offset.write_text("-1h\n" if body == b"step back" else "+0\n")
                    continue
                r = http.post("/v1/uploads", content=body, headers={"content-type": "text/csv"})
                assert r.status_code == 200, r.text
                assert r.json()["quarantined"] == 0, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    exported = _headend("export", "reads", "--data", data)
    assert exported.returncode == 0, exported.stderr
    out = _headend("export", "outages", "--data", data)
    assert out.returncode == 0, out.stderr
    outages = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    for o in outages:
        o.pop("outage_id", None)
    return reads.num_rows, len(exported.stdout.splitlines()) - 1, outages


@pytest.mark.slow
def test_a_clock_step_loses_no_read_and_keeps_outages(tmp_path: Path) -> None:
    if not LIBFAKETIME.exists():
        msg = "libfaketime is not installed (apt-get install libfaketime)"
        if os.environ.get("HEADEND_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " (HEADEND_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    sent, steady_reads, steady_outages = _run(tmp_path, step=False)
    _, stepped_reads, stepped_outages = _run(tmp_path, step=True)
    assert steady_reads == stepped_reads == sent
    assert [(o["level"], o["device_id"]) for o in steady_outages] == [
        ("transformer", "S0F1T2")], steady_outages
    assert stepped_outages == steady_outages
