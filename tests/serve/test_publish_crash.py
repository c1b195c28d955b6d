"""kill -9 between the store and the third-party publish: the rows still reach a durable
subscriber, on the embedded bus and on NATS.

The crash hook ``HEADEND_TEST_CRASH=publish:before_publish:1``
(:mod:`headend.serve.sources`) kills ``serve`` once the first upload's reads are durable
in the store and before they are published on ``HEADEND_OUT``. The collector got no
answer and sends the upload again after the restart: the store counts it all as
duplicates, so that resend publishes nothing. The rows reach the subscriber because
the ingest message of the first delivery was never acknowledged: the bus delivers it
again and its rows are published again in full (``redelivery=True``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from ._fleet import Fleet, HookReceiver, HttpServer, NatsServer, add_subscriber, pull_durable
from ._serve_proc import ServeProc, in_process, load_registry, stored_reads

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


def _row_keys(payloads: list[bytes]) -> set[tuple[str, str, str]]:
    rows = [json.loads(line) for p in payloads for line in p.splitlines() if line.strip()]
    return {(r["meter"], r["type"], r["end"]) for r in rows}


@pytest.mark.parametrize("bus", ["embedded", pytest.param("nats",
                                                         marks=pytest.mark.service("nats"))])
def test_kill_after_store_before_publish_loses_no_row(bus: str, tmp_path: Path,
                                                      data_dir: Path, fleet: Fleet) -> None:
    nats_srv = NatsServer(tmp_path / "js") if bus == "nats" else None
    receiver = HookReceiver() if nats_srv is None else None
    if receiver is not None:
        receiver.start()
    durable = add_subscriber(data_dir, receiver.url if receiver is not None else None)
    extra = ["--nats", nats_srv.url] if nats_srv is not None else []
    body = b"".join(fleet.frames(range(3)))  # 600 reads
    try:
        srv = ServeProc(data_dir, *extra,
                        env={"HEADEND_TEST_CRASH": "publish:before_publish:1"})
        try:
            load_registry(srv, fleet)  # no reads: nothing to publish
            with pytest.raises(httpx.TransportError):  # no answer: not acknowledged
                srv.post(body, "application/octet-stream")
            assert srv.wait_killed() == -9, srv.output()
        finally:
            srv.stop()
        assert stored_reads(data_dir) == (600, 600)  # stored, never published
        config = {"bus": nats_srv.url} if nats_srv is not None else {}
        with in_process(data_dir, **config) as svc:  # the restart
            http = HttpServer(svc)
            try:  # the collector sends it again: all duplicates
                r = httpx.post(http.url + "/v1/uploads", content=body, timeout=60,
                               headers={"Content-Type": "application/octet-stream"})
                assert r.status_code == 200, r.text
                assert (r.json()["accepted"], r.json()["duplicate"]) == (0, 600)
                if receiver is not None:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and \
                            len(_row_keys([b for _, b in receiver.received])) < 600:
                        time.sleep(0.1)
                else:
                    # the first delivery's message comes back once its ack_wait passed
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and \
                            svc.publisher.bus.stream_messages("HEADEND_INGEST") > 0:
                        time.sleep(0.1)
            finally:
                http.close()
        payloads = [b for _, b in receiver.received] if receiver is not None else \
            pull_durable(nats_srv.url, durable)  # type: ignore[union-attr]
        assert len(_row_keys(payloads)) == 600, "rows stored but never published"
        assert stored_reads(data_dir) == (600, 600)
    finally:
        if receiver is not None:
            receiver.stop()
        if nats_srv is not None:
            nats_srv.close()


def test_kill_after_releasing_quarantined_reads_before_publish_loses_no_row(
        data_dir: Path, fleet: Fleet) -> None:
    """Reads of meters not yet known wait in the quarantine; loading the meters releases
    them into the store. A kill between that store and the publish, then the resend of
    the meters file, must still publish them: the second release finds them stored
    (duplicates) and publishes them again, since the first one may not have."""
    receiver = HookReceiver()
    receiver.start()
    add_subscriber(data_dir, receiver.url)
    body = b"".join(fleet.frames(range(3)))  # 600 reads
    try:
        srv = ServeProc(data_dir, env={"HEADEND_TEST_CRASH": "publish:before_publish:1"})
        try:
            r = srv.post(fleet.collectors_csv(), "text/csv")
            assert r.status_code == 200, r.text
            r = srv.post(body, "application/octet-stream")  # meters unknown: quarantined
            assert r.status_code == 200, r.text
            assert r.json()["quarantined"] > 0 and r.json()["accepted"] == 0
            with pytest.raises(httpx.TransportError):  # releases them, killed unpublished
                srv.post(fleet.meters_csv(), "text/csv")
            assert srv.wait_killed() == -9, srv.output()
        finally:
            srv.stop()
        assert stored_reads(data_dir) == (600, 600)
        assert receiver.received == []
        with in_process(data_dir) as svc:  # the restart; the client resends the meters
            http = HttpServer(svc)
            try:
                r = httpx.post(http.url + "/v1/uploads", content=fleet.meters_csv(),
                               timeout=60, headers={"Content-Type": "text/csv"})
                assert r.status_code == 200, r.text
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and \
                        len(_row_keys([b for _, b in receiver.received])) < 600:
                    time.sleep(0.1)
            finally:
                http.close()
        assert len(_row_keys([b for _, b in receiver.received])) == 600, \
            "released reads stored but never published"
        assert stored_reads(data_dir) == (600, 600)
    finally:
        receiver.stop()
