"""A 3-node JetStream cluster (deploy/nats-cluster.sh), streams at replication 3: one
node stopped and restarted mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from headend.serve.config import load_config
from headend.serve.service import Service
from headend.store import DataDir, StoreConfig

from ._fleet import BUCKET_BITS, T0, Fleet

pytestmark = [
    pytest.mark.service("nats"),
    pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning"),
]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "nats-cluster.sh"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Cluster:
    def __init__(self, work: Path) -> None:
        for _ in range(50):
            base = random.randrange(20_000, 40_000, 10)
            if all(_free(base + off + i) for off in (0, 1000, 2000) for i in range(3)):
                break
        self.env = {**os.environ, "HEADEND_CLUSTER_DIR": str(work),
                    "HEADEND_CLUSTER_CLIENT_PORT": str(base),
                    "HEADEND_CLUSTER_ROUTE_PORT": str(base + 1000),
                    "HEADEND_CLUSTER_MONITOR_PORT": str(base + 2000)}
        self.urls = ",".join(f"nats://127.0.0.1:{base + i}" for i in range(3))

    def run(self, *args: str) -> str:
        r = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True,
                           text=True, timeout=60, check=True)
        return r.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    c.run("start")
    yield c
    c.run("stop")


def _stored(data: Path) -> np.ndarray:
    with DataDir.open(data, config=StoreConfig(bucket_bits=BUCKET_BITS)) as d:
        t = d.store.scan_reads()
    return (t.column("meter_idx").to_numpy().astype(np.int64) * 10**10
            + t.column("interval_end").cast("int64").to_numpy())


def _service(data: Path, urls: str) -> Service:
    cfg = load_config(env={}, data=data, bus=urls, replicas=3, partitions=4,
                      bucket_bits=BUCKET_BITS, lease_ttl_s=2.0, ack_wait_s=4.0)
    t0 = time.monotonic()
    while True:  # the cluster elects its JetStream meta leader first
        try:
            svc = Service(cfg)
            break
        except Exception:
            if time.monotonic() - t0 > 20:
                raise
            time.sleep(0.5)
    svc.start()
    return svc


def test_node_stopped_and_restarted_mid_stream(cluster: Cluster, data_dir: Path,
                                               fleet: Fleet) -> None:
    status = cluster.run("status")
    assert status.count(" up ") == 3
    svc = _service(data_dir, cluster.urls)
    try:
        assert svc.uplink is not None
        svc.uplink.submit(fleet.collectors_csv(), source="t", content_type="text/csv")
        svc.uplink.submit(fleet.meters_csv(), source="t", content_type="text/csv")
        frames = fleet.frames(range(30))  # 6000 reads
        for f in frames[:40]:
            svc.uplink.submit(f, source="t", wait=False)
        cluster.run("stop", "2")
        assert "node 2 down" in cluster.run("status")
        for f in frames[40:80]:
            svc.uplink.submit(f, source="t", wait=False)
        cluster.run("start", "2")
        for f in frames[80:]:
            svc.uplink.submit(f, source="t", wait=False)
        # the acknowledged path still works with the restarted node back
        ack = svc.uplink.submit(b"".join(frames[:4]), source="t",
                                content_type="application/octet-stream")
        assert (ack.accepted + ack.duplicate, ack.quarantined) == (200, 0)
        t0 = time.monotonic()
        keys = _stored(data_dir)
        while len(keys) < 6000 and time.monotonic() - t0 < 60:
            time.sleep(0.3)
            keys = _stored(data_dir)
        ends = T0 + 900 * (np.arange(30) + 1)
        expected = np.sort((np.arange(200)[:, None] * 10**10 + ends[None, :]).ravel())
        assert len(keys) == 6000  # zero lost
        assert np.array_equal(np.sort(keys), expected)  # zero duplicated
    finally:
        svc.close()
