"""Test kit of the command tests: a small registry with one meter per admission case,
an in-process ``serve`` with its real HTTP server, responses as collectors upload them,
and the command states published on the bus."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from headend.commands import iso_ms
from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.streams import OUT_STREAM

from ._fleet import HttpServer

#: meters on collector ``c`` (``C`` in :func:`meters_csv`): six plain electric meters
PLAIN = ("E1", "E2", "E3", "E4", "E5", "E6")


def meters_csv(c: str, d: str) -> bytes:
    """E1..E6 electric two-way on collector ``c``; W1 water; O1 one-way; N1 without a
    collector; K1 critical care; E7, E8 on collector ``d``."""
    head = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
            "substation_id,interval_minutes,critical_care\n")
    rows = [f"{m},electric,rf,true,{c},T1,F1,S1,15,false" for m in PLAIN]
    rows += [f"W1,water,rf,true,{c},T1,F1,S1,60,false",
             f"O1,electric,rf,false,{c},T1,F1,S1,15,false",
             "N1,electric,rf,true,,T1,F1,S1,15,false",
             f"K1,electric,rf,true,{c},T1,F1,S1,15,true",
             f"E7,electric,plc,true,{d},T2,F2,S1,15,false",
             f"E8,electric,plc,true,{d},T2,F2,S1,15,false"]
    return (head + "\n".join(rows) + "\n").encode()


def responses_csv(*rows: tuple[str, str, str], detail: str = "") -> bytes:
    """A ``command_responses`` upload: ``(command_id, meter_id, status)`` rows, now."""
    now = iso_ms(int(time.time() * 1000))
    return ("command_id,meter_id,status,time,detail\n" + "".join(
        f"{c},{m},{s},{now},{detail}\n" for c, m, s in rows)).encode()


def reads_csv(*meters: str, at: str = "2026-01-05T08:15:00Z") -> bytes:
    """An interval read of each meter (what a collector uploads for an on-demand read
    before its ``completed``: a read brings reads, docs/commands.md)."""
    return ("meter_id,reading_type,interval_end,value,quality\n" + "".join(
        f"{m},kwh_del,{at},0.25,\n" for m in meters)).encode()


@contextmanager
def serving(data: Path, *, c: str = "C1", d: str = "C2", **config: Any
            ) -> Iterator[tuple[Service, httpx.Client]]:
    """A started in-process serve on ``data`` (embedded bus unless ``bus`` is given) with
    its HTTP server and the registry of :func:`meters_csv` loaded through it."""
    cfg = load_config(env={}, data=data, partitions=2, lease_ttl_s=1.0, **config)
    svc = Service(cfg)
    svc.start()
    srv = HttpServer(svc)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            r = client.post("/v1/uploads", content=meters_csv(c, d),
                            headers={"Content-Type": "text/csv"})
            assert r.status_code == 200 and r.json()["meters_loaded"] == 12, r.text
            yield svc, client
    finally:
        srv.close()
        svc.close()


def post(client: httpx.Client, kind: str, meters: list[str], **extra: Any) -> httpx.Response:
    return client.post("/v1/commands", json={"kind": kind, "meter_ids": meters, **extra})


def send(client: httpx.Client, kind: str, meters: list[str], **extra: Any) -> list[dict[str, Any]]:
    """POST /v1/commands and answer its commands (asserting 202)."""
    r = post(client, kind, meters, **extra)
    assert r.status_code == 202, r.text
    out: list[dict[str, Any]] = r.json()["commands"]
    return out


def state(client: httpx.Client, command_id: str) -> str:
    r = client.get(f"/v1/commands/{command_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


def wait_for(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout_s, "condition not met in time"
        time.sleep(0.05)


def upload(client: httpx.Client, body: bytes) -> dict[str, Any]:
    r = client.post("/v1/uploads", content=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def poll(client: httpx.Client, collector: str, wait: float = 0) -> httpx.Response:
    return client.get(f"/v1/collectors/{collector}/commands", params={"wait": wait})


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(x) for x in r.text.splitlines()]


def bus_states(svc: Service, timeout_s: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
    """Every command state on the bus so far: (subject, command JSON), in order."""
    cons = svc.bus.consumer(OUT_STREAM, None, filter_subject="headend.commands.*.*.*.*.*.*.*",
                            start_seq=1)
    out = []
    try:
        while True:
            msgs = cons.fetch(256, timeout_s)
            if not msgs:
                return out
            for m in msgs:
                out.append((m.subject, json.loads(m.data)))
                m.ack()
    finally:
        cons.close()
