"""kill -9 between receipt and store, for the HTTP and file uplinks (MQTT's is in
test_mqtt_uplink.py): the sender got no acknowledgement, sends again after the
restart, and every read is stored exactly once.

The crash is the test hook ``HEADEND_TEST_CRASH=<channel>:<point>:<n>``
(:mod:`headend.serve.sources`): the process kills itself with SIGKILL when its n-th
upload is received and not stored (``before_store``), or stored and not acknowledged
(``after_store``: the resend is then all duplicates).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from ._fleet import Fleet, HttpServer, headend_cmd
from ._serve_proc import ServeProc, in_process, load_registry, stored_reads

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")

POINTS = ["before_store", "after_store"]


@pytest.mark.parametrize("point", POINTS)
def test_http_kill_between_receipt_and_store(data_dir: Path, fleet: Fleet, point: str) -> None:
    body = b"".join(fleet.frames(range(3)))
    srv = ServeProc(data_dir, env={"HEADEND_TEST_CRASH": f"http:{point}:3"})
    try:
        load_registry(srv, fleet)  # uploads 1 and 2
        with pytest.raises(httpx.TransportError):  # upload 3: no reply, no acknowledgement
            srv.post(body, "application/octet-stream")
        assert srv.wait_killed() == -9, srv.output()
    finally:
        srv.stop()
    assert stored_reads(data_dir)[0] == (0 if point == "before_store" else 600)
    with in_process(data_dir) as svc:  # the restart
        srv = HttpServer(svc)
        try:  # the client sends it again
            r = httpx.post(srv.url + "/v1/uploads", content=body, timeout=30,
                           headers={"Content-Type": "application/octet-stream"})
        finally:
            srv.close()
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["duplicate"]) == (
        (600, 0) if point == "before_store" else (0, 600))
    assert stored_reads(data_dir) == (600, 600)


@pytest.mark.parametrize("point", POINTS)
def test_file_kill_between_receipt_and_store(tmp_path: Path, data_dir: Path, fleet: Fleet,
                                             point: str) -> None:
    files = [tmp_path / "collectors.csv", tmp_path / "meters.csv", tmp_path / "up.hef"]
    for p, body in zip(files, (fleet.collectors_csv(), fleet.meters_csv(),
                               b"".join(fleet.frames(range(3)))), strict=True):
        p.write_bytes(body)
    cmd = headend_cmd("ingest", "--data", str(data_dir), "--json", "--no-vee",
                      *map(str, files))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADEND_")}
    crashed = subprocess.run(cmd, env={**env, "HEADEND_TEST_CRASH": f"file:{point}:1"}, check=False,
                             capture_output=True, text=True)
    assert crashed.returncode == -9, crashed.stderr  # no exit code: not acknowledged
    assert stored_reads(data_dir)[0] == (0 if point == "before_store" else 600)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["accepted"], summary["duplicate"]) == (
        (600, 0) if point == "before_store" else (0, 600))
    assert stored_reads(data_dir) == (600, 600)
