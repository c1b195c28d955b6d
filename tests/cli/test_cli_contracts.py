"""The CLI contracts of ingest, export and quarantine: exit codes, JSON, CSV shape and order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app

_register()
runner = CliRunner()

METERS = (
    "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id\n"
    "M-10,electric,rf,true,1,T1,F1,S1\n"
    "M-2,electric,rf,true,1,T1,F1,S1\n"
    "W-1,water,rf,false,1,,F1,S1\n"
)
READS = (
    "meter_id,reading_type,interval_end,value,quality\n"
    "M-2,volts,2026-01-01T00:15:00Z,240.1,\n"
    "M-2,kwh_del,2026-01-01T00:30:00+00:00,0.25,\n"
    "M-10,kwh_del,2026-01-01T01:15:00+01:00,1.5,1.2.32\n"  # = 00:15Z
    "M-2,kwh_del,2026-01-01T00:15:00Z,0.125,\n"
    "W-1,water_m3,2026-01-01T00:15:00Z,0.004,\n"
    "M-2,kwh_del,2026-01-01T00:15:00Z,0.125,\n"  # duplicate in the same file
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "reads.csv").write_text(READS)
    return tmp_path / "data"


def ingest(data: Path, *files: Path, json_out: bool = True, vee: bool = False
           ) -> tuple[int, dict[str, object]]:
    args = ["ingest", "--data", str(data), *map(str, files)] + (["--json"] if json_out else [])
    args += [] if vee else ["--no-vee"]
    res = runner.invoke(app, args)
    ok = res.exit_code == 0 or (res.exit_code == 3 and "no row accepted" in res.stderr)
    return res.exit_code, (json.loads(res.stdout) if json_out and ok else {})


def test_ingest_json_summary_and_export_sorted(data: Path) -> None:
    code, summary = ingest(data, data.parent / "reads.csv", data.parent / "meters.csv")
    assert code == 0
    assert (summary["accepted"], summary["duplicate"], summary["quarantined"]) == (5, 1, 0)
    res = runner.invoke(app, ["export", "reads", "--data", str(data)])
    assert res.exit_code == 0
    assert res.stdout.splitlines() == [
        "meter_id,reading_type,interval_end,value,quality",
        "M-10,kwh_del,2026-01-01T00:15:00Z,1.500,1.2.32",
        "M-2,kwh_del,2026-01-01T00:15:00Z,0.125,",
        "M-2,kwh_del,2026-01-01T00:30:00Z,0.250,",
        "M-2,volts,2026-01-01T00:15:00Z,240.1,",
        "W-1,water_m3,2026-01-01T00:15:00Z,0.004,",
    ]
    res = runner.invoke(app, ["export", "reads", "--data", str(data), "--meter", "M-2",
                              "--reading-type", "kwh_del", "--from", "2026-01-01T00:20:00Z"])
    assert res.stdout.splitlines()[1:] == ["M-2,kwh_del,2026-01-01T00:30:00Z,0.250,"]
    res = runner.invoke(app, ["export", "reads", "--data", str(data), "--to",
                              "2026-01-01T00:15:00Z"])
    assert res.stdout.splitlines() == ["meter_id,reading_type,interval_end,value,quality"]


def test_ingest_json_seconds_by_stage(data: Path) -> None:
    """``seconds_by_stage`` names decode, store, vee and rules (0 for a stage that did
    not run) and adds up to no more than the stages could have taken."""
    code, summary = ingest(data, data.parent / "meters.csv", data.parent / "reads.csv", vee=True)
    assert code == 0
    stages = summary["seconds_by_stage"]
    assert isinstance(stages, dict) and {"decode", "store", "vee", "rules"} <= set(stages)
    assert all(isinstance(v, float) and v >= 0 for v in stages.values()), stages
    assert stages["decode"] + stages["store"] > 0
    code, summary = ingest(data.parent / "other", data.parent / "meters.csv",
                           data.parent / "reads.csv", vee=False)
    stages = summary["seconds_by_stage"]
    assert isinstance(stages, dict) and stages["vee"] == 0.0 and stages["rules"] > 0


def test_waiting_rows_exit_3_and_quarantine_lists_and_releases(data: Path) -> None:
    """No row accepted (issue 11: exit 3); the rows wait for their meters, and loading
    the meters releases them with exit 0."""
    code, summary = ingest(data, data.parent / "reads.csv")  # no meters yet
    assert code == 3 and summary["accepted"] == 0 and summary["quarantined"] == 6
    res = runner.invoke(app, ["quarantine", "list", "--data", str(data), "--counts"])
    assert json.loads(res.stdout) == {"unknown_meter": 6}
    res = runner.invoke(app, ["quarantine", "list", "--data", str(data), "--json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["reason"] for r in rows} == {"unknown_meter"} and len(rows) == 6
    assert {r["meter_id"] for r in rows} == {"M-2", "M-10", "W-1"}
    code, summary = ingest(data, data.parent / "meters.csv")
    assert code == 0 and summary["accepted"] == 5 and summary["duplicate"] == 1
    res = runner.invoke(app, ["quarantine", "list", "--data", str(data), "--counts"])
    assert json.loads(res.stdout) == {}


def test_unusable_input_and_bad_arguments_exit_non_zero(data: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("this,is,not\na,canonical,csv\n")
    res = runner.invoke(app, ["ingest", "--data", str(data), str(junk)])
    assert res.exit_code == 3
    assert res.stderr.strip().splitlines()[-1].startswith("headend: unusable input:")
    res = runner.invoke(app, ["ingest", "--data", str(data), str(tmp_path / "missing.csv")])
    assert res.exit_code == 2 and "no such file" in res.stderr
    res = runner.invoke(app, ["export", "reads", "--data", str(data), "--from", "yesterday"])
    assert res.exit_code == 2 and "--from" in res.stderr
    res = runner.invoke(app, ["export", "reads", "--data", str(data), "--reading-type", "x"])
    assert res.exit_code == 2 and "unknown reading type" in res.stderr


def test_export_events_sorted(data: Path, tmp_path: Path) -> None:
    ev = tmp_path / "events.csv"
    ev.write_text("meter_id,event_time,event_code\n"
                  "M-2,2026-01-01T00:20:00Z,3.26.0.216\n"
                  "M-10,2026-01-01T00:10:00Z,3.26.0.85\n"
                  "M-2,2026-01-01T00:10:00Z,3.26.0.85\n")
    code, _ = ingest(data, data.parent / "meters.csv", ev)
    assert code == 0
    res = runner.invoke(app, ["export", "events", "--data", str(data)])
    assert res.stdout.splitlines() == [
        "meter_id,event_time,event_code",
        "M-10,2026-01-01T00:10:00Z,3.26.0.85",
        "M-2,2026-01-01T00:10:00Z,3.26.0.85",
        "M-2,2026-01-01T00:20:00Z,3.26.0.216",
    ]


def test_console_script_help_for_every_verb() -> None:
    out = subprocess.run([sys.executable, "-m", "headend", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for verb in ("demo", "simulate", "ingest", "export", "quarantine", "compact"):
        assert verb in out


def test_vee_after_ingest_fills_gaps_and_export_versions(data: Path, tmp_path: Path) -> None:
    reads = tmp_path / "gap.csv"
    reads.write_text("meter_id,reading_type,interval_end,value,quality\n"
                     "M-2,kwh_del,2026-01-01T00:15:00Z,0.100,\n"
                     "M-2,kwh_del,2026-01-01T01:00:00Z,0.400,\n")  # 00:30 and 00:45 missing
    meters = tmp_path / "meters15.csv"  # two reads do not tell the interval: declare it
    meters.write_text(METERS.splitlines()[0] + ",interval_minutes\n"
                      "M-2,electric,rf,true,1,T1,F1,S1,15\n")
    code, _ = ingest(data, meters, reads, vee=True)
    assert code == 0
    out = runner.invoke(app, ["export", "reads", "--data", str(data)]).stdout.splitlines()
    rows = [line.split(",") for line in out[1:]]
    assert [r[2] for r in rows] == ["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z",
                                    "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z"]
    # the two missing intervals are estimated by linear interpolation (category 8)
    assert [r[3] for r in rows[1:3]] == ["0.200", "0.300"]
    assert all(any(q.split(".")[1] == "8" for q in r[4].split(";")) for r in rows[1:3])
    no_est = runner.invoke(app, ["export", "reads", "--data", str(data), "--no-estimated"])
    assert [line.split(",")[2] for line in no_est.stdout.splitlines()[1:]] == [
        "2026-01-01T00:15:00Z", "2026-01-01T01:00:00Z"]
    orig = runner.invoke(app, ["export", "reads", "--data", str(data), "--version", "original"])
    assert orig.stdout.splitlines()[1:] == ["M-2,kwh_del,2026-01-01T00:15:00Z,0.100,",
                                            "M-2,kwh_del,2026-01-01T01:00:00Z,0.400,"]
