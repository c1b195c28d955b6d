"""``headend dr measure``: the measured shed of an event given on the command line, per
meter or per feeder, with opt-outs, from reads ingested through the CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app

_register()
runner = CliRunner()

METERS = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
          "substation_id,interval_minutes\n"
          "A,electric,rf,true,1,T1,F1,S1,60\nB,electric,rf,true,1,T1,F1,S1,60\n"
          "C,electric,rf,true,1,T2,F2,S1,60\n")
EVENT = datetime(2026, 7, 22, 18, tzinfo=UTC)  # a Wednesday, 2 hours


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 kWh every hour for 30 days; on the event day 0.5 kWh in the event's hours."""
    tmp = tmp_path_factory.mktemp("dr")
    rows = ["meter_id,reading_type,interval_end,value,quality"]
    t = EVENT - timedelta(days=29, hours=18)
    while t < EVENT + timedelta(hours=6):
        t += timedelta(hours=1)
        v = "0.5" if EVENT < t <= EVENT + timedelta(hours=2) else "1"
        rows += [f"{m},kwh_del,{t:%Y-%m-%dT%H:%M:%SZ},{v}," for m in "ABC"]
    (tmp / "meters.csv").write_text(METERS)
    (tmp / "reads.csv").write_text("\n".join(rows) + "\n")
    (tmp / "optouts.csv").write_text("meter_id,at\nB,2026-07-22T19:00:00Z\n"
                                     "C,2026-07-22T20:00:00Z\n")
    res = runner.invoke(app, ["ingest", "--data", str(tmp / "data"), "--no-vee",
                              str(tmp / "meters.csv"), str(tmp / "reads.csv")])
    assert res.exit_code == 0, res.output
    return tmp


def _measure(data: Path, *more: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["dr", "measure", "--data", str(data / "data"), "--start",
                              "2026-07-22T18:00:00Z", "--minutes", "120", *more])
    return res.exit_code, res.stdout, res.stderr


def test_per_meter_with_opt_outs(data: Path) -> None:
    code, out, err = _measure(data, "--feeder", "F1", "--meter", "C", "--opt-outs",
                              str(data / "optouts.csv"))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["meter_id"], r["opted_out"], float(r["baseline_kwh"]), float(r["actual_kwh"]),
             float(r["shed_kwh"])) for r in rows] == [
        ("A", "false", 2.0, 1.0, 1.0),  # two hours at 1 kWh, used 0.5 each
        ("B", "true", 1.0, 0.5, 0.5),  # opted out after one hour
        ("C", "false", 2.0, 1.0, 1.0)]  # opted out at the end: too late


def test_per_feeder_and_json(data: Path) -> None:
    code, out, _ = _measure(data, "--feeder", "F1", "--feeder", "F2", "--by", "feeder",
                            "--json", "--opt-outs", str(data / "optouts.csv"))
    assert code == 0
    assert [json.loads(ln) for ln in out.splitlines()] == [
        {"feeder_id": "F1", "meters": 2, "opted_out": 1, "measured": 2, "baseline_kwh": 3.0,
         "actual_kwh": 1.5, "shed_kwh": 1.5},
        {"feeder_id": "F2", "meters": 1, "opted_out": 0, "measured": 1, "baseline_kwh": 2.0,
         "actual_kwh": 1.0, "shed_kwh": 1.0}]


@pytest.mark.parametrize(("args", "message"), [
    (["--meter", "Z"], "unknown meter 'Z'"),
    ([], "no target meter"),
    (["--meter", "A", "--method", "avg"], "--method must be one of"),
    (["--meter", "A", "--slot-minutes", "45"], "whole slots"),
    (["--meter", "A", "--tz", "Nowhere/City"], "--tz"),
    (["--meter", "A", "--holiday", "July 4"], "--holiday"),
])
def test_bad_arguments_exit_2_in_one_line(data: Path, args: list[str], message: str) -> None:
    code, out, err = _measure(data, *args)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
