"""``headend serve`` embedded (in-process bus): uploads acknowledged once durable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from headend.serve.config import load_config
from headend.serve.service import Service

from ._fleet import BUCKET_BITS, Fleet, HttpServer

# store.registry (another module) still passes null_placement the pyarrow 25 way
pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


@pytest.fixture
def service(data_dir: Path) -> Iterator[Service]:
    cfg = load_config(env={}, data=data_dir, bucket_bits=BUCKET_BITS, partitions=4,
                      lease_ttl_s=1.0)
    svc = Service(cfg)
    svc.start()
    yield svc
    svc.close()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    srv = HttpServer(service)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c
    srv.close()


def test_upload_registry_then_frames(service: Service, client: httpx.Client, fleet: Fleet) -> None:
    r = client.post("/v1/uploads", content=fleet.collectors_csv(),
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["collectors_loaded"] > 0 and r.json()["meters_loaded"] == 0
    r = client.post("/v1/uploads", content=fleet.meters_csv(),
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["meters_loaded"] == 200  # the registry upload says what it loaded
    body = b"".join(fleet.frames(range(3)))
    r = client.post("/v1/uploads", content=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 600
    assert r.json()["duplicate"] == 0
    assert r.json()["quarantined"] == 0
    assert r.json()["parts"] > 1  # really split over partitions
    # the same upload again: all duplicates, nothing stored twice
    r = client.post("/v1/uploads", content=body,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.json()["accepted"] == 0 and r.json()["duplicate"] == 600
    # a frame signed with a wrong key is quarantined
    bad = bytearray(fleet.frames(range(5, 6))[0])
    bad[-1] ^= 0xFF
    r = client.post("/v1/uploads", content=bytes(bad),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.json()["quarantined"] == 1 and r.json()["by_reason"] == {"bad_hmac": 1}
    # CSV reads are split too
    csv = "meter_id,reading_type,interval_end,value,quality\n" + "".join(
        f"{m},kwh_del,2026-01-01T01:00:00Z,0.5,\n" for m in fleet.meter_ids[:40])
    r = client.post("/v1/uploads", content=csv.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["quarantined"]) == (40, 0)
    service.host.reopen()
    reads = service.host.data.store.scan_reads()
    assert reads.num_rows == 640
    key = reads.column("meter_idx").to_numpy().astype(np.int64) * 10**10 + \
        reads.column("interval_end").cast("int64").to_numpy()
    assert len(np.unique(key)) == 640


def test_upload_content_type_checks(client: httpx.Client, fleet: Fleet) -> None:
    r = client.post("/v1/uploads", content=b"meter_id\n", headers={"Content-Type": "image/png"})
    assert r.status_code == 415
    r = client.post("/v1/uploads", content=b"not a frame",
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400
    assert r.json()["reason"] == "bad_frame"


def test_metrics_and_health(client: httpx.Client, fleet: Fleet) -> None:
    client.post("/v1/uploads", content=fleet.collectors_csv(), headers={"Content-Type": "text/csv"})
    client.post("/v1/uploads", content=fleet.meters_csv(), headers={"Content-Type": "text/csv"})
    client.post("/v1/uploads", content=b"".join(fleet.frames(range(2))),
                headers={"Content-Type": "application/octet-stream"})
    text = client.get("/metrics").text
    assert 'headend_ingest_rows_total{outcome="accepted"} 400.0' in text
    assert 'headend_uploads_total{channel="http"} 3.0' in text
    assert 'headend_published_rows_total{family="reads"} 400.0' in text
    assert "headend_consumer_lag_messages" in text
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["workers"] == [[0, 1, 2, 3]]
