import json

import typer
from typer.testing import CliRunner

from headend.cli import vee as cli_vee
from headend.model import codes
from headend.store import DataDir
from headend.vee import VersionStore, current_reads

from ._data import T0, series
from .test_versions import meters


def app() -> typer.Typer:
    a = typer.Typer()
    cli_vee.register(a)
    return a


def test_vee_and_edit_verbs(tmp_path):
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900]))
        dd.store.append_reads(series(0, T0 + 900, 900, [100, 0, 300], missing=[1]))
    r = CliRunner().invoke(app(), ["vee", "--data", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["reads"], out["expected"], out["estimated"]) == (2, 3, 1)
    assert out["methods"] == {"interpolation": 1}
    r = CliRunner().invoke(app(), [
        "edit", "--data", str(tmp_path), "--meter", "M0", "--reading-type", "kwh_del",
        "--interval-end", "2024-01-01T00:30:00Z", "--value", "0.25", "--reason", "meter test",
        "--author", "carol"])
    assert r.exit_code == 0, r.output
    v = VersionStore(tmp_path).latest().to_pylist()
    edited = [x for x in v if x["method"] == "edit"]
    assert [(x["value"], x["author"], x["reason"]) for x in edited] == [(250, "carol", "meter test")]
    with DataDir.open(tmp_path) as dd:
        cur = current_reads(tmp_path, dd.store.scan_reads())
    assert cur.column("value").to_pylist() == [100, 250, 300]
    q = cur.column("quality").to_numpy()
    assert q[1] == 1 << codes.QUALITY_BY_NAME["edited"].bit


def test_edit_rejects_unknown_meter_and_off_grid_time(tmp_path):
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900]))
    base = ["edit", "--data", str(tmp_path), "--reading-type", "kwh_del", "--value", "1",
            "--reason", "x", "--author", "a"]
    r = CliRunner().invoke(app(), [*base, "--meter", "NOPE", "--interval-end", "2024-01-01T00:15:00Z"])
    assert r.exit_code == 2 and "unknown meter: NOPE" in r.stderr
    r = CliRunner().invoke(app(), [*base, "--meter", "M0", "--interval-end", "2024-01-01T00:10:00Z"])
    assert r.exit_code == 2 and "not on the meter's 900 s grid" in r.stderr
    assert VersionStore(tmp_path).latest().num_rows == 0


def test_vee_rejects_unknown_time_zone_and_bad_holiday(tmp_path):
    r = CliRunner().invoke(app(), ["vee", "--data", str(tmp_path), "--tz", "Mars/Olympus"])
    assert r.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in r.stderr
    r = CliRunner().invoke(app(), ["vee", "--data", str(tmp_path), "--holiday", "25/12"])
    assert r.exit_code == 2 and "--holiday" in r.stderr
