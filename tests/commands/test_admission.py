"""Admission: commands are queued or rejected at once with the first reason that applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headend.commands import CommandRequest, MeterFacts, admit, command_ids, meter_facts
from headend.errors import ValidationError
from headend.model import commands as C
from headend.model.codes import Commodity
from headend.store.registry import MeterRegistry
from headend.wire.csvfmt import decode_csv

NOW = 1_767_225_600_000
METERS = (
    "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
    "substation_id,interval_minutes,critical_care\n"
    "E1,electric,rf,true,1001,T1,F1,S1,15,false\n"
    "E2,electric,plc,true,1002,T1,F1,S1,15,true\n"
    "E3,electric,rf,false,1001,T1,F1,S1,15,\n"
    "E4,electric,gprs,true,,T1,F1,S1,15,\n"
    "W1,water,rf,true,1001,,,,60,\n"
    "G1,gas,rf,true,1001,,,,60,\n"
)


@pytest.fixture
def registry(tmp_path: Path) -> MeterRegistry:
    reg = MeterRegistry(tmp_path)
    for d in decode_csv(METERS.encode(), source="meters.csv"):
        reg.upsert(d.meters)
    return reg


def _admit(registry: MeterRegistry, kind: str, meters: list[str], **kw: object
           ) -> dict[str, tuple[str, str | None]]:
    req = CommandRequest(kind, meters, "alice", **kw)  # type: ignore[arg-type]
    out = admit(req, meter_facts(registry, meters), now_ms=NOW)
    return {c.meter_id: (c.state, c.reason) for c in out}


def test_facts_from_the_registry(registry: MeterRegistry) -> None:
    f = meter_facts(registry, ["W1", "nope", "E2", "E4"])
    assert f.known.tolist() == [True, False, True, True]
    assert f.two_way.tolist() == [True, False, True, True]
    assert f.commodity.tolist() == [Commodity.WATER, 0, Commodity.ELECTRIC, Commodity.ELECTRIC]
    assert f.critical_care.tolist() == [False, False, True, False]
    assert list(f.collector_id) == ["1001", None, "1002", None]


def test_reasons_of_each_meter(registry: MeterRegistry) -> None:
    all_ = ["E1", "E2", "E3", "E4", "W1", "G1", "X9"]
    assert _admit(registry, "read", all_) == {
        "E1": ("queued", None), "E2": ("queued", None), "E3": ("rejected", "meter_one_way"),
        "E4": ("rejected", "no_collector"), "W1": ("queued", None), "G1": ("queued", None),
        "X9": ("rejected", "meter_unknown")}
    assert _admit(registry, "disconnect", all_) == {
        "E1": ("queued", None), "E2": ("rejected", "critical_care"),
        "E3": ("rejected", "meter_one_way"), "E4": ("rejected", "no_collector"),
        "W1": ("rejected", "kind_unfit"), "G1": ("rejected", "kind_unfit"),
        "X9": ("rejected", "meter_unknown")}
    # critical care refuses a disconnect only
    assert _admit(registry, "connect", ["E2"]) == {"E2": ("queued", None)}
    assert _admit(registry, "ping", ["E2", "W1"]) == {"E2": ("queued", None),
                                                      "W1": ("queued", None)}


def test_not_allowed_comes_after_unknown(registry: MeterRegistry) -> None:
    got = _admit(registry, "disconnect", ["E1", "X9", "W1"],
                 allowed_kinds=frozenset({"read", "ping"}))
    assert got == {"E1": ("rejected", "not_allowed"), "X9": ("rejected", "meter_unknown"),
                   "W1": ("rejected", "not_allowed")}
    assert _admit(registry, "read", ["E1"], allowed_kinds=frozenset({"read"})) == {
        "E1": ("queued", None)}


def test_force_with_reason_passes_critical_care_and_says_who(registry: MeterRegistry) -> None:
    req = CommandRequest("disconnect", ["E2", "E1"], "bob", reason="court order 17",
                         force=True)
    out = admit(req, meter_facts(registry, ["E2", "E1"]), now_ms=NOW)
    assert [(c.state, c.reason) for c in out] == [("queued", None), ("queued", None)]
    assert out[0].detail == "forced past critical_care by bob: court order 17"
    assert out[1].detail == "court order 17"
    with pytest.raises(ValidationError):
        CommandRequest("disconnect", ["E2"], "bob", force=True)


def _facts(n: int, commodity: int = Commodity.ELECTRIC) -> MeterFacts:
    return MeterFacts([f"M{i}" for i in range(n)], np.ones(n, bool), np.ones(n, bool),
                      np.full(n, commodity, np.uint8), np.zeros(n, bool), ["1"] * n)


@pytest.mark.parametrize(("n", "confirm", "queued"), [
    (C.CONFIRM_ABOVE, False, True), (C.CONFIRM_ABOVE + 1, False, False),
    (C.CONFIRM_ABOVE + 1, True, True)])
def test_mass_disconnect_needs_confirmation(n: int, confirm: bool, queued: bool) -> None:
    f = _facts(n)
    out = admit(CommandRequest("disconnect", f.meter_ids, "ops", confirm=confirm), f,
                now_ms=NOW)
    assert len(out) == n
    assert {(c.state, c.reason) for c in out} == (
        {("queued", None)} if queued else {("rejected", "confirmation_needed")})
    # reads of as many meters need nothing
    out = admit(CommandRequest("read", f.meter_ids, "ops"), f, now_ms=NOW)
    assert {c.state for c in out} == {"queued"}


def test_ids_times_codes(registry: MeterRegistry) -> None:
    assert command_ids("job7", ["A"]) == ["job7"]
    assert command_ids("job7", ["A", "B"]) == ["job7:A", "job7:B"]
    rnd = command_ids(None, ["A", "B"])
    assert len(set(rnd)) == 2
    assert all(len(i) == 16 and set(i) <= set("abcdefghijklmnopqrstuvwxyz234567") for i in rnd)
    req = CommandRequest("ping", ["W1", "E1", "W1"], "alice", command_id="p",
                         expires_in_s=60)
    out = admit(req, meter_facts(registry, ["W1", "E1", "W1"]), now_ms=NOW)
    assert [c.command_id for c in out] == ["p:W1", "p:E1"]  # a repeated meter counts once
    assert [c.control_code for c in out] == ["8.26.0.46", "3.26.0.46"]
    assert {(c.created_ms, c.updated_ms, c.expires_ms) for c in out} == {(NOW, NOW, NOW + 60_000)}
    assert [c.collector_id for c in out] == ["1001", "1001"]
    d = admit(CommandRequest("disconnect", ["E1"], "a"), meter_facts(registry, ["E1"]),
              now_ms=NOW)[0]
    assert d.control_code == "3.31.0.23" and d.expires_ms == NOW + 86_400_000
    unfit = admit(CommandRequest("connect", ["W1"], "a"), meter_facts(registry, ["W1"]),
                  now_ms=NOW)[0]
    assert unfit.control_code is None and unfit.reason == "kind_unfit"


@pytest.mark.parametrize("kw", [{"kind": "reboot"}, {"meter_ids": []},
                                {"expires_in_s": 0}, {"command_id": " "}])
def test_bad_requests(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"kind": "read", "meter_ids": ["A"], "actor": "a", **kw}
    with pytest.raises(ValidationError):
        CommandRequest(**args)  # type: ignore[arg-type]
