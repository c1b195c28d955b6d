"""The downlink line, the command_responses decoder and the codes behind them."""

from __future__ import annotations

import json

import pytest

from headend.commands import Command, decode_command_responses, downlink_line, downlink_lines
from headend.errors import DecodeError, ValidationError
from headend.model import commands as C
from headend.model.codes import Commodity
from headend.model.schema import QUARANTINE

T0 = 1_767_225_600_000


def test_control_codes() -> None:
    assert C.control_code("disconnect", Commodity.ELECTRIC) == "3.31.0.23"
    assert C.control_code("connect", Commodity.ELECTRIC) == "3.31.0.18"
    assert C.control_code("read", Commodity.GAS) == "7.21.0.46"
    assert C.control_code("ping", Commodity.WATER) == "8.26.0.46"
    assert set(C.ALL_REASONS) == set(C.REJECTIONS) | set(C.FAILURES) | set(C.EXPIRY)
    assert len(C.ALL_REASONS) == len(C.REJECTIONS) + len(C.FAILURES) + len(C.EXPIRY)
    assert C.TERMINAL_STATES == {"completed", "failed", "expired", "rejected"}


def test_downlink_line() -> None:
    c = Command("job:E1", "disconnect", "E1", "queued", None, "move-out", "alice", T0, T0,
                T0 + 86_400_000, "1001", "3.31.0.23")
    line = downlink_line(c, issued_ms=T0 + 250)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert list(obj) == ["command_id", "kind", "meter_id", "control_code", "issued_at",
                         "expires_at", "params"]
    assert obj == {"command_id": "job:E1", "kind": "disconnect", "meter_id": "E1",
                   "control_code": "3.31.0.23", "issued_at": "2026-01-01T00:00:00.250Z",
                   "expires_at": "2026-01-02T00:00:00.000Z", "params": {}}
    two = downlink_lines([c, c], issued_ms=T0)
    assert [json.loads(x)["command_id"] for x in two.splitlines()] == ["job:E1", "job:E1"]
    for bad in (Command("r", "read", "E", "rejected", "meter_one_way", None, "a", T0, T0, T0,
                        None, None),
                Command("q", "read", "E", "queued", None, None, "a", T0, T0, T0, "1", None)):
        with pytest.raises(ValidationError):
            downlink_line(bad, issued_ms=T0)


def test_command_responses_decode_and_rejects() -> None:
    data = (b"\xef\xbb\xbfcommand_id,meter_id,status,time,detail,extra\r\n"
            b"c1,E1,delivered,2026-01-01T00:00:05Z,,x\r\n"
            b"c1,E1,completed,2026-01-01T01:00:06.5+01:00,done,x\r\n"
            b"c2,E2,meter_unreachable,2026-01-01T00:01:00Z,3 tries,x\r\n"
            b"c3,E3,failed,2026-01-01T00:01:00Z,,x\r\n"
            b",E4,completed,2026-01-01T00:01:00Z,,x\r\n"
            b"c5,E5,completed,2026-01-01T00:01:00,,x\r\n"
            b"c6,E6,completed,2026-02-30T00:01:00Z,,x\r\n"
            b"c7,E7\r\n")
    ok, rej = decode_command_responses(data, source="up.csv", received_at=1_767_225_600)
    assert ok.to_pydict() == {
        "command_id": ["c1", "c1", "c2"], "meter_id": ["E1", "E1", "E2"],
        "status": ["delivered", "completed", "meter_unreachable"],
        "state": ["delivered", "completed", "failed"],
        "reason": [None, None, "meter_unreachable"],
        "time": ok.column("time").to_pylist(),
        "detail": [None, "done", "3 tries"]}
    assert [t.timestamp() for t in ok.column("time").to_pylist()] == [
        1_767_225_605, 1_767_225_606.5, 1_767_225_660]
    assert rej.schema == QUARANTINE
    got = sorted(zip(rej.column("reason").to_pylist(), rej.column("payload").to_pylist(),
                     strict=True))
    assert got == [
        ("bad_command_response", b"c3,E3,failed,2026-01-01T00:01:00Z,"),
        ("bad_csv", b",E4,completed,2026-01-01T00:01:00Z,"),
        ("bad_csv", b"c7,E7"),
        ("bad_timestamp", b"c5,E5,completed,2026-01-01T00:01:00,"),
        ("bad_timestamp", b"c6,E6,completed,2026-02-30T00:01:00Z,"),
    ]
    assert set(rej.column("kind").to_pylist()) == {"command_responses"}
    assert set(rej.column("source").to_pylist()) == {"up.csv"}


def test_command_responses_header_is_checked() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_command_responses(b"meter_id,command_id,status,time,detail\n", source="x")
    assert exc.value.reason == "bad_csv"
    ok, rej = decode_command_responses(b"command_id,meter_id,status,time,detail\n",
                                       source="x")
    assert ok.num_rows == 0 and rej.num_rows == 0
