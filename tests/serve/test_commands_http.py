"""``POST /v1/commands``, ``GET /v1/commands/{id}`` and the collectors' long poll,
through a real ``serve`` (embedded bus, HTTP server in a thread)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from headend.commands import DOWNLINK_FIELDS
from headend.serve.service import Service

from ._commands import PLAIN, lines, poll, post, send, serving, state

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")

JSON_KEYS = ["command_id", "kind", "meter_id", "state", "reason", "created_at", "updated_at",
             "detail", "reads"]


@pytest.fixture
def served(data_dir: Path) -> Iterator[tuple[Service, httpx.Client]]:
    with serving(data_dir, commands={"max_in_flight": 3, "rate_per_s": 1000, "burst": 1000}
                 ) as s:
        yield s


def test_post_and_get(served: tuple[Service, httpx.Client]) -> None:
    _, client = served
    cmds = send(client, "read", ["E1", "E2"], reason="customer called", command_id="call-7")
    assert [list(c) for c in cmds] == [JSON_KEYS, JSON_KEYS]
    assert [(c["command_id"], c["meter_id"], c["state"], c["reason"], c["detail"])
            for c in cmds] == [("call-7:E1", "E1", "queued", None, "customer called"),
                               ("call-7:E2", "E2", "queued", None, "customer called")]
    got = client.get("/v1/commands/call-7:E1")
    assert got.status_code == 200 and got.json() == cmds[0]
    missing = client.get("/v1/commands/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_idempotent_ids(served: tuple[Service, httpx.Client]) -> None:
    svc, client = served
    first = send(client, "ping", ["E3"], command_id="p-1")
    time.sleep(0.01)
    again = send(client, "ping", ["E3"], command_id="p-1")
    assert again == first  # the same command, created once
    assert [c.command_id for c in svc.commands.store.list(meter_id="E3")] == ["p-1"]
    assert len(svc.commands.store.history("p-1")) == 1
    clash = post(client, "disconnect", ["E3"], command_id="p-1")
    assert clash.status_code == 409 and "already a ping of meter E3" in clash.json()["error"]


@pytest.mark.parametrize(("kind", "meters", "extra", "reason"), [
    ("read", ["X9"], {}, "meter_unknown"),
    ("disconnect", ["W1"], {}, "kind_unfit"),
    ("read", ["O1"], {}, "meter_one_way"),
    ("ping", ["N1"], {}, "no_collector"),
    ("disconnect", ["K1"], {}, "critical_care"),
])
def test_rejection_reasons(served: tuple[Service, httpx.Client], kind: str,
                           meters: list[str], extra: dict[str, object], reason: str) -> None:
    _, client = served
    [cmd] = send(client, kind, meters, **extra)
    assert (cmd["state"], cmd["reason"]) == ("rejected", reason)
    assert state(client, cmd["command_id"]) == "rejected"
    assert poll(client, "C1").status_code == 204  # a rejected command never goes down


def test_confirmation_and_force(served: tuple[Service, httpx.Client]) -> None:
    _, client = served
    many = [f"Z{i}" for i in range(100)] + ["E1"]
    cmds = send(client, "disconnect", many)
    # unknown meters fail on meter_unknown first; E1 on the confirmation
    assert {c["reason"] for c in cmds} == {"meter_unknown", "confirmation_needed"}
    assert [c["reason"] for c in cmds if c["meter_id"] == "E1"] == ["confirmation_needed"]
    cmds = send(client, "disconnect", many, confirm=True)
    assert [c["state"] for c in cmds if c["meter_id"] == "E1"] == ["queued"]
    [forced] = send(client, "disconnect", ["K1"], force=True, reason="court order 12")
    assert forced["state"] == "queued"
    assert forced["detail"] == "forced past critical_care by http:127.0.0.1: court order 12"


@pytest.mark.parametrize(("body", "needle"), [
    ({"kind": "reboot", "meter_ids": ["E1"]}, "unknown command kind"),
    ({"kind": "read", "meter_ids": []}, "meter_ids"),
    ({"kind": "disconnect", "meter_ids": ["K1"], "force": True}, "force needs a reason"),
    ({"kind": "read", "meter_ids": ["E1"], "expires_in_s": 0}, "expires_in_s"),
    ({"kind": "read", "meter_ids": ["E1"], "colour": "red"}, "colour"),
])
def test_bad_requests(served: tuple[Service, httpx.Client], body: dict[str, object],
                      needle: str) -> None:
    _, client = served
    r = client.post("/v1/commands", json=body)
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_long_poll_204_then_200(served: tuple[Service, httpx.Client]) -> None:
    _, client = served
    t0 = time.monotonic()
    r = poll(client, "C1", wait=0.6)
    assert r.status_code == 204 and r.content == b""
    assert time.monotonic() - t0 >= 0.6
    [cmd] = send(client, "ping", ["E1"], command_id="lp-1")
    got = lines(poll(client, "C1", wait=5))
    assert [list(x) for x in got] == [list(DOWNLINK_FIELDS)]
    assert (got[0]["command_id"], got[0]["kind"], got[0]["meter_id"],
            got[0]["control_code"], got[0]["params"]) == ("lp-1", "ping", "E1", "3.26.0.46", {})
    assert state(client, "lp-1") == "sent"
    assert poll(client, "C1", wait=0).status_code == 204  # handed over once
    assert poll(client, "C2", wait=0).status_code == 204  # other collectors get nothing
    assert cmd["state"] == "queued"


def test_long_poll_wakes_when_a_command_comes(served: tuple[Service, httpx.Client]) -> None:
    import threading

    _, client = served
    got: list[httpx.Response] = []
    t = threading.Thread(target=lambda: got.append(poll(client, "C2", wait=10)))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.5)
    send(client, "read", ["E7"], command_id="wake")
    t.join(15)
    assert [x["command_id"] for x in lines(got[0])] == ["wake"]
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("wait", ["soon", "-1", "3600"])
def test_poll_wait_checked(served: tuple[Service, httpx.Client], wait: str) -> None:
    _, client = served
    r = client.get("/v1/collectors/C1/commands", params={"wait": wait})
    assert r.status_code == 400 and "wait" in r.json()["error"]


def test_in_flight_limit_and_priority(served: tuple[Service, httpx.Client]) -> None:
    """max_in_flight 3: reads of five meters, then a disconnect; the disconnect goes
    first, the reads follow as answers free room."""
    from ._commands import responses_csv, upload

    _, client = served
    send(client, "read", list(PLAIN[:5]), command_id="r")
    send(client, "disconnect", ["E6"], command_id="d")
    first = [x["command_id"] for x in lines(poll(client, "C1"))]
    assert first == ["d", "r:E1", "r:E2"]
    assert poll(client, "C1").status_code == 204  # 3 in flight
    ack = upload(client, responses_csv(("r:E1", "E1", "completed")))
    assert ack["accepted"] == 1
    assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["r:E3"]
    # delivered still counts as in flight; completed and failed free the room
    upload(client, responses_csv(("d", "E6", "delivered")))
    assert poll(client, "C1").status_code == 204
    upload(client, responses_csv(("d", "E6", "meter_refused"), ("r:E2", "E2", "completed")))
    assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["r:E4", "r:E5"]
    assert state(client, "d") == "failed"
    assert client.get("/v1/commands/d").json()["reason"] == "meter_refused"


def test_rate_per_collector(data_dir: Path) -> None:
    """2 commands at once (burst), then 2 a second, per collector: another collector
    has its own budget."""
    with serving(data_dir, commands={"rate_per_s": 2, "burst": 2, "max_in_flight": 100}
                 ) as (_, client):
        send(client, "read", list(PLAIN), command_id="r")
        send(client, "read", ["E7", "E8"], command_id="q")
        assert len(lines(poll(client, "C1"))) == 2
        assert poll(client, "C1").status_code == 204  # bucket empty
        assert len(lines(poll(client, "C2"))) == 2  # its own bucket
        t0 = time.monotonic()
        got = lines(poll(client, "C1", wait=5))
        assert len(got) == 1 and 0.3 <= time.monotonic() - t0 < 2.0
