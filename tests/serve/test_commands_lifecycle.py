"""Every state transition of a command through ``serve``, on the embedded bus and on a
real NATS JetStream server: HTTP in, long poll down, ``command_responses`` back up, the
head end's expiry and resends, and each state published on ``headend.commands.>``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from headend.serve.service import Service

from ._commands import (
    bus_states,
    lines,
    poll,
    reads_csv,
    responses_csv,
    send,
    serving,
    state,
    upload,
    wait_for,
)
from ._fleet import NatsServer

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


@pytest.fixture(params=["embedded", pytest.param("nats", marks=pytest.mark.service("nats"))])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "embedded":
        yield {}
        return
    srv = NatsServer(tmp_path / "js")
    try:
        yield {"bus": srv.url, "workers": 1}
    finally:
        srv.close()


def history(svc: Service, cid: str) -> list[tuple[str, str | None, str]]:
    return [(h.state, h.reason, h.actor) for h in svc.commands.store.history(cid)]


def test_every_transition(data_dir: Path, bus: dict[str, Any]) -> None:
    with serving(data_dir, **bus) as (svc, client):
        ok = send(client, "read", ["E1"], command_id="ok")[0]
        fails = send(client, "ping", ["E2"], command_id="fails")[0]
        rejected = send(client, "read", ["O1"], command_id="rej")[0]
        lingers = send(client, "read", ["E3"], command_id="lingers", expires_in_s=2)[0]
        assert [c["state"] for c in (ok, fails, rejected, lingers)] == \
            ["queued", "queued", "rejected", "queued"]
        assert {x["command_id"] for x in lines(poll(client, "C1"))} == \
            {"ok", "fails", "lingers"}
        # on collector C2: one sent and never answered, one never even polled
        send(client, "read", ["E8"], command_id="silent", expires_in_s=2)
        assert [x["command_id"] for x in lines(poll(client, "C2"))] == ["silent"]
        send(client, "ping", ["E7"], command_id="unpolled", expires_in_s=1)

        ack = upload(client, responses_csv(("ok", "E1", "delivered"),
                                           ("fails", "E2", "meter_unreachable"),
                                           ("lingers", "E3", "delivered")))
        assert (ack["accepted"], ack["duplicate"], ack["quarantined"]) == (3, 0, 0)
        assert upload(client, reads_csv("E1"))["accepted"] == 1  # the read's reads first
        ack = upload(client, responses_csv(("ok", "E1", "completed"), detail="1 read"))
        assert ack["accepted"] == 1
        # a collector that answers twice: nothing changes, counted as duplicate
        ack = upload(client, responses_csv(("ok", "E1", "completed"),
                                           ("ok", "E1", "delivered")))
        assert (ack["accepted"], ack["duplicate"], ack["quarantined"]) == (0, 2, 0)

        wait_for(lambda: all(state(client, i) == "expired"
                             for i in ("lingers", "silent", "unpolled")))
        got = client.get("/v1/commands/fails").json()
        assert (got["state"], got["reason"]) == ("failed", "meter_unreachable")
        detail = client.get("/v1/commands/ok").json()["detail"]
        assert detail.startswith("completed at 20") and detail.endswith("Z: 1 read")
        assert history(svc, "ok") == [("queued", None, "http:127.0.0.1"),
                                      ("sent", None, "headend"),
                                      ("delivered", None, "collector"),
                                      ("completed", None, "collector")]
        assert history(svc, "lingers")[-2:] == [("delivered", None, "collector"),
                                                ("expired", "expired", "headend")]
        assert [h[0] for h in history(svc, "silent")] == ["queued", "sent", "expired"]
        assert [h[0] for h in history(svc, "unpolled")] == ["queued", "expired"]
        assert history(svc, "rej") == [("rejected", "meter_one_way", "http:127.0.0.1")]

        # an answer the lifecycle refuses, and one for a command nobody made: quarantined
        ack = upload(client, responses_csv(("unpolled", "E7", "completed"),
                                           ("ghost", "E1", "completed"),
                                           ("fails", "E3", "completed")))
        assert (ack["accepted"], ack["quarantined"]) == (0, 3)
        assert ack["by_reason"] == {"command_response_conflict": 1, "unknown_command": 1,
                                    "bad_command_response": 1}
        q = svc.host.data.quarantine.list()
        assert sorted(zip(q.column("kind").to_pylist(), q.column("reason").to_pylist(),
                          strict=True)) == [("command_responses", "bad_command_response"),
                                            ("command_responses", "command_response_conflict"),
                                            ("command_responses", "unknown_command")]
        assert state(client, "unpolled") == "expired"

        states = bus_states(svc)
        by_id: dict[str, list[str]] = {}
        for subject, cmd in states:
            by_id.setdefault(cmd["command_id"], []).append(cmd["state"])
            assert subject == (f"headend.commands.{cmd['state']}.electric.S1."
                               f"{'F2.T2' if cmd['meter_id'] in ('E7', 'E8') else 'F1.T1'}."
                               f"{cmd['meter_id']}.{cmd['kind']}")
        assert by_id == {"ok": ["queued", "sent", "delivered", "completed"],
                         "fails": ["queued", "sent", "failed"],
                         "rej": ["rejected"],
                         "lingers": ["queued", "sent", "delivered", "expired"],
                         "silent": ["queued", "sent", "expired"],
                         "unpolled": ["queued", "expired"]}


def test_unanswered_commands_are_resent_with_backoff(data_dir: Path) -> None:
    """A collector that never answers: the command is sent again after resend_after_s,
    then after twice as long, max_sends times in all; then it waits for its expiry."""
    cfg = {"resend_after_s": 0.5, "max_sends": 2, "tick_s": 0.05}
    with serving(data_dir, commands=cfg) as (svc, client):
        send(client, "ping", ["E1"], command_id="p", expires_in_s=4)
        t0 = time.monotonic()
        assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["p"]
        assert poll(client, "C1", wait=0.3).status_code == 204  # not yet
        assert [x["command_id"] for x in lines(poll(client, "C1", wait=3))] == ["p"]
        assert time.monotonic() - t0 >= 0.5
        assert poll(client, "C1", wait=1.5).status_code == 204  # max_sends reached
        assert [h.state for h in svc.commands.store.history("p")] == \
            ["queued", "sent", "queued", "sent"]
        assert svc.commands.store.history("p")[2].detail == "no answer: sent again"
        wait_for(lambda: state(client, "p") == "expired")


def test_handover_failures_end_in_downlink_failed(data_dir: Path) -> None:
    """MQTT hand-overs that never get a PUBACK: retried with back-off, then failed."""
    from headend.errors import ServiceUnavailable

    tries: list[float] = []

    def broken(batch: Mapping[str, bytes]) -> dict[str, Exception]:
        tries.append(time.monotonic())
        return dict.fromkeys(batch, ServiceUnavailable("no PUBACK"))

    cfg = {"handover_retry_s": 0.2, "max_handover_failures": 3, "tick_s": 0.05}
    with serving(data_dir, commands=cfg) as (svc, client):
        svc.commands.mqtt_send = broken
        send(client, "connect", ["E1"], command_id="c")
        wait_for(lambda: state(client, "c") == "failed")
        got = client.get("/v1/commands/c").json()
        assert (got["reason"], got["detail"]) == ("downlink_failed", "no PUBACK")
        assert len(tries) == 3
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # doubling
