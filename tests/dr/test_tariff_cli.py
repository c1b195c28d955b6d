"""``headend tariff load|list|show|bill``: the examples of docs/dr.md load as they are,
versions are kept durably, bad files exit 2 in one line naming the field, and bills
come from stored reads."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.dr.tariffs import TariffStore

_register()
runner = CliRunner()
DOC = Path(__file__).resolve().parents[2] / "docs" / "dr.md"


def _yaml_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def _load(data: Path, path: Path, *more: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["tariff", "load", "--data", str(data), str(path), *more])
    return res.exit_code, res.stdout, res.stderr


def test_every_yaml_example_of_the_docs_loads_as_it_is(data: Path, tmp_path: Path) -> None:
    blocks = _yaml_blocks()
    assert len(blocks) >= 3 and "kind: cpp" in blocks[0]
    for i, text in enumerate(blocks):
        f = tmp_path / f"example{i}.yaml"
        f.write_text(text)
        code, out, err = _load(data, f, "--json")
        assert code == 0, err
        assert json.loads(out)["status"] == "stored"
    kinds = {json.loads(ln)["kind"] for ln in runner.invoke(
        app, ["tariff", "list", "--data", str(data), "--json"]).stdout.splitlines()}
    assert kinds == {"cpp", "flat", "rtp"}
    res = runner.invoke(app, ["tariff", "show", "residential-cpp", "--data", str(data)])
    assert res.exit_code == 0 and res.stdout == blocks[0]  # as given


def test_versions_are_kept_and_must_come_later(data: Path, tmp_path: Path) -> None:
    v1 = _yaml_blocks()[1]
    f1 = tmp_path / "v1.yaml"
    f1.write_text(v1)
    assert _load(data, f1)[1].startswith("stored: tariff small-business-flat version 1")
    code, out, _ = _load(data, f1)
    assert code == 0 and out.startswith("unchanged:")
    changed = tmp_path / "changed.yaml"
    changed.write_text(v1.replace("price: 0.2016", "price: 0.21"))
    code, _, err = _load(data, changed)
    assert code == 2 and "stored with other content" in err and err.count("\n") == 1
    early = tmp_path / "early.yaml"
    early.write_text(v1.replace("version: 1", "version: 2"))
    code, _, err = _load(data, early)
    assert code == 2 and "effective_from: 2026-01-01 is not after" in err
    v2 = tmp_path / "v2.yaml"
    v2.write_text(v1.replace("version: 1", "version: 2").replace(
        "effective_from: 2026-01-01", "effective_from: 2026-04-01"))
    assert _load(data, v2)[0] == 0
    res = runner.invoke(app, ["tariff", "list", "--data", str(data)])
    assert [ln.split("\t")[:3] for ln in res.stdout.splitlines()] == [
        ["small-business-flat", "1", "2026-01-01"], ["small-business-flat", "2", "2026-04-01"]]
    assert [t.version for t in TariffStore(data).versions("small-business-flat")] == [1, 2]
    res = runner.invoke(app, ["tariff", "show", "small-business-flat", "--data", str(data),
                              "--version", "1", "--json"])
    assert json.loads(res.stdout)["price"] == 0.2016
    assert not list((data / "tariffs").rglob("*.tmp*"))  # no temp file left


@pytest.mark.parametrize(("text", "field"), [
    ("tariff_id: x\nversion: 1\neffective_from: 2026-01-01\nkind: flat\ntimezone: UTC\n",
     "price: a flat tariff needs it"),
    (("tariff_id: x\nversion: one\neffective_from: 2026-01-01\nkind: flat\ntimezone: UTC\n"
     "price: 1\n"), "version:"),
    (("tariff_id: x\nversion: 1\neffective_from: 2026-01-01\nkind: flat\ntimezone: Nowhere\n"
     "price: 1\n"), "timezone:"),
    ("- just\n- a list\n", "a tariff is a mapping"),
    ("key: [unclosed\n", "cannot read tariff file"),
])
def test_a_bad_file_exits_2_in_one_line_naming_the_field(data: Path, tmp_path: Path,
                                                         text: str, field: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code, out, err = _load(data, f)
    assert code == 2 and out == ""
    assert err.startswith("headend: ") and err.count("\n") == 1 and field in err, err
    assert not (data / "tariffs" / "x").exists()


def test_missing_file_and_unknown_tariff(data: Path, tmp_path: Path) -> None:
    code, _, err = _load(data, tmp_path / "nope.yaml")
    assert code == 2 and "cannot read tariff file" in err
    res = runner.invoke(app, ["tariff", "show", "nope", "--data", str(data)])
    assert res.exit_code == 2 and "no tariff 'nope'" in res.stderr
    res = runner.invoke(app, ["tariff", "bill", "--tariff", "nope", "--data", str(data)])
    assert res.exit_code == 2 and "no tariff 'nope'" in res.stderr
    res = runner.invoke(app, ["tariff", "list", "--data", str(data)])
    assert res.exit_code == 0 and res.stdout == "" and res.stderr.startswith("no tariffs")


METERS = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
          "substation_id,interval_minutes\n"
          "M-1,electric,rf,true,1,T1,F1,S1,15\nM-2,electric,rf,true,1,T1,F1,S1,15\n")


def test_bill_from_stored_reads(data: Path, tmp_path: Path) -> None:
    rows = ["meter_id,reading_type,interval_end,value,quality"]
    # M-1: 1 kWh per 15 min on 2026-01-05 from 00:15 to 24:00 UTC (a Monday), M-2: 2 kWh
    for q in range(1, 97):
        h, mi = divmod(q * 15, 60)
        end = (f"2026-01-05T{h:02d}:{mi:02d}:00Z" if h < 24 else "2026-01-06T00:00:00Z")
        rows += [f"M-1,kwh_del,{end},1,", f"M-2,kwh_del,{end},2,"]
    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "reads.csv").write_text("\n".join(rows) + "\n")
    res = runner.invoke(app, ["ingest", "--data", str(data), "--no-vee",
                              str(tmp_path / "meters.csv"), str(tmp_path / "reads.csv")])
    assert res.exit_code == 0, res.output
    f = tmp_path / "t.yaml"
    f.write_text("tariff_id: tou\nversion: 1\neffective_from: 2026-01-01\nkind: tou\n"
                 "timezone: UTC\ndemand_charge: 2\nfixed_charge: 5\nseasons:\n"
                 "  - name: y\n    months: [1,2,3,4,5,6,7,8,9,10,11,12]\n    periods:\n"
                 "      - {name: peak, day_types: [weekday], start: 17:00, end: 21:00, "
                 "price: 0.3}\n      - {name: off_peak, price: 0.1}\n")
    assert _load(data, f)[0] == 0
    res = runner.invoke(app, ["tariff", "bill", "--tariff", "tou", "--data", str(data)])
    assert res.exit_code == 0, res.output
    got = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["meter_id"], r["billing_period"], float(r["kwh"]), float(r["max_kw"]))
            for r in got] == [("M-1", "2026-01", 96.0, 4.0), ("M-2", "2026-01", 192.0, 8.0)]
    # 16 peak intervals at 0.3, 80 off-peak at 0.1
    assert float(got[0]["energy_cost"]) == pytest.approx(16 * 0.3 + 80 * 0.1)
    assert float(got[1]["total_cost"]) == pytest.approx(2 * (16 * 0.3 + 80 * 0.1) + 16 + 5)
    res = runner.invoke(app, ["tariff", "bill", "--tariff", "tou", "--data", str(data),
                              "--energy", "--from", "2026-01-05T17:00:00Z",
                              "--to", "2026-01-05T18:00:00Z"])
    assert res.stdout.splitlines() == [
        "meter_id,billing_period,period,tier,kwh,cost",
        "M-1,2026-01,off_peak,0,1,0.1", "M-1,2026-01,peak,0,3,0.8999999999999999",
        "M-2,2026-01,off_peak,0,2,0.2", "M-2,2026-01,peak,0,6,1.7999999999999998"]
