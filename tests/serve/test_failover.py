"""Failover timing on real NATS JetStream, with the default settings: a worker killed
with SIGKILL in the middle of a batch hands its partition over, and the upload it was
working on is acknowledged by the other worker within 10 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.uplink import UploadAck
from headend.serve.worker import LEASE_BUCKET

from ._fleet import BUCKET_BITS, Fleet, NatsServer, headend_cmd

pytestmark = [
    pytest.mark.service("nats"),
    pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning"),
]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "js")
    yield srv
    srv.close()


def _leases(svc: Service) -> tuple[set[str], dict[str, bytes]]:
    """(workers heartbeating, partition -> owner) in the ingest lease bucket."""
    kv = svc.bus.kv(LEASE_BUCKET, ttl_s=svc.cfg.lease_ttl_s)
    workers, owners = set(), {}
    for k in kv.keys():  # noqa: SIM118 - a KV bucket, not a dict
        v = kv.get(k)
        if v is None:
            continue
        if k.startswith("w."):
            workers.add(k[2:])
        elif k.startswith("p."):
            owners[k] = v[0]
    return workers, owners


def _until(cond: object, timeout_s: float) -> None:
    t_end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < t_end:  # type: ignore[operator]
        time.sleep(0.1)


def test_upload_of_a_worker_killed_mid_batch_is_acknowledged_within_10_s(
        nats_server: NatsServer, data_dir: Path, fleet: Fleet, tmp_path: Path) -> None:
    cfg = load_config(env={}, data=data_dir, bus=nats_server.url, workers=0, partitions=1,
                      bucket_bits=BUCKET_BITS)
    assert cfg.ack_wait_s <= 5 and cfg.lease_ttl_s <= 5  # the defaults under test
    svc = Service(cfg)
    svc.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert svc.uplink is not None
        svc.uplink.submit(fleet.collectors_csv(), source="t", content_type="text/csv")
        svc.uplink.submit(fleet.meters_csv(), source="t", content_type="text/csv")
        marker = tmp_path / "mid-batch"
        with (tmp_path / "stuck.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_stuck_worker.py")),
                 nats_server.url, "1", str(marker)], stdout=log, stderr=subprocess.STDOUT))
        _until(lambda: len(_leases(svc)[1]) == 1, 20)
        (stuck_owner,) = _leases(svc)[1].values()
        with (tmp_path / "worker.log").open("wb") as log:
            procs.append(subprocess.Popen(
                headend_cmd("worker", "--data", str(data_dir), "--nats", nats_server.url,
                            "--partitions", "1", "--bucket-bits", str(BUCKET_BITS)),
                stdout=log, stderr=subprocess.STDOUT))
        _until(lambda: len(_leases(svc)[0]) == 2, 20)
        assert len(_leases(svc)[0]) == 2  # the second worker is up, with nothing to do
        answers: list[UploadAck] = []
        upload = threading.Thread(target=lambda: answers.append(svc.uplink.submit(  # type: ignore[union-attr]
            fleet.frames(range(1))[0], source="t", content_type="application/octet-stream")))
        upload.start()
        _until(marker.exists, 20)
        assert marker.exists()  # the first worker is in the middle of the batch
        time.sleep(1.0)  # in the middle of the batch (kept by its heartbeat)
        assert not answers
        os.kill(procs[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        upload.join(20)
        took = time.monotonic() - killed
        assert answers, "the upload was not acknowledged within 20 s of the kill"
        assert (answers[0].accepted, answers[0].quarantined) == (50, 0)
        assert took < 10.0, f"acknowledged {took:.1f} s after the kill"
        (owner,) = _leases(svc)[1].values()
        assert owner != stuck_owner
        print(f"upload acknowledged {took:.2f} s after the kill -9")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        svc.close()
