"""The command verbs and ``export commands``: output, exit codes, idempotency, audit."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app

_register()
runner = CliRunner()

HEAD = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
        "substation_id,interval_minutes,critical_care\n")
METERS = HEAD + (
    "E1,electric,rf,true,1001,T1,F1,S1,15,false\n"
    "E2,electric,plc,true,1002,T1,F1,S1,15,true\n"
    "E3,electric,rf,false,1001,T1,F1,S1,15,\n"
    "W1,water,rf,true,1001,,,,60,\n"
) + "".join(f"B{i:03d},electric,rf,true,1003,T2,F1,S1,15,\n" for i in range(101))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "meters.csv").write_text(METERS)
    d = tmp_path / "data"
    res = runner.invoke(app, ["ingest", "--data", str(d), str(tmp_path / "meters.csv"),
                              "--no-vee", "--no-rules"])
    assert res.exit_code == 0, res.stderr
    return d


def run(data: Path, *args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, [*args[:2], "--data", str(data), *args[2:]])
    return res.exit_code, res.stdout, res.stderr


def lines(out: str) -> list[list[str]]:
    return [ln.split("\t") for ln in out.splitlines()]


def test_send_prints_every_command_and_exits_0_if_one_is_queued(data: Path) -> None:
    code, out, _ = run(data, "command", "send", "disconnect", "--meter", "E1", "--meter",
                       "E2", "--meter", "E3", "--meter", "W1", "--meter", "X9", "--id", "j1",
                       "--actor", "alice", "--reason", "non-payment")
    assert code == 0
    assert lines(out) == [["j1:E1", "disconnect", "E1", "queued", ""],
                          ["j1:E2", "disconnect", "E2", "rejected", "critical_care"],
                          ["j1:E3", "disconnect", "E3", "rejected", "meter_one_way"],
                          ["j1:W1", "disconnect", "W1", "rejected", "kind_unfit"],
                          ["j1:X9", "disconnect", "X9", "rejected", "meter_unknown"]]


def test_all_rejected_exits_3_and_json_shape(data: Path) -> None:
    code, out, _ = run(data, "command", "send", "read", "--meter", "E3", "--id", "r1",
                       "--json")
    assert code == 3
    [obj] = [json.loads(x) for x in out.splitlines()]
    assert list(obj) == ["command_id", "kind", "meter_id", "state", "reason", "created_at",
                         "updated_at", "detail", "reads"]
    assert (obj["command_id"], obj["state"], obj["reason"]) == ("r1", "rejected",
                                                                 "meter_one_way")
    assert obj["created_at"].endswith("Z") and obj["created_at"] == obj["updated_at"]


@pytest.mark.parametrize("args", [
    ["bogus", "--meter", "E1"], ["read"], ["disconnect", "--meter", "E2", "--force"],
    ["read", "--meter", "E1", "--meters-file", "/nonexistent/file"],
    ["read", "--meter", "E1", "--id", " "]])
def test_bad_arguments_exit_2(data: Path, args: list[str]) -> None:
    code, _, err = run(data, "command", "send", *args)
    assert code == 2 and err.startswith("headend: ")


def test_same_id_twice_is_one_command(data: Path) -> None:
    first = run(data, "command", "send", "ping", "--meter", "E1", "--id", "p1", "--json")
    again = run(data, "command", "send", "ping", "--meter", "E1", "--id", "p1", "--json")
    assert first[0] == again[0] == 0 and first[1] == again[1]
    code, _, err = run(data, "command", "send", "read", "--meter", "E1", "--id", "p1")
    assert code == 2 and "already a ping of meter E1" in err
    _, out, _ = run(data, "export", "commands")
    assert [r[0] for r in csv.reader(io.StringIO(out))] == ["command_id", "p1"]


def test_mass_disconnect_needs_yes_and_force_is_audited(tmp_path: Path, data: Path) -> None:
    f = tmp_path / "many.txt"
    f.write_text("meter_id\n# the B feeder\n" + "".join(f"B{i:03d}\n" for i in range(101)))
    code, out, _ = run(data, "command", "send", "disconnect", "--meters-file", str(f))
    assert code == 3 and {tuple(r[3:]) for r in lines(out)} == {("rejected", "confirmation_needed")}
    assert len(lines(out)) == 101
    code, out, _ = run(data, "command", "send", "disconnect", "--meters-file", str(f), "--yes")
    assert code == 0 and {tuple(r[3:]) for r in lines(out)} == {("queued", "")}
    code, out, _ = run(data, "command", "send", "disconnect", "--meter", "E2", "--id", "f1",
                       "--force", "--reason", "court order 17", "--actor", "bob", "--json")
    assert code == 0
    assert json.loads(out)["detail"] == "forced past critical_care by bob: court order 17"
    _, out, _ = run(data, "export", "commands", "--history", "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r for r in rows if r["command_id"] == "f1"] == [{
        "command_id": "f1", "kind": "disconnect", "meter_id": "E2", "state": "queued",
        "reason": None, "created_at": rows[-1]["created_at"],
        "updated_at": rows[-1]["created_at"], "actor": "bob",
        "detail": "forced past critical_care by bob: court order 17",
        "interval_reads": None, "register_reads": None, "first_interval_end": None,
        "last_interval_end": None, "read_uploads": None, "read_sources": None}]


def test_status_list_and_export(data: Path) -> None:
    run(data, "command", "send", "read", "--meter", "E1", "--meter", "E3", "--id", "a",
        "--actor", "carol")
    run(data, "command", "send", "ping", "--meter", "W1", "--id", "b")
    code, out, err = run(data, "command", "status", "b", "a:E3", "nope")
    assert code == 2 and "unknown command: nope" in err
    assert lines(out) == [["b", "ping", "W1", "queued", ""],
                          ["a:E3", "read", "E3", "rejected", "meter_one_way"]]
    assert [r[0] for r in lines(run(data, "command", "list")[1])] == ["a:E1", "a:E3", "b"]
    assert [r[0] for r in lines(run(data, "command", "list", "--state", "queued")[1])] == [
        "a:E1", "b"]
    assert [r[0] for r in lines(run(data, "command", "list", "--meter", "E3")[1])] == ["a:E3"]
    assert run(data, "command", "list", "--since", "2999-01-01")[1] == ""
    assert run(data, "command", "list", "--state", "lost")[0] == 2
    _, out, _ = run(data, "export", "commands")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["command_id", "kind", "meter_id", "state", "reason",
                             "created_at", "updated_at", "actor", "detail", "interval_reads",
                             "register_reads", "first_interval_end", "last_interval_end",
                             "read_uploads", "read_sources"]
    # a read that brought nothing yet: zeros; a ping: no reads columns
    assert [(r["interval_reads"], r["read_uploads"]) for r in rows] == [
        ("0", "0"), ("0", "0"), ("", "")]
    assert [(r["command_id"], r["state"], r["reason"], r["actor"]) for r in rows] == [
        ("a:E1", "queued", "", "carol"), ("a:E3", "rejected", "meter_one_way", "carol"),
        ("b", "queued", "", rows[2]["actor"])]
    assert rows[2]["actor"]  # the OS user


def test_wait_returns_at_the_deadline_with_the_current_states(data: Path) -> None:
    code, out, _ = run(data, "command", "send", "ping", "--meter", "E1", "--wait", "0.3")
    assert code == 0 and lines(out)[0][3] == "queued"


def test_empty_answers_say_so(data: Path) -> None:
    code, out, err = run(data, "command", "list")
    assert (code, out) == (0, "") and "no commands in" in err
    code, out, err = run(data, "export", "commands")
    assert code == 0 and out.splitlines() == [
        ("command_id,kind,meter_id,state,reason,created_at,updated_at,actor,detail,"
        "interval_reads,register_reads,first_interval_end,last_interval_end,read_uploads,"
        "read_sources")]
    assert "no commands in" in err
