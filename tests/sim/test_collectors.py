"""Simulated collectors that answer (issue 12, point 5): the pure decisions, and the
fleet against a real in-process ``serve`` over HTTP (long poll + uploads) and MQTT
(the real Mosquitto on 127.0.0.1:1883): every command's final state in the head end is
the one the fleet's ground truth implies."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.model import commands as C
from headend.sim import build_utility
from headend.sim.collectors import (
    Behaviour,
    FleetMeters,
    Truth,
    decide,
    expected_state,
    reads_csv,
    score,
)
from headend.sim.fleet import CollectorFleet
from tests.serve._commands import PLAIN, meters_csv, send, serving, wait_for
from tests.serve.test_commands_mqtt import _mqtt, names  # noqa: F401 (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")

_register()
runner = CliRunner()
FAST = {"tick_s": 0.05, "rate_per_s": 1000, "burst": 1000, "max_in_flight": 64}
#: expiry of the mixed runs' commands [s], and how long before it the fleet stops
#: executing one (its answer must reach serve before serve expires it, on a loaded
#: machine too)
EXPIRES_S, MARGIN_S = 6, 2.5


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def fleet_meters(c: str, d: str) -> FleetMeters:
    return FleetMeters.from_table(pacsv.read_csv(io.BytesIO(meters_csv(c, d))))


# --------------------------------------------------------------------------- pure


def test_meters_csv_keeps_two_way_meters_with_a_collector() -> None:
    fm = fleet_meters("C1", "C2")
    assert sorted(fm.meter_id) == sorted([*PLAIN, "W1", "K1", "E7", "E8"])  # not O1, N1
    assert fm.collectors == ["C1", "C2"]
    r = fm.index(["E7", "W1", "nope"])
    assert fm.technology[r[0]] == "plc" and fm.commodity[r[1]] == "water" and r[2] == -1
    assert set(fm.interval_s.tolist()) == {900, 3600}


def test_utility_fleet_matches_its_registry() -> None:
    u = build_utility(500, seed=3, network="plc")
    fm = FleetMeters.from_utility(u)
    m = u.meters.filter(u.meters.column("two_way"))
    assert len(fm) == m.num_rows
    assert fm.meter_id.tolist() == m.column("meter_id").to_pylist()
    assert fm.collector_id.tolist() == m.column("collector_id").to_pylist()
    assert set(fm.technology) <= {"plc", "gprs"} and "plc" in set(fm.technology)


def test_fates_depend_on_the_seed_and_id_only_and_follow_the_rates() -> None:
    b = Behaviour(failure_rate=0.2, silent_rate=0.1, duplicate_rate=0.05)
    ids = [f"x{i}" for i in range(20_000)]
    kinds = ["read", "ping", "disconnect", "connect"] * 5_000
    tech = ["rf", "plc", "gprs", "rf"] * 5_000
    d = decide(7, ids, kinds, tech, np.ones(len(ids), bool), b)
    rev = decide(7, ids[::-1], kinds[::-1], tech[::-1], np.ones(len(ids), bool), b)
    assert (rev.action[::-1] == d.action).all() and (rev.delay_s[::-1] == d.delay_s).all()
    other = decide(8, ids, kinds, tech, np.ones(len(ids), bool), b)
    assert (other.action != d.action).any()
    share = np.bincount(d.action, minlength=3) / len(ids)
    assert abs(share[1] - 0.2) < 0.01 and abs(share[2] - 0.1) < 0.01
    assert abs(d.duplicate.mean() - 0.05 * 0.9) < 0.01 and not d.duplicate[d.action == 2].any()
    failed = d.action == 1
    kind = np.array(kinds, object)
    assert set(d.reason[failed & (kind == "ping")]) == {"meter_unreachable", "collector_error"}
    assert "switch_failed" in set(d.reason[failed & (kind == "disconnect")])
    assert set(d.reason[failed]) <= set(C.RESPONSE_STATUSES)
    t = np.array(tech, object)
    for name, (lo, hi) in b.latency.items():
        x = d.delay_s[t == name]
        assert lo <= x.min() and x.max() <= hi and x.max() - x.min() > 0.9 * (hi - lo)


def test_a_meter_without_power_fails_or_stays_silent() -> None:
    ids = [f"p{i}" for i in range(200)]
    dark = np.arange(200) % 2 == 0
    d = decide(1, ids, ["ping"] * 200, ["rf"] * 200, ~dark, Behaviour())
    assert (d.action[dark] == 1).all() and set(d.reason[dark]) == {"meter_unreachable"}
    assert (d.action[~dark] == 0).all()
    d = decide(1, ids, ["ping"] * 200, ["rf"] * 200, ~dark, Behaviour(unpowered="none"))
    assert (d.action[dark] == 2).all() and set(d.why_none[dark]) == {"unpowered"}


def test_on_demand_reads_on_the_meters_grid_and_zero_while_open() -> None:
    fm = fleet_meters("C1", "C2")
    rows = fm.index(["E1", "E2", "W1"])
    at = 1_767_225_600 + 3 * 3600 + 1000  # 03:16:40 UTC
    since = np.full(len(fm), np.nan)
    until = np.full(len(fm), np.nan)
    since[rows[1]], until[rows[1]] = at - 1900, np.inf  # E2 open since 02:45:00
    body, n = reads_csv(fm, rows, at, 3, open_since=since, open_until=until)
    got = [line.split(",") for line in body.decode().splitlines()]
    assert got[0] == ["meter_id", "reading_type", "interval_end", "value", "quality"]
    assert n == 9 and len(got) == 10
    e1 = [(r[2], float(r[3])) for r in got[1:] if r[0] == "E1"]
    assert [e for e, _ in e1] == ["2026-01-01T03:15:00+00:00", "2026-01-01T03:00:00+00:00",
                                  "2026-01-01T02:45:00+00:00"]
    assert all(0 < v < 5 for _, v in e1)
    e2 = {r[2]: float(r[3]) for r in got[1:] if r[0] == "E2"}
    assert e2["2026-01-01T03:15:00+00:00"] == 0 and e2["2026-01-01T03:00:00+00:00"] == 0
    assert e2["2026-01-01T02:45:00+00:00"] > 0  # ended before the switch opened
    w1 = [r for r in got[1:] if r[0] == "W1"]
    assert [r[1] for r in w1] == ["water_m3"] * 3 and w1[0][2] == "2026-01-01T03:00:00+00:00"


def test_score_compares_truth_with_final_states() -> None:
    t = [Truth("a", "read", "E1", "C1", 0, 10, 0, action="completed"),
         Truth("b", "ping", "E1", "C1", 0, 10, 0, action="failed", reason="meter_unreachable"),
         Truth("c", "ping", "E1", "C1", 0, 10, 0, action="none", reason="silent")]
    assert [expected_state(x) for x in t] == [("completed", None),
                                              ("failed", "meter_unreachable"),
                                              ("expired", "expired")]
    s = score(t, {"a": ("completed", None), "b": ("failed", "meter_unreachable"),
                  "c": ("sent", None)})
    assert s["matched"] == 2 and s["mismatches"] == [("c", ("expired", "expired"),
                                                      ("sent", None))]


# --------------------------------------------------------------------------- against serve


def _final(client: httpx.Client, ids: list[str], timeout_s: float = 15.0
           ) -> dict[str, tuple[str, str | None]]:
    """Each command's state once every one is final in the head end."""
    out: dict[str, tuple[str, str | None]] = {}

    def done() -> bool:
        for i in ids:
            if i not in out:
                j = client.get(f"/v1/commands/{i}").json()
                if j["state"] in C.TERMINAL_STATES:
                    out[i] = (j["state"], j["reason"])
        return len(out) == len(ids)

    wait_for(done, timeout_s)
    return out


def _mixed(client: httpx.Client, fleet: CollectorFleet, tag: str) -> None:
    """Reads, pings, disconnects and connects with failures, silence, duplicates and a
    meter without power; every final state is the fleet's truth."""
    fleet.set_unpowered({"E6"})
    sent: list[dict[str, Any]] = []
    for r in range(3):
        sent += send(client, "read", [*PLAIN, "W1", "E7", "E8"], command_id=f"{tag}r{r}",
                     expires_in_s=EXPIRES_S)
    sent += send(client, "ping", [*PLAIN, "E7"], command_id=f"{tag}p", expires_in_s=EXPIRES_S)
    sent += send(client, "disconnect", ["E1", "E7"], command_id=f"{tag}d", expires_in_s=EXPIRES_S)
    sent += send(client, "connect", ["E2", "E8"], command_id=f"{tag}c", expires_in_s=EXPIRES_S)
    ids = [c["command_id"] for c in sent]
    assert {c["state"] for c in sent} == {"queued"}
    final = _final(client, ids, timeout_s=20)
    wait_for(lambda: fleet.pending() == 0, 5)
    truth = fleet.truth()
    assert sorted(t.command_id for t in truth) == sorted(ids)  # every one came down
    s = score(truth, final)
    assert s["mismatches"] == [] and s["matched"] == len(ids)
    # the run exercised each fate: answered, failed with a reason, never answered
    # (expired in the head end), answered twice, and the meter without power
    assert {"completed", "failed", "none"} <= set(s["by_action"])
    assert any(t.answers >= 2 for t in truth)
    e6 = [t for t in truth if t.meter_id == "E6"]
    assert e6 and all(expected_state(t)[0] != "completed" for t in e6)
    assert all((t.reason == "meter_unreachable") for t in e6 if t.action == "failed")
    reads = [t for t in truth if t.kind == "read" and t.action == "completed"]
    assert reads and all(t.reads == 4 for t in reads)
    assert all(t.answered_ms is not None and t.answered_ms >= t.received_ms
               for t in truth if t.action != "none")


def _behaviour() -> Behaviour:
    return Behaviour(latency_scale=0.02, failure_rate=0.25, silent_rate=0.15,
                     duplicate_rate=0.3)


def _export(data: Path, *args: str) -> list[list[str]]:
    res = runner.invoke(app, ["export", *args, "--data", str(data)])
    assert res.exit_code == 0, res.output
    return [line.split(",") for line in res.stdout.splitlines()]


def test_http_fleet_every_final_state_is_its_truth(data_dir: Path) -> None:
    with serving(data_dir, commands={**FAST, "resend_after_s": 1}) as (_, client), \
            CollectorFleet(fleet_meters("C1", "C2"), url=str(client.base_url),
                           behaviour=_behaviour(), seed=4, poll_wait_s=2,
                           expiry_margin_s=MARGIN_S) as fleet:
        _mixed(client, fleet, "h")
        done = [t for t in fleet.truth() if t.kind == "read" and t.action == "completed"]
        assert fleet.stats["upload_errors"] == 0
    # on-demand reads are ordinary reads in the store
    stored = {(r[0], r[2]) for r in _export(data_dir, "reads")[1:]}
    for t in done:
        at = t.answered_ms // 1000 if t.answered_ms else 0
        step = 3600 if t.meter_id == "W1" else 900
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at // step * step))
        assert (t.meter_id, end) in stored


def test_resent_commands_are_answered_once_per_id(data_dir: Path) -> None:
    """A latency longer than serve's resend_after_s: the command comes twice, the fleet
    executes it once and answers it (head end: completed, one truth row, 2 receipts)."""
    b = Behaviour(latency={"rf": (2.5, 2.5), "plc": (2.5, 2.5)})
    with serving(data_dir, commands={**FAST, "resend_after_s": 1}) as (_, client), \
            CollectorFleet(fleet_meters("C1", "C2"), url=str(client.base_url), behaviour=b,
                           poll_wait_s=2) as fleet:
        ids = [c["command_id"] for c in send(client, "ping", ["E1", "E7"])]
        final = _final(client, ids)
        assert set(final.values()) == {("completed", None)}
        truth = fleet.truth()
        assert [t.receipts >= 2 for t in truth] == [True, True]
        assert score(truth, final)["matched"] == 2


def test_switch_and_ping_ground_truth(data_dir: Path) -> None:
    """A completed disconnect opens the simulated switch: the registry shows it, and
    the meter's next interval reads zero; pings answer from the power ground truth."""
    with serving(data_dir, commands=FAST) as (_, client), \
            CollectorFleet(fleet_meters("C1", "C2"), url=str(client.base_url),
                           behaviour=Behaviour(latency_scale=0.01), poll_wait_s=2) as fleet:
        ids = [c["command_id"] for c in send(client, "disconnect", ["E2"])]
        assert _final(client, ids) == {ids[0]: ("completed", None)}
        assert fleet.switch_state("E2") == "disconnected"
        assert fleet.switch_state("E1") == "unknown"
        fleet.set_unpowered({"E3"})
        pings = [c["command_id"] for c in send(client, "ping", ["E1", "E3"])]
        got = _final(client, pings)
        assert [got[i] for i in pings] == [("completed", None), ("failed", "meter_unreachable")]
        fleet.set_unpowered(())
        again = [c["command_id"] for c in send(client, "ping", ["E3"], command_id="p2")]
        assert _final(client, again) == {"p2": ("completed", None)}
        nxt = (int(time.time()) // 900 + 1) * 900  # the interval after the disconnect
        assert fleet.upload_reads(nxt) == 10  # every meter of the fleet, one interval
    meters = _export(data_dir, "meters")
    col = meters[0].index("switch_state")
    assert {r[0]: r[col] for r in meters[1:]}["E2"] == "disconnected"
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nxt))
    got = {r[0]: float(r[3]) for r in _export(data_dir, "reads")[1:] if r[2] == end}
    assert got["E2"] == 0 and got["E1"] > 0 and got["E3"] > 0


@pytest.mark.service("mosquitto")
def test_mqtt_fleet_every_final_state_is_its_truth(data_dir: Path,
                                                   names: dict[str, str],  # noqa: F811
                                                   ) -> None:
    n = names  # unique collector ids, uplink root and client id (dropped at the end)
    cfg = _mqtt(n, **FAST, resend_after_s=1)
    fleet = CollectorFleet(fleet_meters(n["c"], n["d"]), transport="mqtt",
                           mqtt="mqtt://127.0.0.1:1883", uplink_root=n["root"],
                           behaviour=_behaviour(), seed=4, expiry_margin_s=MARGIN_S)
    with fleet, serving(data_dir, **cfg) as (_, client):
        _mixed(client, fleet, "m")
        assert fleet.stats["polls"] == 0 and fleet.stats["uploads"] > 0


def test_cli_simulate_collectors(data_dir: Path, tmp_path: Path) -> None:
    meters = tmp_path / "meters.csv"
    meters.write_bytes(meters_csv("C1", "C2"))
    truth = tmp_path / "truth.jsonl"
    with serving(data_dir, commands=FAST) as (_, client):
        ids = [c["command_id"] for c in send(client, "read", ["E1", "E7"])]
        res = runner.invoke(app, [
            "simulate", "collectors", "--serve", str(client.base_url), "--meters", str(meters),
            "--latency", "rf=0:0.2", "--latency", "plc=0:0.2", "--duration", "8",
            "--seed", "1", "--truth", str(truth), "--json"])
        assert res.exit_code == 0, res.output
        final = _final(client, ids)
    rows = [json.loads(x) for x in truth.read_text().splitlines()]
    assert sorted(r["command_id"] for r in rows) == sorted(ids)
    assert score([Truth(**r) for r in rows], final)["matched"] == 2
    summary = json.loads(res.stdout)
    assert summary["commands"] == 2 and summary["by_action"] == {"completed": 2}
    bad = runner.invoke(app, ["simulate", "collectors", "--serve", "http://x",
                              "--meters", str(meters), "--transport", "pigeon"])
    assert bad.exit_code == 2
