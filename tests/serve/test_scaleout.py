"""Scale-out on real NATS JetStream: worker processes share the partitions; a worker
killed with SIGKILL mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.worker import LEASE_BUCKET
from headend.store import DataDir, StoreConfig

from ._fleet import BUCKET_BITS, Fleet, NatsServer, headend_cmd

pytestmark = [
    pytest.mark.service("nats"),
    pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning"),
]

PARTITIONS = 4


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "js")
    yield srv
    srv.close()


def _uplink_service(data: Path, url: str) -> Service:
    cfg = load_config(env={}, data=data, bus=url, workers=0, partitions=PARTITIONS,
                      bucket_bits=BUCKET_BITS, lease_ttl_s=1.5, ack_wait_s=3.0)
    svc = Service(cfg)
    svc.start()
    return svc


def _worker(data: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            headend_cmd("worker", "--data", str(data), "--nats", url, "--partitions",
                        str(PARTITIONS), "--bucket-bits", str(BUCKET_BITS), "--lease-ttl",
                        "1.5", "--ack-wait", "3"),
            stdout=out, stderr=subprocess.STDOUT)


def _owners(svc: Service) -> dict[str, bytes]:
    leases = svc.bus.kv(LEASE_BUCKET, ttl_s=1.5)
    out = {}
    for k in leases.keys():  # noqa: SIM118 - a KV bucket, not a dict
        v = leases.get(k)
        if k.startswith("p.") and v is not None:
            out[k] = v[0]
    return out


def _wait_owners(svc: Service, n_workers: int, timeout_s: float) -> dict[str, bytes]:
    t0 = time.monotonic()
    owners = _owners(svc)
    while time.monotonic() - t0 < timeout_s and not (
            len(owners) == PARTITIONS and len(set(owners.values())) == n_workers):
        time.sleep(0.2)
        owners = _owners(svc)
    return owners


def _stored_keys(data: Path) -> np.ndarray:
    with DataDir.open(data, config=StoreConfig(bucket_bits=BUCKET_BITS)) as d:
        t = d.store.scan_reads()
    return (t.column("meter_idx").to_numpy().astype(np.int64) * 10**10
            + t.column("interval_end").cast("int64").to_numpy())


def _wait_rows(data: Path, n: int, timeout_s: float) -> np.ndarray:
    t0 = time.monotonic()
    keys = _stored_keys(data)
    while len(keys) < n and time.monotonic() - t0 < timeout_s:
        time.sleep(0.3)
        keys = _stored_keys(data)
    return keys


def _published(svc: Service, timeout_s: float = 30) -> set[tuple[str, str]]:
    """(meter, end) of every read on the third-party stream (HEADEND_OUT)."""
    import json

    from headend.serve.streams import OUT_STREAM

    c = svc.bus.consumer(OUT_STREAM, None, filter_subject="headend.reads.*.*.*.*.*.*.*")
    seen: set[tuple[str, str]] = set()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            msgs = c.fetch(500, 1.0)
            for m in msgs:
                for line in m.data.splitlines():
                    row = json.loads(line)
                    seen.add((row["meter"], row["end"]))
                m.ack()
            if not msgs and len(seen) >= 8000:
                break
    finally:
        c.close()
    return seen


def test_kill_9_worker_mid_stream(nats_server: NatsServer, data_dir: Path, fleet: Fleet,
                                  tmp_path: Path) -> None:
    svc = _uplink_service(data_dir, nats_server.url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert svc.uplink is not None
        svc.uplink.submit(fleet.collectors_csv(), source="t", content_type="text/csv")
        svc.uplink.submit(fleet.meters_csv(), source="t", content_type="text/csv")
        workers = [_worker(data_dir, nats_server.url, tmp_path / f"w{i}.log") for i in range(2)]
        frames = fleet.frames(range(40))  # 40 intervals x 200 meters = 8000 reads
        for f in frames[:60]:
            svc.uplink.submit(f, source="t", wait=False)
        # both workers share the partitions before one dies mid-stream
        owners = _wait_owners(svc, 2, 20)
        assert len(set(owners.values())) == 2, owners
        _wait_rows(data_dir, 1000, 30)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait(5)
        for f in frames[60:]:
            svc.uplink.submit(f, source="t", wait=False)
        # every frame published twice more (a collector retransmitting): harmless
        for f in frames[::7]:
            svc.uplink.submit(f, source="t", wait=False)
        keys = _wait_rows(data_dir, 8000, 60)
        assert len(keys) == 8000  # zero lost
        assert len(np.unique(keys)) == 8000  # zero duplicated
        expected_idx = np.arange(200)
        ends = 1_767_225_600 + 900 * (np.arange(40) + 1)
        expected = np.sort((expected_idx[:, None] * 10**10 + ends[None, :]).ravel())
        assert np.array_equal(np.sort(keys), expected)
        # third parties got every stored row (at least once): what the dead worker had
        # stored without publishing was published again on the redelivery
        assert len(_published(svc)) == 8000
        # the survivor owns every partition now
        owners = _wait_owners(svc, 1, 10)
        assert len(set(owners.values())) == 1 and len(owners) == PARTITIONS
        # an HTTP-style upload (wait for the ack) still works after the failover
        ack = svc.uplink.submit(b"".join(frames[:4]), source="t",
                                content_type="application/octet-stream")
        assert (ack.accepted, ack.duplicate, ack.quarantined) == (0, 200, 0)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(10)
        svc.close()
