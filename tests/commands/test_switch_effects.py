"""Effects of completed disconnects and connects (issue 12, point 3): the registry's
``switch_state`` with its history, the EndDeviceEvent stored and published like any
event, and the rules that read the state."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.commands.apply import switch_effects
from headend.commands.lifecycle import Command
from headend.model.commands import SWITCH_STATES
from headend.store.registry import MeterRegistry

_register()
runner = CliRunner()

METERS = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
          "substation_id,interval_minutes\n"
          "E1,electric,rf,true,1001,T1,F1,S1,15\n"
          "E2,electric,rf,true,1001,T1,F1,S1,15\n")


def cli(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res.stdout


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "meters.csv").write_text(METERS)
    d = tmp_path / "data"
    cli("ingest", "--data", str(d), str(tmp_path / "meters.csv"), "--no-vee", "--no-rules")
    return d


def _respond(tmp: Path, data: Path, rows: list[str], name: str) -> None:
    f = tmp / name
    f.write_text("command_id,meter_id,status,time,detail\n" + "".join(r + "\n" for r in rows))
    cli("ingest", "--data", str(data), str(f), "--no-vee", "--no-rules")


def _meters(data: Path) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO(cli("export", "meters", "--data", str(data))))
    return {r["meter_id"]: r["switch_state"] for r in rows}


def test_a_completed_disconnect_opens_the_switch_and_tells_the_bus(tmp_path: Path,
                                                                   data: Path) -> None:
    cli("command", "send", "disconnect", "--meter", "E1", "--id", "d1", "--data", str(data))
    assert _meters(data) == {"E1": "unknown", "E2": "unknown"}
    _respond(tmp_path, data, ["d1,E1,delivered,2026-01-05T10:00:00Z,"], "r1.csv")
    assert _meters(data)["E1"] == "unknown"  # delivered is not done
    _respond(tmp_path, data, ["d1,E1,completed,2026-01-05T10:00:05Z,switch open"], "r2.csv")
    assert _meters(data) == {"E1": "disconnected", "E2": "unknown"}
    events = cli("export", "events", "--data", str(data))
    assert "E1," in events and ",3.31.0.68" in events  # stored, so also on the bus
    # the answer again: a duplicate, no second event and no change
    _respond(tmp_path, data, ["d1,E1,completed,2026-01-05T10:00:05Z,switch open"], "r3.csv")
    assert cli("export", "events", "--data", str(data)).count("3.31.0.68") == 1
    # reconnect: the history keeps both versions
    cli("command", "send", "connect", "--meter", "E1", "--id", "c1", "--data", str(data))
    _respond(tmp_path, data, ["c1,E1,completed,2026-01-05T12:00:00Z,"], "r4.csv")
    assert _meters(data)["E1"] == "connected"
    hist = MeterRegistry(data).switch_history()
    assert hist.column("command_id").to_pylist() == ["d1", "c1"]
    assert [SWITCH_STATES[s] for s in hist.column("switch_state").to_pylist()] == [
        "disconnected", "connected"]
    assert ",3.31.0.42" in cli("export", "events", "--data", str(data))


def test_a_failed_disconnect_leaves_the_switch_alone(tmp_path: Path, data: Path) -> None:
    cli("command", "send", "disconnect", "--meter", "E2", "--id", "d2", "--data", str(data))
    _respond(tmp_path, data, ["d2,E2,switch_failed,2026-01-05T10:00:00Z,stuck"], "r.csv")
    assert _meters(data)["E2"] == "unknown"
    assert MeterRegistry(data).switch_history().num_rows == 0


def test_the_state_in_effect_is_the_latest_by_time(tmp_path: Path) -> None:
    reg = MeterRegistry(tmp_path)
    import pyarrow as pa

    reg.upsert(pa.table({"meter_id": ["A", "B"], "commodity": [0, 0], "technology": [0, 0],
                         "two_way": [True, True], "collector_id": ["1", "1"],
                         "transformer_id": ["T", "T"], "feeder_id": ["F", "F"],
                         "substation_id": ["S", "S"], "interval_s": [900, 900]}))
    dis, con = SWITCH_STATES.index("disconnected"), SWITCH_STATES.index("connected")
    # a late-recorded older connect does not undo a newer disconnect
    assert reg.set_switch_states(np.array([0], np.int32), np.array([dis], np.uint8),
                                 np.array([2000], np.int64), ["x"]) == 1
    assert reg.set_switch_states(np.array([0, 7], np.int32), np.array([con, con], np.uint8),
                                 np.array([1000, 1000], np.int64), ["y", "z"]) == 0
    assert reg.table().column("switch_state").to_pylist() == [dis, 0]
    assert MeterRegistry(tmp_path).switch_history().num_rows == 3  # every version kept


def test_switch_effects_only_of_completed_switch_commands() -> None:
    def cmd(kind: str, state: str) -> Command:
        return Command(command_id=f"{kind}-{state}", kind=kind, meter_id="M", state=state,
                       reason=None, detail=None, actor="a", created_ms=1, updated_ms=5000,
                       expires_ms=9, collector_id="1", control_code=None)

    got = switch_effects([cmd("disconnect", "completed"), cmd("connect", "failed"),
                          cmd("read", "completed"), cmd("connect", "completed")])
    assert [(e[0], SWITCH_STATES[e[1]], e[2], e[3]) for e in got] == [
        ("M", "disconnected", 5000, "disconnect-completed"),
        ("M", "connected", 5000, "connect-completed")]
