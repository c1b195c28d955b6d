"""Outage verification by ping through ``headend serve`` (issue 12, point 4): the rules
ask real ``ping`` commands, a collector answers them over the long poll and a
``command_responses`` upload, and the outage is confirmed or dropped from the answers.

The fleet is :func:`tests.serve._commands.meters_csv`: transformer T1 (E1-E6, K1, O1,
N1 and the water meter W1) and transformer T2 (E7, E8, two-way, on collector C2). A
small collector in the test long-polls ``GET /v1/collectors/C2/commands`` and answers
from a ground truth: a dark meter is ``meter_unreachable``, a powered one ``completed``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from headend.commands import Command
from headend.rules.pinger import CANNOT_PING, NO_ANSWER, PENDING, POWERED
from headend.serve.pinger import ACTOR, REASON, ping_answer

from ._commands import poll, responses_csv, send, serving, upload, wait_for

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ELECTRIC = ("E1", "E2", "E3", "E4", "E5", "E6", "K1", "O1", "N1", "E7", "E8")
T2 = ("E7", "E8")
#: the watermark at which T2's silence is found: the first slice of event time with
#: data more than one interval + slack after its last read (interval 6's reads) [s]
ASKED_AT = int((T0 + dt.timedelta(minutes=90)).timestamp())


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def reads_csv(k: int, meters: tuple[str, ...]) -> bytes:
    """The 15-minute reads of interval ``k`` (ending ``T0 + 15 min * k``) of ``meters``."""
    end = _iso(T0 + dt.timedelta(minutes=15 * k))
    return ("meter_id,reading_type,interval_end,value,quality\n" + "".join(
        f"{m},kwh_del,{end},0.25,\n" for m in meters)).encode()


class Collector:
    """Collector C2 of the test: answers every command it polls from ``dark`` (the
    meters without power: ``meter_unreachable``; the others ``completed``)."""

    def __init__(self, client: httpx.Client, dark: set[str]) -> None:
        self.client, self.dark = client, dark
        self.answered: list[tuple[str, str, str]] = []  # (command_id, meter_id, kind)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import json

        while not self._stop.is_set():
            r = poll(self.client, "C2", wait=1)
            if r.status_code != 200:
                continue
            cmds = [json.loads(x) for x in r.text.splitlines()]
            rows = [(c["command_id"], c["meter_id"],
                     "meter_unreachable" if c["meter_id"] in self.dark else "completed")
                    for c in cmds]
            upload(self.client, responses_csv(*rows))
            self.answered += [(c["command_id"], c["meter_id"], c["kind"]) for c in cmds]

    @contextmanager
    def running(self) -> Iterator[Collector]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def _ping_states(client: httpx.Client, meters: tuple[str, ...]) -> dict[str, str]:
    """The rules' ping commands of ``meters``: command id -> state."""
    out = {}
    for m in meters:
        r = client.get(f"/v1/commands/rules-ping-{ASKED_AT}:{m}")
        if r.status_code == 200:
            out[r.json()["command_id"]] = r.json()["state"]
    return out


def _silent_t2(client: httpx.Client, collector: Collector) -> None:
    """Intervals 1-4 from every electric meter, then T2 falls silent (no gasp): its
    silence is seen at the 90 min slice, pinged, answered, and judged."""
    for k in range(1, 5):
        upload(client, reads_csv(k, ELECTRIC))
    lit = tuple(m for m in ELECTRIC if m not in T2)
    for k in (5, 6):
        upload(client, reads_csv(k, lit))
    # the pings asked when T2's silence was found: one per meter
    wait_for(lambda: len(collector.answered) == 2)
    assert sorted((m, kind) for _, m, kind in collector.answered) == [
        ("E7", "ping"), ("E8", "ping")]
    wait_for(lambda: set(_ping_states(client, T2).values()) <= {"completed", "failed"}
             and len(_ping_states(client, T2)) == 2)
    for k in range(7, 10):  # event time moves on: the rule reads the answers
        upload(client, reads_csv(k, lit))


def test_an_outage_whose_gasps_were_all_lost_is_found_by_ping(tmp_path: Path) -> None:
    with serving(tmp_path / "data", rules_lateness_s=0) as (svc, client), \
            Collector(client, dark=set(T2)).running() as coll:
        _silent_t2(client, coll)
        cmds = [client.get(f"/v1/commands/{cid}").json() for cid, _, _ in coll.answered]
        assert {(c["kind"], c["state"], c["reason"]) for c in cmds} == {
            ("ping", "failed", "meter_unreachable")}
        # the command log says who asked and why
        audit = svc.commands.store.history(cmds[0]["command_id"])
        assert (audit[0].actor, audit[0].detail) == (ACTOR, REASON)
        found = [(o.level, o.device_id, o.start, o.meters_affected, o.inputs[-1])
                 for o in svc.rules.outages]
        # located at the transformer, from the last read before the silence
        start = int((T0 + dt.timedelta(hours=1)).timestamp()) + 1
        assert found == [("transformer", "T2", start, 2, "ping")]


def test_silence_answering_pings_is_no_outage(tmp_path: Path) -> None:
    with serving(tmp_path / "data", rules_lateness_s=0) as (svc, client), \
            Collector(client, dark=set()).running() as coll:
        _silent_t2(client, coll)
        states = _ping_states(client, T2)
        assert sorted(states.values()) == ["completed", "completed"]
        # the meters answered: their radios, not their power, fell silent
        assert list(svc.rules.outages) == []
    # the same silence without pings is a transformer outage (every gasp lost)
    rules = tmp_path / "quiet" / "rules"
    rules.mkdir(parents=True)
    (rules / "rules.yaml").write_text(
        "rules:\n  - {name: outages, kind: outage, params: {use_pings: false}}\n")
    with serving(tmp_path / "quiet", rules_lateness_s=0) as (svc, client):
        for k in range(1, 5):
            upload(client, reads_csv(k, ELECTRIC))
        for k in range(5, 10):
            upload(client, reads_csv(k, tuple(m for m in ELECTRIC if m not in T2)))
        assert [(o.level, o.device_id) for o in svc.rules.outages] == [("transformer", "T2")]
        assert _ping_states(client, T2) == {}


def test_all_meters_of_a_transformer_disconnected_is_no_outage(tmp_path: Path) -> None:
    """Disconnect T2's meters through serve: once the collector completed them, the
    meters fall dark on purpose (a gasp each, then no read): no outage, and no ping."""
    with serving(tmp_path / "data", rules_lateness_s=0) as (svc, client), \
            Collector(client, dark=set()).running() as coll:
        for k in range(1, 5):
            upload(client, reads_csv(k, ELECTRIC))
        made = send(client, "disconnect", list(T2), reason="move-out")
        assert [c["state"] for c in made] == ["queued", "queued"]
        wait_for(lambda: all(client.get(f"/v1/commands/{c['command_id']}").json()["state"]
                             == "completed" for c in made))
        gasp = _iso(T0 + dt.timedelta(minutes=61))
        upload(client, ("meter_id,event_time,event_code\n" + "".join(
            f"{m},{gasp},3.26.0.85\n" for m in T2)).encode())
        lit = tuple(m for m in ELECTRIC if m not in T2)
        for k in range(5, 12):
            upload(client, reads_csv(k, lit))
        assert list(svc.rules.outages) == []
        assert sorted(kind for _, _, kind in coll.answered) == ["disconnect", "disconnect"]


@pytest.mark.parametrize(("state", "reason", "sent", "answer"), [
    ("queued", None, False, PENDING), ("sent", None, True, PENDING),
    ("delivered", None, True, PENDING), ("completed", None, True, POWERED),
    ("failed", "meter_refused", True, POWERED), ("failed", "meter_unreachable", True, NO_ANSWER),
    ("expired", "expired", True, NO_ANSWER), ("expired", "expired", False, CANNOT_PING),
    ("failed", "downlink_failed", False, CANNOT_PING),
    ("failed", "collector_error", True, CANNOT_PING),
    ("rejected", "meter_one_way", False, CANNOT_PING)])
def test_what_a_ping_command_answers_the_rules(state: str, reason: str | None, sent: bool,
                                                answer: int) -> None:
    """An expired ping that reached the collector went unanswered; one never sent (the
    collector did not poll) had no path to the meter, so it tells nothing."""
    c = Command("p1", "ping", "E7", state, reason, None, ACTOR, 0, 0, 300_000)
    assert ping_answer(c, lambda _: sent) == answer
